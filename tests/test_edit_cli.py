import json

import numpy as np
import pytest
import torch
from conftest import tiny_generator
from PIL import Image

from cxr_workbench.imaging.masks import Box
from cxr_workbench.method.directions import save_direction
from cxr_workbench.model.checkpoints import save_generator
from cxr_workbench.ui.cli import main


@pytest.fixture
def ckpt(tmp_path):
    return save_generator(tmp_path / "g.pt", tiny_generator(z_dim=16, w_dim=16))


@pytest.mark.parametrize("method", ["lo", "lo+dir", "linear"])
def test_edit_writes_strip_latents_metrics(tmp_path, ckpt, method):
    out = tmp_path / method
    args = ["edit", "--checkpoint", str(ckpt), "--seed", "0-1", "--box", "heart", "--direction", "pc:1:-1",
            "--method", method, "--max-steps", "15", "--layers", "0-3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    strip = np.asarray(Image.open(out / "strip.png"))
    assert strip.shape[0] > 2 * 16 and strip.shape[2] == 3
    assert (strip == [40, 220, 80]).all(-1).any()  # the box is drawn
    lat = torch.load(out / "latents.pt", weights_only=True)
    assert lat["points"].shape == (2, 12, 6, 16) and lat["seeds"] == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_reference"]) == 2 and {"PV", "S", "M", "leakage"} <= set(metrics["per_reference"][0])
    assert metrics["direction"] == ("none" if method == "lo" else "PC 1 (sign -1)")
    assert main(args) == 2  # refuses to overwrite


def test_edit_with_box_json_and_direction_file(tmp_path, ckpt, capsys, monkeypatch):
    Box(2, 2, 10, 10, 16).save(tmp_path / "box.json")
    reads = []
    load = Box.load.__func__
    monkeypatch.setattr(Box, "load", classmethod(lambda cls, path: reads.append(path) or load(cls, path)))
    u = torch.zeros(16)
    u[0] = 1
    save_direction(tmp_path / "u.pt", u, source="hand-made")
    args = ["edit", "--checkpoint", str(ckpt), "--box", str(tmp_path / "box.json"), "--direction",
            str(tmp_path / "u.pt"), "--method", "linear", "--out", str(tmp_path / "o")]
    assert main(args) == 2  # a custom box must say which disease it shows
    assert "--disease" in capsys.readouterr().err and not (tmp_path / "o" / "strip.png").exists()
    reads.clear()
    assert main(args + ["--disease", "opacity"]) == 0
    assert len(reads) == 1  # the box is read and checked once
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["disease"] == "opacity"
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["direction"] == "hand-made"
    assert main(["edit", "--checkpoint", str(ckpt), "--box", "kidney", "--out", str(tmp_path / "p")]) == 2
    assert "box='kidney'" in capsys.readouterr().err
    assert main(["edit", "--checkpoint", str(ckpt), "--direction", "pc:x", "--out", str(tmp_path / "q")]) == 2
    assert "direction='pc:x'" in capsys.readouterr().err
    # a box file is read before the generator is loaded: a broken file is named without loading one
    (tmp_path / "bad.json").write_text('{"x0": 1}')
    monkeypatch.setattr("cxr_workbench.studies.edit.load_generator", lambda *a, **k: pytest.fail("loaded"))
    assert main(args[:4] + [str(tmp_path / "bad.json"), "--disease", "opacity", "--out", str(tmp_path / "r")]) == 2
    assert "bad.json: lacks" in capsys.readouterr().err


def test_edit_with_the_local_direction_caches_its_search(tmp_path, ckpt, monkeypatch):
    args = ["edit", "--checkpoint", str(ckpt), "--seed", "0", "--box", "heart", "--direction", "local",
            "--max-steps", "5", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    desc = json.loads((tmp_path / "a" / "metrics.json").read_text())["direction"]
    assert desc.startswith("local: a combination of the first 16 PCs")  # w_dim 16: all of them
    monkeypatch.setattr("cxr_workbench.method.pca.rank_pcs_for_box",
                        lambda *a, **k: pytest.fail("searched again"))
    assert main(args + ["--out", str(tmp_path / "b")]) == 0  # the cached search (CXR_WORKBENCH_CACHE)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["direction"] == desc
