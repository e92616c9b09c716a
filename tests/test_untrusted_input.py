"""Files from elsewhere: sizes are checked before anything is decoded, nonsense is refused with
one line naming the file, and nothing is taken for what it is not."""
import dataclasses
import errno
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import tiny_generator
from PIL import Image

from cxr_workbench.distributed import connect
from cxr_workbench.imaging import datasets
from cxr_workbench.imaging.datasets import read_image, save_dicom
from cxr_workbench.io import atomic_write
from cxr_workbench.method import directions
from cxr_workbench.method.directions import resolve_direction
from cxr_workbench.model.latents import check_latents
from cxr_workbench.studies.augment import read_set_images
from cxr_workbench.studies.classify import load_sets


def png(path, width, height, depth=8, colour=0, data=b""):
    """A PNG written chunk by chunk: any declared size, with whatever pixel data is given."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    head = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(data))
                     + chunk(b"IEND", b""))
    return path


def test_declared_sizes_are_refused_before_decoding(tmp_path):
    with pytest.raises(ValueError, match=r"huge.png: declares 9400x9400 pixels; expected at most"):
        read_image(png(tmp_path / "huge.png", 9400, 9400))  # 100 bytes on disk
    with pytest.raises(ValueError, match=r"flat.png: 40000x8 pixels is not a film's shape"):
        read_image(png(tmp_path / "flat.png", 40000, 8))
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "small.png")
    assert datasets.MAX_PIXELS >= 4300 * 4300


def test_blank_and_16_bit_colour_films_are_refused(tmp_path):
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="grey.png: displays as a blank film"):
        read_image(tmp_path / "grey.png")
    rows = b"".join(b"\x00" + bytes(range(192)) for _ in range(32))  # 32 x 32 RGB at 16 bits
    with pytest.raises(ValueError, match="rgb16.png: a 16-bit colour PNG"):
        read_image(png(tmp_path / "rgb16.png", 32, 32, depth=16, colour=2, data=rows))


@pytest.mark.parametrize("change, message", [
    (dict(RescaleSlope=0, RescaleIntercept=0), "displays as a blank film"),
    (dict(RescaleSlope=1e308, RescaleIntercept=0), "gives non-finite values"),
    (dict(WindowCenter=2000, WindowWidth=1e300), "displays as a blank film"),
])
def test_dicom_that_would_show_nothing_is_refused(tmp_path, change, message):
    import pydicom
    save_dicom(tmp_path / "film.dcm", np.random.default_rng(0).random((64, 64)))
    ds = pydicom.dcmread(tmp_path / "film.dcm")
    for k, v in change.items():
        setattr(ds, k, v)
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(ValueError, match=f"bad.dcm: .*{message}"):
        read_image(tmp_path / "bad.dcm", voi="file")


def test_a_deflated_dicom_is_inflated_only_up_to_the_cap(tmp_path, monkeypatch):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    save_dicom(tmp_path / "film.dcm", np.random.default_rng(0).random((256, 256)))
    ds = pydicom.dcmread(tmp_path / "film.dcm")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert read_image(tmp_path / "deflated.dcm").shape == (256, 256)  # a small one reads
    monkeypatch.setattr(datasets, "MAX_PIXELS", 32 * 32)  # as if this one were a bomb
    with pytest.raises(ValueError, match="deflated.dcm: deflated DICOM inflates past"):
        read_image(tmp_path / "deflated.dcm")


def test_direction_files_declaring_too_much_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(directions, "MAX_DIRECTION_VALUES", 100)
    torch.save({"u": torch.zeros(100_000)}, tmp_path / "big.pt")
    with pytest.raises(ValueError, match=r"direction file .*big.pt unpacks to"):
        resolve_direction(str(tmp_path / "big.pt"), None, 8)
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10 ** 12,)
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(ValueError, match="huge.npy"):
        resolve_direction(str(tmp_path / "huge.npy"), None, 8)


@pytest.mark.parametrize("ws, message", [
    (torch.full((1, 6, 8), 1e30), "values up to 1e\\+30"),
    (torch.full((1, 6, 8), float("nan")), "expected finite"),
    (torch.ones(1, 6, 8, dtype=torch.bool), "torch.bool"),
    (torch.ones(1, 6, 8, dtype=torch.complex64), "complex64"),
    (torch.zeros(0, 6, 8), "expected \\[R, 6, 8\\] with no empty dimension"),
    (torch.ones(1, 6, 8).to_sparse(), "a sparse_coo tensor"),
    (torch.ones(1, 6, 8, device="meta"), "a meta tensor"),
])
def test_latents_that_are_not_latents_are_refused(ws, message):
    G = tiny_generator()
    assert (G.num_ws, G.w_dim) == (6, 8)
    with pytest.raises(ValueError, match=f"my.pt: .*{message}"):
        check_latents(ws, G, "my.pt")


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # deprecated in torch, still loadable from files
def test_quantized_latents_are_refused_by_name():
    ws = torch.quantize_per_tensor(torch.ones(1, 6, 8), 0.1, 0, torch.qint8)
    with pytest.raises(ValueError, match="my.pt: a torch.qint8 tensor"):
        check_latents(ws, tiny_generator(), "my.pt")


def test_sets_8_bit_images_duplicates_and_broken_descriptions(tmp_path):
    s = tmp_path / "s"
    (s / "images").mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(s / "images" / "0000001_012.png")
    import pandas as pd
    manifest = pd.DataFrame({"file": ["images/0000001_012.png"]})
    with pytest.raises(ValueError, match="0000001_012.png is a L image; expected the 16-bit"):
        read_set_images(s, manifest)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "set.json").write_text(json.dumps(dict(disease="opacity", config=dict(sigma=0.3))))
    with pytest.raises(ValueError, match="are both sets of opacity at sigma 0.3"):
        load_sets([tmp_path / "a", tmp_path / "b"], [0.3], diseases=("opacity",))
    (tmp_path / "a" / "set.json").write_text("[]")
    with pytest.raises(ValueError, match="a/set.json: not a set description"):
        load_sets([tmp_path / "a"], [0.3], diseases=("opacity",))


@pytest.mark.parametrize("address", ["tls://127.0.0.1:8786", "ucx://127.0.0.1:8786"])
def test_scheduler_protocols_we_cannot_use_are_named(address):
    with pytest.raises(ValueError, match=f"scheduler '{address}': the .* protocol is not supported"):
        connect(address)


def test_a_full_disk_names_the_file(tmp_path):
    def no_space(f):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="cannot write .*snapshot.pt: No space left on device"):
        atomic_write(tmp_path / "snapshot.pt", no_space)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_training_leaves_no_half_snapshot(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as a RuntimeError: it is an OSError naming the file, and
    the snapshot's sample grid, state and generator are written together or not at all."""
    from cxr_workbench.model import train as training
    cfg = training.TrainConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=1, channel_base=256,
                               channel_max=32, batch=8, dataset_size=64, snapshot_kimg=0.008, kimg=0.016)
    training.train(cfg, tmp_path / "run", progress=False)  # two snapshots
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    real = torch.save

    def full_disk(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("kind") == "training":  # the snapshot, not the generator
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/3: file write failed")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*snapshot.pt: .*file write failed"):
        training.train(dataclasses.replace(cfg, kimg=0.024), tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # no third sample grid


def test_an_empty_set_or_one_of_another_size_is_named(tmp_path):
    import pandas as pd

    from cxr_workbench.studies.augment import MANIFEST_COLUMNS
    s = tmp_path / "s"
    (s / "images").mkdir(parents=True)
    pd.DataFrame(columns=list(MANIFEST_COLUMNS)).to_csv(s / "manifest.csv", index=False)
    with pytest.raises(ValueError, match="s: the set's manifest lists no sample"):
        read_set_images(s)
    Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).save(s / "images" / "0000001_012.png")
    row = {c: 0 for c in MANIFEST_COLUMNS}
    row.update(file="images/0000001_012.png", disease="opacity")
    pd.DataFrame([row]).to_csv(s / "manifest.csv", index=False)
    (s / "set.json").write_text(json.dumps(dict(disease="opacity", config=dict(sigma=0.3))))
    with pytest.raises(ValueError, match="s: 32 px images; the protocol's phantoms are 64 px"):
        load_sets([s], [0.3], diseases=("opacity",))
    # one sample of another size is named, with the size expected
    Image.fromarray(np.zeros((16, 16), np.uint16)).save(s / "images" / "0000002_012.png")
    pd.DataFrame([row, dict(row, file="images/0000002_012.png", reference=2)]).to_csv(s / "manifest.csv", index=False)
    with pytest.raises(ValueError, match=r"0000002_012.png is 16x16 px; expected 32x32 px as the set's first sample"):
        read_set_images(s)
    # a manifest field that is not what was written is named by row and column
    pd.DataFrame([row, dict(row, reference="two")]).to_csv(s / "manifest.csv", index=False)
    with pytest.raises(ValueError, match=r"manifest.csv, row 3, column 'reference': 'two'; expected a non-negative"):
        read_set_images(s)


def test_an_edited_results_table_is_named_by_row_and_column(tmp_path):
    import pandas as pd

    from cxr_workbench.studies.classify import read_results
    good = dict(column="N vs C", n_disease=20, row="ours", sigma=1.0, seed=0, test_auroc=0.8)
    path = tmp_path / "results.csv"
    pd.DataFrame([good, dict(good, row="real", sigma=None)]).to_csv(path, index=False)
    assert [r["sigma"] for r in read_results(path)] == [1.0, None]
    for change, message in ((dict(column="x"), r"row 3, column 'column': 'x'"),
                            (dict(seed="1b"), r"row 3, column 'seed': '1b'"),
                            (dict(sigma=None), r"row 3, column 'sigma': empty")):
        pd.DataFrame([good, dict(good, **change)]).to_csv(path, index=False)
        with pytest.raises(ValueError, match=f"results.csv, {message}"):
            read_results(path)
    pd.DataFrame([dict(x=1)]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"results.csv lacks the columns \['column'"):
        read_results(path)


def test_a_set_too_small_for_the_protocol_is_refused_before_the_first_run(tmp_path):
    import torch as th

    from cxr_workbench.studies.classify import CPU_SCALE, run_protocol
    cfg = dataclasses.replace(CPU_SCALE, sigmas=(1.0,), seeds=(0,), n_disease=(20,))
    aug = {(d, 1.0): th.zeros(cfg.n_aug - 1, 1, 64, 64) for d in ("cardiomegaly", "opacity")}
    with pytest.raises(ValueError, match=f"has {cfg.n_aug - 1} samples; the run .* needs {cfg.n_aug}"):
        run_protocol(cfg, aug, tmp_path / "cls", data={}, progress=False)
    assert not list((tmp_path / "cls" / "predictions").iterdir())


def test_a_dicom_window_of_zero_width_names_the_file(tmp_path):
    import pydicom
    save_dicom(tmp_path / "film.dcm", np.random.default_rng(0).random((64, 64)))
    ds = pydicom.dcmread(tmp_path / "film.dcm")
    ds.WindowCenter, ds.WindowWidth = 2000, 0
    ds.save_as(tmp_path / "zero.dcm")
    with pytest.raises(ValueError, match="zero.dcm: the file's window width is 0.0"):
        read_image(tmp_path / "zero.dcm", voi="file")
    # auto does without the broken window, and says so
    with pytest.warns(UserWarning, match="zero.dcm: the file's window width is 0"):
        shown = read_image(tmp_path / "zero.dcm", voi="auto")
    assert shown.min() == 0 and shown.max() == 1


def test_a_server_answering_garbage_is_not_taken_for_a_scheduler():
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def answer():  # a bounded number of connections, each answered with nonsense, then it stops
        server.settimeout(10)
        for _ in range(4):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nnot dask\n" * 4)
            conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ValueError, match=f"scheduler 'tcp://127.0.0.1:{port}' is unreachable"):
            connect(f"tcp://127.0.0.1:{port}", timeout=3.0)
    finally:
        server.close()


def test_float_images_are_read_for_what_they_are(tmp_path):
    """A 32-bit float TIFF, even one named .png: its data scaled by their range, not cast to 8 bits."""
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))
    for name, data, expected in (("unit.png", ramp, ramp), ("counts.png", ramp * 4095, ramp),
                                 ("signed.png", ramp * 2 - 1, ramp)):
        Image.fromarray(data, mode="F").save(tmp_path / name, format="TIFF")
        np.testing.assert_allclose(read_image(tmp_path / name), expected, atol=1e-6)
    broken = ramp.copy()
    broken[3, 5], broken[7, 9] = np.nan, np.inf
    Image.fromarray(broken, mode="F").save(tmp_path / "nan.png", format="TIFF")
    with pytest.raises(ValueError, match=r"nan.png: 2 pixels are NaN or infinite"):
        read_image(tmp_path / "nan.png")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).convert("LAB").save(tmp_path / "lab.png", format="TIFF")
    with pytest.raises(ValueError, match=r"lab.png: a TIFF image of mode 'LAB'"):
        read_image(tmp_path / "lab.png")
