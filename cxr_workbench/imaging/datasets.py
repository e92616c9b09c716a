"""Datasets. Each item is a dict: ``img`` [1, R, R] float32 in [-1, 1], labels, ``index``.

* ``TruthDataset``: seeded films with exact ground truth (CTR, opacity burden) from a source
  (``imaging.sources``: procedural phantoms or DRRs of a chest CT).
* ``ImageFolderDataset``: PNG/JPEG (8- or 16-bit) and DICOM files in a folder (``read_image``).
* ``CheXpertDataset``: a CheXpert-style CSV (``Path``, ``Frontal/Lateral``, label columns).
"""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cxr_workbench.imaging import sources
from cxr_workbench.imaging.diseases import DISEASES, KINDS, reads_as
from cxr_workbench.io import reason

__all__ = ["LABELS", "FITS", "MAX_PIXELS", "MIN_IMAGE_SIDE", "MAX_ASPECT", "check_film_size", "check_not_blank",
           "to_model_range", "KIND_MIX", "TruthDataset", "IMAGE_SUFFIXES", "VOI_MODES", "WASHED_OUT", "read_dicom",
           "save_dicom", "bit_depth", "read_image", "READABLE_MODES", "check_film_paths", "load_films",
           "ImageFolderDataset", "UNCERTAINTY_POLICIES", "CheXpertDataset"]

LABELS = ("cardiomegaly", "opacity")


FITS = ("crop", "letterbox")  # how a non-square film becomes square; it is never stretched
# The largest film read: 64 Mpixel, 3.5x a 4300 x 4300 detector. Declared sizes are checked against
# it before anything is decoded (pixels, frames, the square a letterbox makes), so a small file
# that declares a huge image cannot take the machine's memory.
MAX_PIXELS = 2 ** 26
MIN_IMAGE_SIDE = 8  # pixels; anything smaller is not a radiograph
MAX_ASPECT = 4.0  # a film wider or taller than this is not a radiograph


def check_film_size(path, height: int, width: int, frames: int = 1) -> None:
    """Refuse a declared image size before decoding: too many pixels, too flat, or several frames."""
    if frames != 1:
        raise ValueError(f"{path}: {frames} frames; expected one radiograph")
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(f"{path}: image is {width}x{height} pixels; expected at least {MIN_IMAGE_SIDE} each way")
    if height * width > MAX_PIXELS:
        raise ValueError(f"{path}: declares {width}x{height} pixels; expected at most {MAX_PIXELS:,} pixels")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise ValueError(f"{path}: {width}x{height} pixels is not a film's shape; expected sides within "
                         f"{MAX_ASPECT:g}x of each other")


def check_not_blank(path, img01: np.ndarray) -> np.ndarray:
    """Refuse a film that shows nothing: non-finite values, or one grey level everywhere."""
    if not np.isfinite(img01).all():
        raise ValueError(f"{path}: its pixel values are not finite after the display transform")
    if float(img01.max() - img01.min()) < 1 / 1024:
        raise ValueError(f"{path}: displays as a blank film (every pixel {float(img01.mean()):.3f}); check its "
                         "rescale and window")
    return img01


def to_model_range(img01: np.ndarray, resolution: int, fit: str = "crop") -> torch.Tensor:
    """[H, W] in [0, 1] -> [1, R, R] in [-1, 1]: made square by ``fit`` ("crop": the centred square;
    "letterbox": padded with black), then area-resampled, so the anatomy keeps its proportions."""
    if fit not in FITS:
        raise ValueError(f"fit={fit!r}; expected one of {FITS}")
    h, w = img01.shape
    if fit == "crop":
        side = min(h, w)
        img01 = img01[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    elif h != w:
        side = max(h, w)
        square = np.zeros((side, side), np.float32)
        square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = img01
        img01 = square
    t = torch.from_numpy(np.ascontiguousarray(img01, dtype=np.float32))[None, None]
    if t.shape[-1] != resolution or t.shape[-2] != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="area" if t.shape[-1] > resolution else "bilinear",
                          align_corners=None if t.shape[-1] > resolution else False)
    return (t[0] * 2 - 1).clamp(-1, 1)


# Shares of normal, cardiomegaly and opacity films: the quality sets' mix, and training's by default.
KIND_MIX = (0.5, 0.25, 0.25)


class TruthDataset(Dataset):
    """``n`` films of ``source`` (``imaging.sources``) rendered once (reproducible for a seed), kinds
    mixed by ``weights``; ``ct`` a CT folder for DRRs (the shipped CT by default).

    Labels per item: ``kind`` (normal / cardiomegaly / opacity), ``ctr``, ``opacity_burden``,
    and binary ``cardiomegaly`` / ``opacity``.
    """

    labels = LABELS

    def __init__(self, n: int, resolution: int = 64, seed: int = 0,
                 weights: tuple[float, float, float] = KIND_MIX, progress: bool = False,
                 source: str = "phantom", ct=None):
        sources.check_source(source, ct)
        if n <= 0:
            raise ValueError(f"n={n}; expected a positive number of films")
        self.resolution, self.source = resolution, source
        rng = np.random.default_rng(seed)
        kinds = rng.choice(len(KINDS), size=n, p=np.asarray(weights) / np.sum(weights))
        params = [sources.sample_params(source, rng, KINDS[k]) for k in kinds]
        # Each chunk is copied into arrays made once: a list of chunks kept to the end left the heap
        # fragmented by the renderer's temporaries (100,000 DRRs held 17 GB for 3 of images).
        self.images = np.empty((n, resolution, resolution), np.float32)
        self.ctr, self.burden = np.empty(n, np.float32), np.empty(n, np.float32)
        for i in tqdm(range(0, n, self.CHUNK), disable=not progress, desc=f"{source} films"):
            imgs, truth = sources.render_batch(source, params[i:i + self.CHUNK], resolution, ct=ct)
            self.images[i:i + len(imgs)], self.ctr[i:i + len(imgs)] = imgs, truth["ctr"]
            self.burden[i:i + len(imgs)] = truth["opacity_burden"]
        # The kind follows the rendered truth: an opacity drawn where no lung is visible is no opacity.
        truth = dict(ctr=self.ctr, opacity_burden=self.burden)
        self.kind = np.where(reads_as(truth, "opacity"), "opacity",
                             np.where(reads_as(truth, "cardiomegaly"), "cardiomegaly", "normal"))

    CHUNK = 64  # films per render_batch call: large enough to batch, small enough to stay in cache

    def __len__(self):
        return len(self.images)

    def images_tensor(self) -> torch.Tensor:
        """All images, [N, 1, R, R] in [-1, 1]."""
        return torch.from_numpy(self.images)[:, None] * 2 - 1

    def __getitem__(self, i):
        return dict(img=torch.from_numpy(self.images[i])[None] * 2 - 1, index=i, kind=str(self.kind[i]),
                    ctr=float(self.ctr[i]), opacity_burden=float(self.burden[i]),
                    **{d: float(reads_as(dict(ctr=self.ctr[i], opacity_burden=self.burden[i]), d)) for d in DISEASES})


# --------------------------------------------------------------------------------------------
# Real images: files, DICOM, CheXpert-style CSV
# --------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


VOI_MODES = ("auto", "file", "percentiles")
WASHED_OUT = 4.0  # a file window this many times wider than the data's 1-99 % range washes the film out


def read_dicom(path, window: tuple[float, float] | None = None, voi: str = "auto") -> np.ndarray:
    """A DICOM radiograph as [H, W] float in [0, 1], display-ready.

    The Modality LUT (or rescale slope and intercept) is applied first, then the display window:
    ``window`` (centre, width) when given; else by ``voi``: "file" (the file's VOI LUT or first
    WindowCenter/WindowWidth, else the full range), "percentiles" (the 0.5-99.5 % range of the
    data), or "auto" (the file's, unless it is more than WASHED_OUT times wider than the data, then
    percentiles). MONOCHROME1 is inverted so bone is bright.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    if voi not in VOI_MODES:
        raise ValueError(f"voi={voi!r}; expected one of {VOI_MODES}")
    _check_deflated_size(path)
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # noqa: BLE001 - a damaged file raises whatever pydicom's parser meets
        raise ValueError(f"{path}: not a DICOM file ({reason(e, 80)})") from None
    try:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        check_film_size(path, int(ds.Rows), int(ds.Columns), frames)
    except AttributeError:
        raise ValueError(f"{path}: DICOM without Rows and Columns; expected a radiograph") from None
    except Exception as e:  # noqa: BLE001 - elements are parsed when first read, by the same parser
        raise ValueError(f"{path}: DICOM header cannot be read ({reason(e, 80)})") from None
    try:
        raw = ds.pixel_array
    except Exception as e:  # no decoder for this transfer syntax, or no pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise ValueError(f"{path}: cannot decode DICOM pixel data with transfer syntax {name!r} ({e}); "
                         "expected uncompressed (little endian) or a syntax with an installed decoder") from None
    if raw.ndim != 2:
        raise ValueError(f"{path}: DICOM pixel array has shape {raw.shape}; expected one grayscale frame")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an absurd slope overflows: said below, in one line
        arr = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: the rescale (slope {getattr(ds, 'RescaleSlope', 1)}, intercept "
                         f"{getattr(ds, 'RescaleIntercept', 0)}) gives non-finite values")
    lo_p, hi_p = np.percentile(arr, [0.5, 99.5])
    if window is not None:
        centre, width = window
        if not width > 0:
            raise ValueError(f"{path}: window width={width}; expected > 0")
        out = (arr - (centre - width / 2)) / width
    elif voi != "percentiles" and ("VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
                                   and (voi == "file" or _window_width(ds) > 0)):  # auto skips a broken window
        if "VOILUTSequence" not in ds and not _window_width(ds) > 0:
            raise ValueError(f"{path}: the file's window width is {_window_width(ds)}; expected a positive number "
                             "(or --voi percentiles)")
        shown = np.asarray(apply_voi_lut(arr, ds), dtype=np.float64)
        width = _window_width(ds) if "WindowWidth" in ds else float(np.ptp(shown))
        p1, p99 = np.percentile(arr, [1, 99])
        if voi == "auto" and width > WASHED_OUT * max(p99 - p1, 1e-9):
            warnings.warn(f"{path}: the file's window ({width:g} wide) would wash the film out; shown by the "
                          "data's 0.5-99.5 % range instead (--voi file keeps it)", stacklevel=2)
            out = (arr - lo_p) / max(hi_p - lo_p, 1e-12)
        else:
            out = (shown - shown.min()) / max(float(np.ptp(shown)), 1e-12) if "VOILUTSequence" in ds else \
                (arr - (_first(ds.WindowCenter) - width / 2)) / width
    elif voi == "percentiles":
        out = (arr - lo_p) / max(hi_p - lo_p, 1e-12)
    else:
        if "WindowWidth" in ds:  # auto skips a broken window, and says so
            warnings.warn(f"{path}: the file's window width is {ds.WindowWidth}; expected a positive number, so the "
                          "film is shown by its full range (--voi percentiles to choose otherwise)", stacklevel=2)
        out = (arr - arr.min()) / max(float(np.ptp(arr)), 1e-12)
    out = check_not_blank(path, np.clip(out, 0, 1))
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        out = 1 - out
    return out.astype(np.float32)


def _first(value) -> float:
    """A DICOM value that may be multi-valued (several windows): its first, as a float."""
    import pydicom
    return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)


def _window_width(ds) -> float:
    """The first WindowWidth of a dataset, NaN when absent or not a number."""
    try:
        width = _first(ds.WindowWidth)
    except (AttributeError, TypeError, ValueError, IndexError):
        return math.nan
    return width if math.isfinite(width) else math.nan


def _check_deflated_size(path) -> None:
    """A deflated DICOM is inflated whole by pydicom: inflate it here first, stopping at a cap."""
    import zlib

    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    try:
        meta = pydicom.filereader.read_file_meta_info(str(path))
    except Exception:  # noqa: BLE001 - any file meta pydicom cannot read: dcmread says what is wrong
        return
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    start = 132 + 12 + int(meta.get("FileMetaInformationGroupLength", 0))  # preamble, group length, group
    cap, inflate, size = 4 * MAX_PIXELS + 2 ** 16, zlib.decompressobj(-zlib.MAX_WBITS), 0  # pixels + header
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(2 ** 16):
            try:
                size += len(inflate.decompress(chunk, cap + 1 - size))
            except zlib.error as e:
                raise ValueError(f"{path}: deflated DICOM data is corrupt ({e})") from None
            if size > cap or inflate.unconsumed_tail:
                raise ValueError(f"{path}: deflated DICOM inflates past {cap:,} bytes; expected one radiograph "
                                 f"of at most {MAX_PIXELS:,} pixels")


def save_dicom(path, img01: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12,
               window: tuple[float, float] | None = None):
    """Write [H, W] in [0, 1] as an uncompressed DICOM radiograph (``bits`` stored in 16-bit
    pixels; MONOCHROME1 stores bone dark, as many CR/DX films do)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric={photometric!r}; expected MONOCHROME1 or MONOCHROME2")
    values = np.clip(img01, 0, 1)
    values = (1 - values) if photometric == "MONOCHROME1" else values
    pixels = np.round(values * (2 ** bits - 1)).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "DX", photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, bits, bits - 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def bit_depth(arr: np.ndarray) -> int:
    """Bits a 16-bit container's data actually use (8, 10, 12, 14 or 16): 12-bit films are scaled
    by 4095, not 65535, so they do not load nearly black."""
    top = int(arr.max()) if arr.size else 0
    return next(b for b in (8, 10, 12, 14, 16) if top < 2 ** b)


def read_image(path, voi: str = "auto") -> np.ndarray:
    """PNG/JPEG (8- or 16-bit, grey or colour; transparency composited on black) or DICOM as
    [H, W] float32 in [0, 1]. 16-bit PNGs are scaled by the bit depth their data use
    (``bit_depth``), float data (a TIFF, even one named .png) by their range (``_float_film``);
    DICOM display follows ``voi`` (see ``read_dicom``)."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: not an image file (suffix {suffix!r}); expected one of {sorted(IMAGE_SUFFIXES)}")
    if suffix in (".dcm", ".dicom"):
        arr = read_dicom(path, voi=voi)
    else:
        try:
            with Image.open(path) as im:
                check_film_size(path, im.height, im.width, getattr(im, "n_frames", 1))
                if im.format == "PNG" and _png_depth_and_colour(path) in ((16, 2), (16, 6)):
                    raise ValueError(f"{path}: a 16-bit colour PNG, which would be read as 8 bits; expected a "
                                     "16-bit greyscale PNG (or 8-bit colour)")
                im.load()
                if im.mode not in READABLE_MODES:
                    raise ValueError(f"{path}: a {im.format} image of mode {im.mode!r}; expected greyscale, colour "
                                     "or integer / float data")
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    raw = np.asarray(im, dtype=np.float64)
                    arr = (raw / (2 ** bit_depth(raw) - 1)).clip(0, 1).astype(np.float32)
                elif im.mode == "F":
                    arr = _float_film(path, np.asarray(im, dtype=np.float64))
                else:
                    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                        # Transparent pixels carry no film: composite on black (air) rather than ignore alpha.
                        rgba = im.convert("RGBA")
                        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
                    arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: unreadable image ({e})") from None
        check_not_blank(path, arr)
    return arr


# PIL modes read: greyscale, palette, colour (composited on black where transparent), integer and float.
READABLE_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "I", "I;16", "I;16B", "I;16L", "F")


def _float_film(path, raw: np.ndarray) -> np.ndarray:
    """Float pixel data (a 32-bit TIFF, whatever its name) as [H, W] in [0, 1]: data already in [0, 1]
    as they are, anything else scaled from its minimum to its maximum; NaN or infinity refused."""
    bad = int((~np.isfinite(raw)).sum())
    if bad:
        raise ValueError(f"{path}: {bad} pixels are NaN or infinite; expected finite float data")
    lo, hi = float(raw.min()), float(raw.max())
    if lo < 0 or hi > 1:
        raw = (raw - lo) / max(hi - lo, 1e-12)
    return raw.astype(np.float32)


def _png_depth_and_colour(path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's header (colour types 2 and 6 are RGB and RGBA)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return (head[24], head[25]) if len(head) == 26 and head[12:16] == b"IHDR" else (0, 0)


def _readable(paths, skip_bad: bool, voi: str) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The paths that read as images, and (path, reason) for the others when ``skip_bad``; without
    it the first bad file is an error naming it."""
    good, skipped = [], []
    for p in paths:
        try:
            read_image(p, voi)
            good.append(p)
        except (ValueError, FileNotFoundError) as e:
            if not skip_bad:
                raise ValueError(f"{e} (pass skip_bad=True to leave such files out)") from None
            skipped.append((p, str(e)))
    return good, skipped


def check_film_paths(paths) -> None:
    """Refuse a missing film before any model is loaded, naming it."""
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"image={str(path)!r}; expected an existing image file")


def load_films(paths, resolution: int, fit: str = "crop", voi: str = "auto", upsample: bool = False) -> torch.Tensor:
    """Films as model input [N, 1, R, R] in [-1, 1]. A film smaller than ``resolution`` is refused
    unless ``upsample`` (enlarging invents detail the model will then reproduce)."""
    out = []
    for path in paths:
        img = read_image(path, voi)
        side = min(img.shape) if fit == "crop" else max(img.shape)
        if side < resolution and not upsample:
            raise ValueError(f"{path}: {img.shape[1]}x{img.shape[0]} pixels is smaller than the model's "
                             f"{resolution} px; pass upsample (--upsample) to enlarge it")
        out.append(to_model_range(img, resolution, fit))
    if not out:
        raise ValueError("no films given; expected at least one image file")
    return torch.stack(out)


class ImageFolderDataset(Dataset):
    """Every PNG/JPEG/DICOM under ``root`` (sorted), made square by ``fit`` and resized to
    ``resolution`` (``to_model_range``); DICOM display by ``voi`` (``read_dicom``).

    Unreadable or non-image files are an error naming them, unless ``skip_bad=True``: then they
    are listed in ``self.skipped`` as (path, reason) and left out.
    """

    def __init__(self, root, resolution: int = 64, skip_bad: bool = False, fit: str = "crop", voi: str = "auto"):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        if fit not in FITS:
            raise ValueError(f"fit={fit!r}; expected one of {FITS}")
        self.resolution, self.fit, self.voi = resolution, fit, voi
        candidates = sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith("."))
        self.files, self.skipped = _readable(candidates, skip_bad, voi)
        if not self.files:
            raise ValueError(f"image folder {root} holds no readable images ({len(self.skipped)} files skipped)")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = to_model_range(read_image(self.files[i], self.voi), self.resolution, self.fit)
        return dict(img=img, index=i, path=str(self.files[i]))


UNCERTAINTY_POLICIES = ("zeros", "ones", "ignore")


class CheXpertDataset(Dataset):
    """A CheXpert-style CSV: ``Path``, ``Frontal/Lateral`` and one column per label holding
    1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned: negative).

    ``uncertainty``: "zeros" (U-Zeros), "ones" (U-Ones) or "ignore" (NaN, to mask in the loss).
    Paths are resolved against ``root`` (default: the CSV's folder). Lateral views are dropped
    unless ``frontal_only=False``. Items: ``img`` [1, R, R], ``labels`` [L] float, ``index``, ``path``.
    Rows whose file is missing or not an image are an error naming it, unless ``skip_bad=True``
    (then they are counted in ``self.skipped``). ``fit`` and ``voi`` as for ``ImageFolderDataset``.
    """

    def __init__(self, csv_path, labels=("Cardiomegaly", "Lung Opacity"), root=None, resolution: int = 64,
                 *, uncertainty: str = "zeros", frontal_only: bool = True, skip_bad: bool = False, fit: str = "crop",
                 voi: str = "auto"):
        if uncertainty not in UNCERTAINTY_POLICIES:
            raise ValueError(f"uncertainty={uncertainty!r}; expected one of {UNCERTAINTY_POLICIES}")
        csv_path = Path(csv_path)
        self.root = Path(root) if root else csv_path.parent
        self.labels, self.resolution = tuple(labels), resolution
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("Path", "Frontal/Lateral", *self.labels) if c not in columns]
            if missing:
                raise ValueError(f"{csv_path}: missing columns {missing}; it has {columns}")
            rows = [r for r in reader if not frontal_only or r["Frontal/Lateral"].strip().lower() == "frontal"]
        uncertain_value = {"zeros": 0.0, "ones": 1.0, "ignore": float("nan")}[uncertainty]

        def value(text, row_no, col):
            text = text.strip()
            if text == "":
                return 0.0
            try:
                v = float(text)
            except ValueError:
                raise ValueError(f"{csv_path}: row {row_no}, column {col!r} holds {text!r}; "
                                 "expected 1, 0, -1 or blank") from None
            if v not in (1.0, 0.0, -1.0):
                raise ValueError(f"{csv_path}: row {row_no}, column {col!r} holds {text!r}; expected 1, 0, -1 or blank")
            return uncertain_value if v == -1.0 else v

        if fit not in FITS:
            raise ValueError(f"fit={fit!r}; expected one of {FITS}")
        self.fit, self.voi = fit, voi
        targets = [[value(r[c], i + 2, c) for c in self.labels] for i, r in enumerate(rows)]
        good, self.skipped = _readable([self.root / r["Path"] for r in rows], skip_bad, voi)
        keep = [i for i, r in enumerate(rows) if self.root / r["Path"] in set(good)]
        self.paths = [rows[i]["Path"] for i in keep]
        self.targets = torch.tensor([targets[i] for i in keep], dtype=torch.float32)
        self.targets = self.targets.reshape(len(keep), len(self.labels))

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path = self.root / self.paths[i]
        return dict(img=to_model_range(read_image(path, self.voi), self.resolution, self.fit), labels=self.targets[i],
                    index=i, path=str(path))
