import numpy as np
import pytest
import torch
from PIL import Image

from cxr_workbench.checkpoints import save_generator
from cxr_workbench.cli import main, parse_seeds
from cxr_workbench.stylegan2 import Generator


def test_parse_seeds():
    assert parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(Exception, match="seeds='5-2'"):
        parse_seeds("5-2")


def test_sample_random_init_and_checkpoint(tmp_path, capsys):
    assert main(["sample", "--random-init", "--seeds", "0-3", "--cols", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert "RANDOM-INIT" in capsys.readouterr().out
    grid = np.asarray(Image.open(tmp_path / "a.png"))
    assert grid.shape == (128, 128) and grid.std() > 0
    torch.manual_seed(0)
    G = Generator(img_resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channel_max=16)
    save_generator(tmp_path / "g.pt", G)
    out = tmp_path / "b.png"
    assert main(["sample", "--checkpoint", str(tmp_path / "g.pt"), "--seeds", "0-2", "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (16, 16 * 8)
    # never overwrite silently
    assert main(["sample", "--checkpoint", str(tmp_path / "g.pt"), "--seeds", "0", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_sample_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"nope")
    assert main(["sample", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o.png")]) == 2
    assert "unknown checkpoint format" in capsys.readouterr().err
