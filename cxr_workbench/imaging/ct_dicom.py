"""A CT as a DICOM series (one file per axial slice), read into a NIfTI image in memory so that
``imaging.ct`` treats it exactly as a NIfTI volume: same reorientation, checks and cleaning.

DICOM places voxels in the patient's LPS frame (x towards the patient's left, y posterior, z
superior); NIfTI affines are RAS, so the first two axes change sign.
A voxel [i, j, k] is column i, row j of slice k, as dcm2niix and TotalSegmentator store it, so their
labelmaps of a series match it (a labelmap stored flipped matches too: both are compared after
reorientation). The series is checked before any pixels are read: one series, CT, one grid, slices
evenly spaced along the slice normal (a missing or doubled slice is named).
"""
from __future__ import annotations

__all__ = ["dicom_files", "read_series", "save_series"]

import warnings
from pathlib import Path

import numpy as np

from cxr_workbench.io import reason

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_SLICES = 4000


def _is_dicom(path: Path) -> bool:
    """A DICOM part-10 file: the "DICM" magic after a 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """(DICOM files, other files) under ``folder`` (any name, subfolders too), sorted by path; a
    DICOMDIR index is in neither, hidden and NIfTI files (the labelmap) are not among the others."""
    dicom, others = [], []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name != "DICOMDIR":
            if _is_dicom(p):
                dicom.append(p)
            elif not p.name.startswith(".") and not p.name.endswith((".nii", ".nii.gz")):
                others.append(p)
    return dicom, others


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files under ``folder`` (see ``_scan``)."""
    return _scan(folder)[0]


def _header(path: Path):
    import pydicom
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        for _ in ds:  # pydicom decodes an element when first used: damage must show here, not later
            pass
        return ds
    except Exception as e:  # noqa: BLE001 - a damaged file raises whatever pydicom's parser meets
        raise ValueError(f"{path}: not a readable DICOM file ({reason(e, 80)})") from None


def _floats(path: Path, ds, name: str, n: int) -> np.ndarray:
    try:
        value = np.asarray([float(v) for v in ds[name].value], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        value = np.zeros(0)
    if value.shape != (n,) or not np.isfinite(value).all():
        raise ValueError(f"{path}: DICOM {name} missing or not {n} numbers; expected a CT slice with its geometry")
    return value


def _geometry(folder: Path, files: list[Path], headers: list) -> tuple[list[int], np.ndarray]:
    """(slice order along the normal, RAS affine [4, 4]) of a checked series."""
    first, ds0 = files[0], headers[0]
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in headers}
    if len(series) != 1:
        raise ValueError(f"{folder}: DICOM files of {len(series)} series; expected the slices of one CT series")
    for path, ds in zip(files, headers):
        if (modality := str(getattr(ds, "Modality", ""))) != "CT":
            raise ValueError(f"{path}: DICOM modality {modality!r}; expected 'CT'")
    orient = _floats(first, ds0, "ImageOrientationPatient", 6)
    spacing = _floats(first, ds0, "PixelSpacing", 2)
    for path, ds in zip(files, headers):
        if (getattr(ds, "Rows", None), getattr(ds, "Columns", None)) != (ds0.Rows, ds0.Columns) or \
                not np.allclose(_floats(path, ds, "ImageOrientationPatient", 6), orient, atol=1e-4):
            raise ValueError(f"{path}: a slice of another size or orientation than {first.name}; "
                             "expected one grid for the whole series")
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([_floats(p, ds, "ImagePositionPatient", 3) for p, ds in zip(files, headers)])
    depth = positions @ normal
    order = np.argsort(depth, kind="stable").tolist()
    gaps = np.diff(depth[order])
    if len(files) < 2 or gaps.min() <= 1e-3 or gaps.max() - gaps.min() > max(0.01 * np.median(gaps), 0.01):
        where = files[order[int(np.argmax(np.abs(gaps - np.median(gaps))))]] if len(gaps) else first
        raise ValueError(f"{folder}: slice gaps from {gaps.min() if len(gaps) else 0:.3g} to "
                         f"{gaps.max() if len(gaps) else 0:.3g} mm (near {where.name}); expected at least two "
                         "evenly spaced slices (a missing or doubled slice?)")
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row_dir * spacing[1], col_dir * spacing[0]  # column step, row step
    lps[:3, 2], lps[:3, 3] = normal * float(np.median(gaps)), positions[order[0]]
    return order, LPS_TO_RAS @ lps


def read_series(folder: str | Path, max_voxels: int):
    """A DICOM CT series under ``folder`` as a ``nibabel.Nifti1Image`` of HU (float32 [X, Y, Z],
    RAS affine). One-line errors name the folder or the file: no DICOM, several series, not CT, a
    missing slice, a slice of another grid, pixel data that cannot be decoded."""
    import nibabel as nib
    from pydicom.pixels import apply_modality_lut
    folder = Path(folder)
    files, others = _scan(folder)
    if not files or len(files) > MAX_SLICES:
        raise ValueError(f"{folder}: {len(files)} DICOM files; expected a CT series of 2 to {MAX_SLICES} slices")
    if others:  # a slice whose header is damaged looks like one of these: named, not silently left out
        warnings.warn(f"{folder}: {len(others)} files that are not DICOM passed over (first {others[0].name})",
                      stacklevel=2)
    headers = [_header(p) for p in files]
    order, affine = _geometry(folder, files, headers)
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if rows * cols * len(files) > max_voxels or min(rows, cols) < 8:
        raise ValueError(f"{folder}: {len(files)} slices of {cols} x {rows}; expected 8 to {max_voxels:,} voxels")
    import pydicom
    volume = np.empty((cols, rows, len(files)), np.float32)
    for k, i in enumerate(order):
        try:
            ds = pydicom.dcmread(str(files[i]))
            volume[:, :, k] = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32).T
        except Exception as e:  # noqa: BLE001 - no decoder for the syntax, truncated or absent pixel data
            raise ValueError(f"{files[i]}: DICOM pixel data cannot be read ({reason(e, 80)}); "
                             "expected one uncompressed (or decodable) CT slice") from None
    return nib.Nifti1Image(volume, affine)


def save_series(folder: str | Path, hu: np.ndarray, affine: np.ndarray) -> list[Path]:
    """Write a CT ``hu`` [X, Y, Z] with RAS ``affine`` [4, 4] as a DICOM series, one file per slice
    along Z (16-bit, rescale intercept -1024), as a scanner exports it; returns the files."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    steps = np.linalg.norm(lps[:3, :3], axis=0)
    series, study, files = generate_uid(), generate_uid(), []
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"slice{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = "CT", series, study, k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.r_[lps[:3, 0] / steps[0], lps[:3, 1] / steps[1]]]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.PixelSpacing = [f"{steps[1]:.6f}", f"{steps[0]:.6f}"]  # between rows, between columns
        ds.SliceThickness = f"{steps[2]:.6f}"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.PixelData = np.round(hu[:, :, k].T + 1024).astype(np.int16).tobytes()
        ds.save_as(str(ds.filename), enforce_file_format=True)
        files.append(Path(ds.filename))
    return files
