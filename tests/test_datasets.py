import numpy as np
import pytest
import torch
from PIL import Image

from cxr_workbench.imaging.datasets import CheXpertDataset, ImageFolderDataset, read_dicom, read_image


def write_dicom(path, pixels, photometric="MONOCHROME2", syntax=None, window=None):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "DX", photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    data = pixels.astype(np.uint16).tobytes()
    if syntax is not None:  # compressed syntaxes carry encapsulated fragments (here: not a real codestream)
        from pydicom.encaps import encapsulate
        data = encapsulate([data])
    ds.PixelData = data
    ds.save_as(str(path), enforce_file_format=True)


def test_read_png_8_and_16_bit_and_jpeg(tmp_path):
    ramp8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    Image.fromarray(ramp8).save(tmp_path / "a.png")
    ramp16 = (ramp8.astype(np.uint16) * 257)
    Image.fromarray(ramp16).save(tmp_path / "b.png")
    Image.fromarray(np.stack([ramp8] * 3, -1)).save(tmp_path / "c.jpg", quality=95)
    a, b, c = (read_image(tmp_path / n) for n in ("a.png", "b.png", "c.jpg"))
    np.testing.assert_allclose(a, ramp8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(b, ramp8 / 255.0, atol=1e-4)
    np.testing.assert_allclose(c, ramp8 / 255.0, atol=0.03)


def test_dicom_monochrome_window_and_bad_syntax(tmp_path):
    px = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (64, 1))
    write_dicom(tmp_path / "m2.dcm", px)
    write_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1")
    write_dicom(tmp_path / "win.dcm", px, window=(2048, 2048))
    m2, m1 = read_dicom(tmp_path / "m2.dcm"), read_dicom(tmp_path / "m1.dcm")
    assert m2[0, 0] == 0 and m2[0, -1] == 1
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)
    win = read_dicom(tmp_path / "win.dcm")  # window [1024, 3072]
    assert win[0, 10] == 0 and win[0, 60] == 1 and 0 < win[0, 32] < 1
    from pydicom.uid import JPEG2000
    write_dicom(tmp_path / "j2k.dcm", px, syntax=JPEG2000)
    with pytest.raises(ValueError, match="transfer syntax"):
        read_dicom(tmp_path / "j2k.dcm")


def test_image_folder_bad_files(tmp_path):
    film = np.tile(np.arange(100, 140, dtype=np.uint8), (40, 1))  # a film shows something: a ramp
    Image.fromarray(film).save(tmp_path / "ok.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="broken.png"):
        ImageFolderDataset(tmp_path, 32)
    ds = ImageFolderDataset(tmp_path, 32, skip_bad=True)
    assert len(ds) == 1 and sorted(p.name for p, _ in ds.skipped) == ["broken.png", "notes.txt"]
    item = ds[0]
    assert item["img"].shape == (1, 32, 32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(film / 255.0).float()[None, None], size=(32, 32),
                                               mode="area")[0] * 2 - 1
    torch.testing.assert_close(item["img"], expected)


def test_chexpert_csv(tmp_path):
    (tmp_path / "p").mkdir()
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint8), (16, 1))).save(tmp_path / "p" / "1.png")
    rows = ["Path,Sex,Frontal/Lateral,Cardiomegaly,Lung Opacity",
            "p/1.png,F,Frontal,1.0,-1.0", "p/1.png,M,Lateral,1.0,1.0", "p/1.png,M,Frontal,,0.0"]
    (tmp_path / "train.csv").write_text("\n".join(rows))
    zeros = CheXpertDataset(tmp_path / "train.csv", resolution=16)
    assert len(zeros) == 2
    torch.testing.assert_close(zeros.targets, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    ones = CheXpertDataset(tmp_path / "train.csv", uncertainty="ones", resolution=16)
    assert ones.targets[0, 1] == 1.0
    ignore = CheXpertDataset(tmp_path / "train.csv", uncertainty="ignore", resolution=16)
    assert torch.isnan(ignore.targets[0, 1])
    assert ones[0]["img"].shape == (1, 16, 16)
    (tmp_path / "bad.csv").write_text("Path,Cardiomegaly\np/1.png,1\n")
    with pytest.raises(ValueError, match=r"missing columns \['Frontal/Lateral', 'Lung Opacity'\]"):
        CheXpertDataset(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="uncertainty='maybe'"):
        CheXpertDataset(tmp_path / "train.csv", uncertainty="maybe")


def test_rgba_is_composited_on_black_and_tiny_images_are_refused(tmp_path):
    from PIL import Image
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, :8, 3] = 255  # left half opaque white, right half transparent white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img[:, :8].min() == 1.0 and img[:, 8:].max() == 0.0
    Image.fromarray(np.zeros((7, 40), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match="tiny.png: image is 40x7 pixels"):
        read_image(tmp_path / "tiny.png")


def test_films_keep_their_proportions():
    from cxr_workbench.imaging.datasets import to_model_range
    h, w = 664, 1152
    yy, xx = np.mgrid[:h, :w]
    film = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < 200 ** 2).astype(np.float32)  # a round disc
    for fit in ("crop", "letterbox"):
        img = to_model_range(film, 64, fit)[0].numpy() > 0
        rows, cols = img.any(1).sum(), img.any(0).sum()
        assert abs(rows - cols) <= 1, (fit, rows, cols)  # still round, never squeezed
    box = to_model_range(np.ones((h, w), np.float32), 64, "letterbox")[0].numpy()
    assert box[0].max() == -1 and box[32].min() == 1  # black bars above and below, film in the middle
    with pytest.raises(ValueError, match="fit='stretch'"):
        to_model_range(film, 64, "stretch")


def test_dicom_modality_lut_wide_windows_and_not_dicom(tmp_path):
    rng = np.random.default_rng(0)
    px = (1000 + 200 * rng.random((64, 64))).astype(np.uint16)  # data spans 1000..1200
    write_dicom(tmp_path / "wide.dcm", px, window=(2048, 4096))  # a window 20x wider than the data
    washed = read_dicom(tmp_path / "wide.dcm", voi="file")
    with pytest.warns(UserWarning, match="wide.dcm: the file's window .4096 wide. would wash the film out"):
        auto = read_dicom(tmp_path / "wide.dcm")
    assert np.ptp(washed) < 0.06 and np.ptp(auto) > 0.9  # auto falls back to robust percentiles
    (tmp_path / "fake.dcm").write_text("not dicom at all")
    with pytest.raises(ValueError, match="fake.dcm: not a DICOM file"):
        read_dicom(tmp_path / "fake.dcm")
    with pytest.raises(ValueError, match="voi='magic'"):
        read_dicom(tmp_path / "wide.dcm", voi="magic")


def test_twelve_bit_png_is_not_black(tmp_path):
    from cxr_workbench.imaging.datasets import bit_depth
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "12bit.png")
    img = read_image(tmp_path / "12bit.png")
    assert img.max() == 1.0 and bit_depth(ramp) == 12
    assert bit_depth(np.array([65535])) == 16 and bit_depth(np.array([200])) == 8


def test_non_images_in_a_folder_are_counted_or_named(tmp_path):
    Image.fromarray(np.tile(np.arange(60, dtype=np.uint8), (40, 1))).save(tmp_path / "film.png")
    (tmp_path / "train.csv").write_text("Path,Frontal/Lateral\n")
    (tmp_path / "odd.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(ValueError, match="odd.dcm"):
        ImageFolderDataset(tmp_path, 32)
    ds = ImageFolderDataset(tmp_path, 32, skip_bad=True, fit="letterbox")
    assert len(ds) == 1 and len(ds.skipped) == 2 and ds[0]["img"].shape == (1, 32, 32)
