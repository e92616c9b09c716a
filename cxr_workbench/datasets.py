"""Datasets. Each item is a dict: ``img`` [1, R, R] float32 in [-1, 1], labels, ``index``.

* ``PhantomDataset``: seeded procedural phantoms with ground truth (CTR, opacity burden).
* ``ImageFolderDataset``: PNG/JPEG (8- or 16-bit) and DICOM files in a folder (``read_image``).
* ``CheXpertDataset``: a CheXpert-style CSV (``Path``, ``Frontal/Lateral``, label columns).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import phantom

LABELS = ("cardiomegaly", "opacity")


def _to_model_range(img01: np.ndarray, resolution: int) -> torch.Tensor:
    """[H, W] in [0, 1] -> [1, R, R] in [-1, 1], area-resampled to the requested size."""
    t = torch.from_numpy(np.ascontiguousarray(img01, dtype=np.float32))[None, None]
    if t.shape[-1] != resolution or t.shape[-2] != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="area" if t.shape[-1] > resolution else "bilinear",
                          align_corners=None if t.shape[-1] > resolution else False)
    return (t[0] * 2 - 1).clamp(-1, 1)


class PhantomDataset(Dataset):
    """``n`` phantoms rendered once (reproducible for a seed), kinds mixed by ``weights``.

    Labels per item: ``kind`` (normal / cardiomegaly / opacity), ``ctr``, ``opacity_burden``,
    and binary ``cardiomegaly`` / ``opacity``.
    """

    labels = LABELS

    def __init__(self, n: int, resolution: int = 64, seed: int = 0,
                 weights: tuple[float, float, float] = (0.5, 0.25, 0.25), progress: bool = False):
        if n <= 0:
            raise ValueError(f"n={n}; expected a positive number of phantoms")
        self.resolution = resolution
        rng = np.random.default_rng(seed)
        kinds = rng.choice(len(phantom.KINDS), size=n, p=np.asarray(weights) / np.sum(weights))
        params = [phantom.sample_params(rng, phantom.KINDS[k]) for k in kinds]
        chunks = [phantom.render_batch(params[i:i + self.CHUNK], resolution)
                  for i in tqdm(range(0, n, self.CHUNK), disable=not progress, desc="phantoms")]
        self.images = np.concatenate([c[0] for c in chunks])
        self.ctr = np.concatenate([c[1]["ctr"] for c in chunks])
        self.burden = np.concatenate([c[1]["opacity_burden"] for c in chunks])
        # The kind follows the rendered truth: an opacity drawn where no lung is visible is no opacity.
        self.kind = np.where(self.burden > phantom.OPACITY_THRESHOLD, "opacity",
                             np.where(self.ctr > phantom.CTR_THRESHOLD, "cardiomegaly", "normal"))

    CHUNK = 64  # phantoms per render_batch call: large enough to batch, small enough to stay in cache

    def __len__(self):
        return len(self.images)

    def images_tensor(self) -> torch.Tensor:
        """All images, [N, 1, R, R] in [-1, 1]."""
        return torch.from_numpy(self.images)[:, None] * 2 - 1

    def __getitem__(self, i):
        return dict(img=torch.from_numpy(self.images[i])[None] * 2 - 1, index=i, kind=str(self.kind[i]),
                    ctr=float(self.ctr[i]), opacity_burden=float(self.burden[i]),
                    cardiomegaly=float(self.ctr[i] > phantom.CTR_THRESHOLD),
                    opacity=float(self.burden[i] > phantom.OPACITY_THRESHOLD))


# --------------------------------------------------------------------------------------------
# Real images: files, DICOM, CheXpert-style CSV
# --------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


def read_dicom(path, window: tuple[float, float] | None = None) -> np.ndarray:
    """A DICOM radiograph as [H, W] float in [0, 1], display-ready.

    Applies the modality rescale, the given (centre, width) window or the file's first
    WindowCenter/WindowWidth (else the full range), and inverts MONOCHROME1 so bone is bright.
    """
    import pydicom
    ds = pydicom.dcmread(str(path))
    try:
        arr = ds.pixel_array.astype(np.float64)
    except Exception as e:  # no decoder for this transfer syntax, or no pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise ValueError(f"{path}: cannot decode DICOM pixel data with transfer syntax {name!r} ({e}); "
                         "expected uncompressed (little endian) or a syntax with an installed decoder") from e
    if arr.ndim != 2:
        raise ValueError(f"{path}: DICOM pixel array has shape {arr.shape}; expected one grayscale frame")
    arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        first = lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)
        window = (first(ds.WindowCenter), first(ds.WindowWidth))
    if window is not None:
        centre, width = window
        if width <= 0:
            raise ValueError(f"window width={width}; expected > 0")
        lo, hi = centre - width / 2, centre + width / 2
    else:
        lo, hi = arr.min(), arr.max()
    out = np.clip((arr - lo) / max(hi - lo, 1e-12), 0, 1)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        out = 1 - out
    return out.astype(np.float32)


MIN_IMAGE_SIDE = 8  # pixels; anything smaller is not a radiograph


def read_image(path) -> np.ndarray:
    """PNG/JPEG (8- or 16-bit, grey or colour; transparency composited on black) or DICOM as
    [H, W] float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: not an image file (suffix {suffix!r}); expected one of {sorted(IMAGE_SUFFIXES)}")
    if suffix in (".dcm", ".dicom"):
        arr = read_dicom(path)
    else:
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    raw = np.asarray(im, dtype=np.float64)
                    scale = 65535.0 if raw.max() > 255 or im.mode.startswith("I;16") else 255.0
                    arr = (raw / scale).clip(0, 1).astype(np.float32)
                else:
                    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                        # Transparent pixels carry no film: composite on black (air) rather than ignore alpha.
                        rgba = im.convert("RGBA")
                        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
                    arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: unreadable image ({e})") from None
    if min(arr.shape) < MIN_IMAGE_SIDE:
        raise ValueError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]} pixels; expected at least "
                         f"{MIN_IMAGE_SIDE} each way")
    return arr


class ImageFolderDataset(Dataset):
    """Every PNG/JPEG/DICOM under ``root`` (sorted), resized to ``resolution``.

    Unreadable or non-image files are an error naming them, unless ``skip_bad=True``: then they
    are listed in ``self.skipped`` as (path, reason) and left out.
    """

    def __init__(self, root, resolution: int = 64, skip_bad: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.resolution = resolution
        self.files, self.skipped = [], []
        for p in sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith(".")):
            try:
                read_image(p)
                self.files.append(p)
            except ValueError as e:
                if not skip_bad:
                    raise ValueError(f"{e} (pass skip_bad=True to leave such files out)") from None
                self.skipped.append((p, str(e)))
        if not self.files:
            raise ValueError(f"image folder {root} holds no readable images")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return dict(img=_to_model_range(read_image(self.files[i]), self.resolution), index=i, path=str(self.files[i]))


UNCERTAINTY_POLICIES = ("zeros", "ones", "ignore")


class CheXpertDataset(Dataset):
    """A CheXpert-style CSV: ``Path``, ``Frontal/Lateral`` and one column per label holding
    1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned: negative).

    ``uncertainty``: "zeros" (U-Zeros), "ones" (U-Ones) or "ignore" (NaN, to mask in the loss).
    Paths are resolved against ``root`` (default: the CSV's folder). Lateral views are dropped
    unless ``frontal_only=False``. Items: ``img`` [1, R, R], ``labels`` [L] float, ``index``, ``path``.
    """

    def __init__(self, csv_path, labels=("Cardiomegaly", "Lung Opacity"), root=None, resolution: int = 64,
                 uncertainty: str = "zeros", frontal_only: bool = True):
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

        self.paths = [r["Path"] for r in rows]
        self.targets = torch.tensor([[value(r[c], i + 2, c) for c in self.labels] for i, r in enumerate(rows)],
                                    dtype=torch.float32).reshape(len(rows), len(self.labels))

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path = self.root / self.paths[i]
        return dict(img=_to_model_range(read_image(path), self.resolution), labels=self.targets[i],
                    index=i, path=str(path))
