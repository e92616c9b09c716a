"""Digitally reconstructed radiographs of a real chest CT, with exact ground truth.

A film is drawn from explicit parameters (``DRRParams``) over a ``ct.SlabModel``: the CT reduced once
to about a dozen antero-posterior slabs of material maps. Per film, in torch and batched:

1. **Anatomy and disease** on the slabs: bone scaled by its own term, chest-wall soft tissue by the
   soft-tissue thickness, the heart label enlarged (or shrunk) in 3D about its centre, tissue replacing
   lung where it grows (cardiomegaly); opacities (consolidation, ground glass) as irregular 3D blobs
   seeded inside one lung lobe and confined to it, raising lung towards soft-tissue density.
2. **Projection** in cone-beam geometry: each slab is magnified by SID / (SID - distance to the
   detector) (PA: anterior chest on the detector, source at about 180 cm; AP: back on the detector,
   source at about 100 cm, so the heart magnifies), shifted by its depth for rotation about the body
   axis and for tilt; then habitus (anisotropic scale; AP depth scales the path lengths), inspiration
   (the lower chest stretched down) and a smooth elastic displacement, all as one sampling grid per slab.
3. **Exposure**: Beer-Lambert transmission, scatter haze (a wide blur of the primary), detector blur,
   quantum noise for the photon count, the log, a film processor's equalisation (a wide unsharp mask,
   which keeps the spine faint behind the heart), a window and gamma.
4. **Truth** from the projected label paths, as a clinician measures it: the cardiothoracic ratio
   (maximal transverse heart diameter over maximal internal thoracic diameter, both with sub-pixel
   edges), the opacity burden (opacified share of the projected lung), the lobe of each opacity, and
   the support devices drawn (ECG leads, a central line, an endotracheal tube).

One patient's anatomy: variety comes from pose, habitus, inspiration, deformation and exposure, not from
a population (``--ct`` adds your own CTs). ``benchmarks/bench_drr.py`` measures films per second.
"""
from __future__ import annotations

__all__ = ["DRRParams", "Opacity", "RANGES", "DEVICES", "LOBE_NAMES", "sample_params", "render_batch", "render",
           "slab_model_for"]

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from cxr_workbench.imaging.ct import CHANNELS, LOBES, MU_WATER, SlabModel
from cxr_workbench.imaging.diseases import KINDS, reads_as
from cxr_workbench.imaging.filters import gaussian_blur
from cxr_workbench.settings import check_ranges

MAX_BLOBS = 3
MIN_SIZE = 16
VERSION = 3                # bumped whenever the rendering changes (training runs record it)
CHUNK = 32                 # films rendered together (measured fastest on 2 cores: benchmarks/bench_drr.py)
FIELD_MM = 340.0          # side of the square detector field at the default framing (a 35 x 43 cm cassette is 350 wide)
DEVICES = ("ecg", "line", "tube")
LOBE_NAMES = tuple(LOBES.values())
_C = {name: i for i, name in enumerate(CHANNELS)}
_LOBE0 = _C["lobe10"]
LUNG_MU = 0.2 * MU_WATER      # aerated lung, for lung that replaces shrinking heart
EQUALISE_WIDTH = 0.35  # the processor's unsharp mask, in film widths
LUNG_FLOOR = 0.12      # how far below the darkest lung black is set, in windows
HEART_EDGE_MM, LUNG_EDGE_MM, OPACITY_EDGE_MM = 8.0, 8.0, 4.0   # path lengths that count as "projected there"


@dataclass(frozen=True)
class Opacity:
    """One opacity of a DRR: the lobe it is seeded in, where, its size, its density and its outline."""
    lobe: int            # index into LOBE_NAMES
    seed_point: float    # 0..1: which voxel well inside the lobe is its centre
    radius: float        # mm
    density: float       # 0..1: share of the way from aerated lung to soft tissue (ground glass .. consolidation)
    lobes: tuple = ()    # ((dx, dy, dz, relative radius), ...): irregular outline, offsets in radii


RANGES = dict(
    shift_x=(-0.1, 0.1), shift_y=(-0.1, 0.1), yaw=(-0.2, 0.2), tilt=(-0.2, 0.2), zoom=(0.8, 1.25),
    sid=(800.0, 2000.0), ap=(0.0, 1.0), scale_x=(0.8, 1.2), scale_y=(0.8, 1.2), depth=(0.8, 1.2),
    inspiration=(-1.0, 1.0), elastic=(0.0, 15.0), soft_tissue=(0.0, 1.0), bone=(0.3, 2.0), heart=(0.6, 1.6),
    blur=(0.0, 2.0), scatter=(0.0, 0.6), photons=(1e3, 1e6), equalise=(0.0, 0.9), gamma=(0.5, 2.0),
    contrast=(0.6, 1.5), brightness=(-0.2, 0.2),
)


@dataclass(frozen=True)
class DRRParams:
    """Everything that makes one DRR: pose and geometry, habitus and breathing, disease, exposure, devices."""
    # pose and geometry
    shift_x: float = 0.0        # field shift, fraction of the field
    shift_y: float = 0.0
    yaw: float = 0.0            # rotation about the body axis, radians
    tilt: float = 0.0           # lordotic tilt, radians
    zoom: float = 1.0           # the field is FIELD_MM / zoom wide
    sid: float = 1800.0         # source-detector distance, mm
    ap: float = 0.0             # 1: AP (back on the detector), 0: PA
    # habitus and breathing
    scale_x: float = 1.0
    scale_y: float = 1.0        # cranio-caudal
    depth: float = 1.0          # antero-posterior (scales path lengths)
    inspiration: float = 0.0    # -1 .. 1: the chest below the hila 2 .. 18 % longer than the CT's (a supine CT)
    elastic: float = 4.0        # smooth displacement amplitude, mm
    soft_tissue: float = 0.5    # 0: chest wall 2 cm beyond the ribs .. 1: 4.5 cm
    bone: float = 1.0           # bone's excess attenuation over water, relative
    heart: float = 1.0          # 3D scale of the heart label
    # exposure
    blur: float = 0.6           # detector blur, pixels at 64 px
    scatter: float = 0.2        # scatter-to-primary ratio
    photons: float = 2e4        # photons per unattenuated pixel at 64 px
    equalise: float = 0.5
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    noise_seed: int = 0         # the quantum noise
    shape_seed: int = 0         # the elastic displacement and where devices lie
    devices: tuple = ()         # a subset of DEVICES
    opacities: tuple = field(default_factory=tuple)

    def validate(self) -> "DRRParams":
        """Refuse out-of-range parameters, naming the parameter and its range."""
        check_ranges(self, RANGES, "DRR")
        if len(self.opacities) > MAX_BLOBS or any(d not in DEVICES for d in self.devices):
            raise ValueError(f"DRR has {len(self.opacities)} opacities and devices {self.devices}; expected at most "
                             f"{MAX_BLOBS} and devices among {DEVICES}")
        for o in self.opacities:
            if not (0 <= o.lobe < len(LOBE_NAMES) and 0 <= o.seed_point < 1 and 5 <= o.radius <= 80
                    and 0 <= o.density <= 1 and len(o.lobes) <= 3):
                raise ValueError(f"opacity {o}; expected lobe 0-{len(LOBE_NAMES) - 1}, seed_point in [0, 1), "
                                 "radius 5-80 mm, density in [0, 1], at most 3 lobes")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


# Lower-lobe predominant, as the phantoms' opacities (either lung).
_LOBE_P = {"left upper lobe": 0.14, "left lower lobe": 0.3, "right upper lobe": 0.14, "right middle lobe": 0.12,
           "right lower lobe": 0.3}


def sample_params(rng: np.random.Generator, kind: str = "normal") -> DRRParams:
    """Draw random DRR parameters of one kind ('normal', 'cardiomegaly', 'opacity')."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    u = rng.uniform
    ap = float(rng.random() < 0.15)
    heart = u(1.04, 1.3) if kind == "cardiomegaly" else u(0.74, 0.93)  # the CT's own heart: CTR 0.52
    opacities = ()
    if kind == "opacity":
        p = np.array([_LOBE_P[n] for n in LOBE_NAMES])
        opacities = tuple(Opacity(lobe=int(rng.choice(len(LOBE_NAMES), p=p / p.sum())), seed_point=float(u(0, 1)),
                                  radius=float(u(12, 40)), density=float(u(0.3, 1.0)),
                                  lobes=tuple(tuple(float(v) for v in u(-0.9, 0.9, 3)) + (float(u(0.4, 0.9)),)
                                              for _ in range(rng.integers(0, 4))))
                          for _ in range(rng.integers(1, MAX_BLOBS + 1)))
    devices = tuple(d for d, share in zip(DEVICES, (0.15, 0.1, 0.05)) if rng.random() < share)
    return DRRParams(
        shift_x=u(-0.03, 0.03), shift_y=u(-0.03, 0.03), yaw=u(-0.08, 0.08), tilt=u(-0.06, 0.06), zoom=u(0.95, 1.08),
        sid=u(950, 1100) if ap else u(1700, 1900), ap=ap, scale_x=u(0.92, 1.08), scale_y=u(0.93, 1.07),
        depth=u(0.9, 1.1), inspiration=u(-0.8, 0.8), elastic=u(1, 6), soft_tissue=u(0, 1), bone=u(0.4, 0.7),
        heart=heart, blur=u(0.3, 0.9), scatter=u(0.08, 0.35), photons=float(np.exp(u(np.log(2e4), np.log(3e5)))),
        equalise=u(0.4, 0.6), gamma=u(0.85, 1.2), contrast=u(0.9, 1.1), brightness=u(-0.04, 0.04),
        noise_seed=int(rng.integers(2 ** 31)), shape_seed=int(rng.integers(2 ** 31)), devices=devices,
        opacities=opacities)


def _stack(params: list[DRRParams]) -> dict[str, torch.Tensor]:
    """Scalar parameters as [N] tensors."""
    return {f.name: torch.tensor([float(getattr(p, f.name)) for p in params])
            for f in fields(DRRParams) if f.name not in ("opacities", "devices", "noise_seed", "shape_seed")}


# --------------------------------------------------------------------------------------------
# 1. Anatomy and disease on the slabs
# --------------------------------------------------------------------------------------------

def _box(model: SlabModel, margin: float) -> tuple[slice, slice, slice]:
    """Slices (slab, row, col) of the heart's bounding box grown ``margin`` times about its centre:
    all that the heart's scaling can change."""
    idx = torch.nonzero(model.maps[_C["heart"]] > 0.01)
    lo, hi = idx.amin(0).float(), idx.amax(0).float() + 1
    mid, half = (lo + hi) / 2, (hi - lo) / 2 * margin + 1
    shape = model.maps.shape[1:]
    return tuple(slice(max(0, int(m - h)), min(n, int(math.ceil(m + h)))) for m, h, n in zip(mid, half, shape))


def _heart(model: SlabModel, box, scale: torch.Tensor) -> torch.Tensor:
    """Heart occupancy [N, k, h, w] inside ``box``: the heart label scaled by ``scale`` [N] in 3D about
    its centre (the same physical scale along every axis: the affine acts on normalised coordinates)."""
    h = model.maps[_C["heart"]][box]
    K, H, W = h.shape
    centre = torch.tensor([c - b.start for c, b in zip(model.heart_centre, box)])
    c = torch.stack([(centre[2] + 0.5) / W, (centre[1] + 0.5) / H, (centre[0] + 0.5) / K]) * 2 - 1  # (x, y, z)
    n = len(scale)
    theta = torch.zeros(n, 3, 4)
    theta[:, 0, 0] = theta[:, 1, 1] = theta[:, 2, 2] = 1 / scale
    theta[:, :, 3] = c * (1 - 1 / scale[:, None])
    grid = F.affine_grid(theta, (n, 1, K, H, W), align_corners=False)
    return F.grid_sample(h.expand(n, 1, K, H, W), grid, align_corners=False, padding_mode="zeros")[:, 0]


def _blob(model: SlabModel, o: Opacity) -> tuple[tuple[slice, slice, slice], torch.Tensor]:
    """One opacity's occupancy inside its lobe, density applied: (box slices, [k, h, w])."""
    pts = model.lobe_points[model.lobe_points[:, 0] == o.lobe]
    centre = pts[int(o.seed_point * len(pts)), 1:] * torch.tensor([model.slab_mm, model.spacing, model.spacing])
    parts = ((0.0, 0.0, 0.0, 1.0),) + tuple(o.lobes)
    reach = o.radius * (1 + max(max(abs(v) for v in q[:3]) + q[3] for q in parts)) + 2 * OPACITY_EDGE_MM
    steps = (model.slab_mm, model.spacing, model.spacing)
    box = tuple(slice(max(0, int((c - reach) / d)), min(n, int((c + reach) / d) + 2))
                for c, d, n in zip(centre.tolist(), steps, model.maps.shape[1:]))
    kk, rr, cc = torch.meshgrid(*(torch.arange(b.start, b.stop, dtype=torch.float32) * d for b, d in zip(box, steps)),
                                indexing="ij")
    occ = torch.zeros(kk.shape)
    for dx, dy, dz, rel in parts:
        ck, cr, cx = centre + torch.tensor([dz, dy, dx]) * o.radius
        rad = o.radius * rel
        dist = ((kk - ck) ** 2 + (rr - cr) ** 2 + (cc - cx) ** 2).sqrt()
        occ = torch.maximum(occ, torch.sigmoid((rad - dist) / OPACITY_EDGE_MM))
    return box, o.density * occ * model.maps[_LOBE0 + o.lobe][box]


_ATT = torch.tensor([_C[c] for c in ("soft_in", "wall_near", "wall_far", "bone", "lung_mu")])


def _slabs(model: SlabModel, P: dict, params: list[DRRParams]) -> torch.Tensor:
    """Per-slab maps [N, K, 4, H, W]: attenuation, and lung, heart and opacity path lengths (mm)."""
    m, t, n = model.maps, model.slab_mm, len(params)
    ones = torch.ones(n)
    coef = torch.stack([ones, ones, P["soft_tissue"], P["bone"], ones], 1)           # [N, 5]
    K, H, W = m.shape[1:]
    out = torch.zeros(n, K, 4, H, W)  # one contiguous memset: zeroing the strided views is slower
    att, lung, heart_path, opacity = (out[:, :, c] for c in range(4))               # views [N, K, H, W]
    att.copy_((coef @ m[_ATT].flatten(1)).view(n, K, H, W))
    lung.copy_(m[_C["lung"]] * t)
    # Cardiomegaly: the heart scaled in 3D; tissue replaces the lung it grows into, lung the heart it leaves.
    box = _box(model, max(1.0, float(P["heart"].max())))
    crop = (slice(None),) + box
    heart0, lung0, lung_mu0 = (m[_C[c]][box] for c in ("heart", "lung", "lung_mu"))
    heart = _heart(model, box, P["heart"])
    grow = heart - heart0
    taken = torch.minimum(grow.clamp(min=0), lung0)
    freed = (-grow).clamp(min=0)
    att[crop] += heart * t * MU_WATER - taken / lung0.clamp(min=1e-3) * lung_mu0 + freed * t * LUNG_MU
    lung[crop] = (lung0 - taken + freed).clamp(min=0) * t
    heart_path[crop] = heart * t
    # Opacities: lung raised towards soft tissue inside one lobe, where lung is left.
    for i, p in enumerate(params):
        for o in p.opacities:
            b, occ = _blob(model, o)
            at = (i,) + b
            occ = occ * (lung[at] / (t * m[_C["lung"]][b]).clamp(min=1e-3)).clamp(max=1)
            att[at] += occ * t * (MU_WATER - LUNG_MU)
            opacity[at] = torch.maximum(opacity[at], (occ > 0.05) * lung[at])
    return out


# --------------------------------------------------------------------------------------------
# 2. Projection
# --------------------------------------------------------------------------------------------

def _elastic(params: list[DRRParams], size: int) -> torch.Tensor:
    """Smooth displacement fields [N, size, size, 2] in mm, each from its film's shape seed."""
    fields_ = []
    for p in params:
        g = torch.Generator().manual_seed(p.shape_seed)
        fields_.append(torch.randn(2, 4, 4, generator=g) * p.elastic)
    coarse = torch.stack(fields_)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)


def _grids(model: SlabModel, P: dict, params: list[DRRParams], size: int) -> torch.Tensor:
    """Sampling grids [N, K, size, size, 2]: detector pixel -> slab coordinates, normalised."""
    K, H, W = model.maps.shape[1:]
    n = len(params)
    field_mm = FIELD_MM / P["zoom"]                                                    # [N]
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    u = (lin[None, None, :] + P["shift_x"][:, None, None]) * field_mm[:, None, None]  # [N, 1, S] detector mm
    v = (lin[None, :, None] + P["shift_y"][:, None, None]) * field_mm[:, None, None]  # [N, S, 1]
    y = model.slab_y[None] * P["depth"][:, None]                                       # [N, K] from the back
    depth = model.depth * P["depth"][:, None]
    to_detector = torch.where(P["ap"][:, None] > 0.5, y, depth - y)
    mag = P["sid"][:, None] / (P["sid"][:, None] - to_detector)                       # [N, K]
    y_rel = (y - depth / 2)
    e = _elastic(params, size)                                                         # [N, S, S, 2]
    col_c, row_c = model.centre[1] * model.spacing, model.lung_top * model.spacing     # mm in the slab maps
    # the field's top edge is 20 mm above the apices (the CT holds 2 cm above them; the rest is its top edge continued)
    row_c = row_c - 20 + field_mm / mag.mean(1) / 2                                    # [N]
    ex = lambda t: t[:, :, None, None]  # noqa: E731  [N, K] -> [N, K, 1, 1]
    per_n = lambda t: t[:, None, None, None]  # noqa: E731  [N] -> [N, 1, 1, 1]
    # x along columns only ([N, K, 1, S]) and z along rows only ([N, K, S, 1]) before the elastic field
    x = (u[:, None] / ex(mag) - ex(y_rel) * per_n(torch.sin(P["yaw"]))) / per_n(torch.cos(P["yaw"]) * P["scale_x"])
    z = (v[:, None] / ex(mag) - ex(y_rel) * per_n(torch.sin(P["tilt"]))) / per_n(P["scale_y"])
    hilum = per_n(model.centre[0] * model.spacing - row_c)                            # below it the chest stretches
    z = torch.where(z > hilum, hilum + (z - hilum) / per_n(1.1 + 0.08 * P["inspiration"]), z)
    grid = torch.empty(n, K, size, size, 2)
    grid[..., 0] = (x + col_c) * (2 / (W * model.spacing)) - 1
    grid[..., 1] = (z + per_n(row_c)) * (2 / (H * model.spacing)) - 1
    grid += e[:, None] * torch.tensor([2 / (W * model.spacing), 2 / (H * model.spacing)])
    return grid


def _project(model: SlabModel, P: dict, params: list[DRRParams], size: int) -> torch.Tensor:
    """Detector images [N, 4, size, size]: attenuation line integral, lung, heart and opacity path (mm)."""
    slabs = _slabs(model, P, params)                                                  # [N, K, 4, H, W]
    n, K = slabs.shape[:2]
    grid = _grids(model, P, params, size)
    out = F.grid_sample(slabs.flatten(0, 1), grid.flatten(0, 1), align_corners=False, padding_mode="zeros")
    return out.view(n, K, 4, size, size).sum(1) * P["depth"][:, None, None, None]


# --------------------------------------------------------------------------------------------
# 3. Devices and exposure
# --------------------------------------------------------------------------------------------

def _segments_distance(points: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Distance [S, S] from each pixel to the polyline ``points`` [M, 2] (pixel units)."""
    a, b = points[:-1], points[1:]
    d = b - a
    px, py = x[None] - a[:, 0, None, None], y[None] - a[:, 1, None, None]
    t = ((px * d[:, 0, None, None] + py * d[:, 1, None, None]) / (d ** 2).sum(1)[:, None, None].clamp(min=1e-6))
    t = t.clamp(0, 1)
    return ((px - t * d[:, 0, None, None]) ** 2 + (py - t * d[:, 1, None, None]) ** 2).sqrt().amin(0)


def _curve(p0, p1, p2, steps: int = 16) -> torch.Tensor:
    t = torch.linspace(0, 1, steps)[:, None]
    p0, p1, p2 = (torch.tensor(p, dtype=torch.float32) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _devices(p: DRRParams, size: int) -> torch.Tensor:
    """Added attenuation [S, S] of the film's support devices, positions drawn from its shape seed."""
    out = torch.zeros(size, size)
    rng = np.random.default_rng(p.shape_seed)
    lin = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    px = size / 64  # pixels per 64-px pixel
    line = lambda pts, width, mu: mu * torch.sigmoid((width - _segments_distance(pts * size, x, y)) / (0.4 * px))  # noqa: E731
    if "ecg" in p.devices:
        for _ in range(int(rng.integers(2, 5))):
            cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.7)
            ring = ((x - cx * size) ** 2 + (y - cy * size) ** 2).sqrt()
            out += 1.2 * torch.sigmoid((0.9 * px - ring) / (0.3 * px))
            edge = (rng.choice([0.0, 1.0]), rng.uniform(0.2, 0.9))
            out += line(_curve((cx, cy), (rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)), edge), 0.25 * px, 0.5)
    if "line" in p.devices:
        start = (rng.uniform(0.12, 0.25), rng.uniform(0.15, 0.25))   # right subclavian (image left)
        tip = (rng.uniform(0.45, 0.5), rng.uniform(0.38, 0.48))     # superior vena cava
        out += line(_curve(start, (tip[0] - 0.05, start[1] + 0.02), tip), 0.3 * px, 1.0)
    if "tube" in p.devices:
        cx, tip = rng.uniform(0.47, 0.52), rng.uniform(0.2, 0.3)
        out += line(torch.tensor([[cx, -0.1], [cx, tip]]), 0.6 * px, 0.8)
    return out


def _expose(A: torch.Tensor, lung: torch.Tensor, P: dict, params: list[DRRParams]) -> torch.Tensor:
    """Line integrals [N, S, S] -> display images [N, S, S] in [0, 1] (bone white, air black); ``lung``
    [N, S, S] bool, where the window is set."""
    n, s = A.shape[0], A.shape[-1]
    q = torch.exp(-A)  # transmitted share of the primary beam
    q = q + P["scatter"][:, None, None] * gaussian_blur(q, torch.full((n,), s / 6), "reflect")
    q = gaussian_blur(q, P["blur"] * s / 64, "reflect")
    photons = P["photons"][:, None, None] * (64 / s) ** 2
    eps = torch.stack([torch.randn(s, s, generator=torch.Generator().manual_seed(p.noise_seed)) for p in params])
    q = (q + (q / photons).sqrt() * eps).clamp(min=1 / photons)
    p = -torch.log(q)
    p = p - P["equalise"][:, None, None] * gaussian_blur(p, torch.full((n,), s * EQUALISE_WIDTH), "reflect")
    # The processor's histogram analysis: black at the darkest lung, white at the densest 0.5 % of the film.
    lo = torch.nanquantile(torch.where(lung, p, torch.nan).flatten(1), 0.02, dim=1)[:, None, None]
    flat = p.flatten(1)
    hi = flat.kthvalue(max(1, round(0.995 * flat.shape[1])), dim=1).values[:, None, None]
    if lo.isnan().any():  # no lung in view: the film's own 2 %
        low = flat.kthvalue(max(1, round(0.02 * flat.shape[1])), dim=1).values[:, None, None]
        lo = torch.where(lo.isnan(), low, lo)
    lo = lo - LUNG_FLOOR * (hi - lo)  # the darkest lung a dark grey, air black
    v = ((p - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1) ** P["gamma"][:, None, None]
    v = (v - 0.5) * P["contrast"][:, None, None] + 0.5 + P["brightness"][:, None, None]
    return v.clamp(0, 1)


# --------------------------------------------------------------------------------------------
# 4. Truth, and the whole
# --------------------------------------------------------------------------------------------

def _span(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel leftmost and rightmost crossings of ``f`` > 0 in each row: ([N, S], [N, S]) in pixels
    (+inf / -inf in rows where f never exceeds 0)."""
    a, b = f[..., :-1], f[..., 1:]
    j = torch.arange(f.shape[-1] - 1, dtype=torch.float32)
    rise = (a <= 0) & (b > 0)
    fall = (a > 0) & (b <= 0)
    left = torch.where(rise, j + 0.5 + (-a) / (b - a).clamp(min=1e-9), torch.inf).amin(-1)
    right = torch.where(fall, j + 0.5 + a / (a - b).clamp(min=1e-9), -torch.inf).amax(-1)
    return left, right


def _truth(paths: torch.Tensor, params: list[DRRParams]) -> dict[str, np.ndarray]:
    lung, heart, opacity = paths[:, 1], paths[:, 2], paths[:, 3]
    hl, hr = _span(heart - HEART_EDGE_MM)
    heart_d = (hr.amax(-1) - hl.amin(-1)).clamp(min=0)
    ll, lr = _span(lung - LUNG_EDGE_MM)
    thorax_d = torch.where(lr > ll, lr - ll, torch.zeros_like(lr)).amax(-1)
    lung_mask = lung > LUNG_EDGE_MM
    burden = ((opacity > OPACITY_EDGE_MM) & lung_mask).sum((1, 2)) / lung_mask.sum((1, 2)).clamp(min=1)
    truth = dict(ctr=(heart_d / thorax_d.clamp(min=1)).numpy(), opacity_burden=burden.numpy(),
                 lung_fraction=lung_mask.float().mean((1, 2)).numpy(),
                 zone=np.array([p.opacities[0].lobe if p.opacities else -1 for p in params]),
                 **{d: np.array([d in p.devices for p in params]) for d in DEVICES})
    truth["cardiomegaly"] = reads_as(truth, "cardiomegaly")
    truth["opacity"] = reads_as(truth, "opacity")
    return truth


_MODELS: dict = {}


def slab_model_for(size: int, ct=None) -> SlabModel:
    """The CT's slab model at a spacing fine enough for ``size`` px films (kept in memory)."""
    from cxr_workbench.imaging.ct import default_slab_model
    spacing = 4.0 if size <= 64 else 2.0 if size <= 128 else 1.0
    key = (str(ct), spacing)
    if key not in _MODELS:
        _MODELS[key] = default_slab_model(ct, spacing=spacing)
    return _MODELS[key]


def render_batch(params: list[DRRParams], size: int = 64, model: SlabModel | None = None, ct=None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render DRRs of the CT ``model`` (the shipped CT's by default). Returns (images [N, size, size]
    float32 in [0, 1], truth dict of [N] arrays: ``ctr``, ``opacity_burden``, ``cardiomegaly``,
    ``opacity``, ``lung_fraction``, ``zone`` (lobe index of the first opacity, -1: none) and one per device)."""
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size={size!r}; expected an integer of at least {MIN_SIZE} pixels")
    model = model or slab_model_for(size, ct)
    if len(params) > CHUNK:  # the per-slab maps of a larger batch fall out of the CPU's caches (each chunk validated)
        parts = [render_batch(params[i:i + CHUNK], size, model) for i in range(0, len(params), CHUNK)]
        return np.concatenate([p[0] for p in parts]), {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    for p in params:
        p.validate()
    P = _stack(params)
    with torch.no_grad():
        det = _project(model, P, params, size)
        A = det[:, 0]
        for i, p in enumerate(params):
            if p.devices:
                A[i] += _devices(p, size)
        img = _expose(A, det[:, 1] > LUNG_EDGE_MM, P, params)
    return img.numpy().astype(np.float32), _truth(det, params)


def render(params: DRRParams, size: int = 64, **kwargs) -> tuple[np.ndarray, dict]:
    """One film: (image [size, size], truth of scalars)."""
    imgs, truth = render_batch([params], size, **kwargs)
    return imgs[0], {k: v[0].item() for k, v in truth.items()}
