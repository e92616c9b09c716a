"""Procedural frontal chest-radiograph phantoms with exact ground truth.

A phantom is drawn from explicit parameters (``PhantomParams``) in a normalised anatomical frame
(x to the image right, y down, both in [-1, 1]; the patient's left is on the image right, as on
a PA film), then posed (shift, rotation, scale) and exposed. The anatomy is a sum of soft-edged
densities, higher meaning whiter:

- body envelope with neck, shoulders and lateral soft tissue; breast shadows over the lower zones;
- lung fields with rounded apices, lateral costophrenic angles and diaphragm domes (the right
  hemidiaphragm higher), their depth set by inspiration;
- the cardiac silhouette as a right-atrial arc right of the spine and a larger left-ventricular
  bulge to the image right, the aortic knob above it, a mediastinum tapering up to the neck,
  the trachea and spine;
- posterior ribs curving down laterally, faint anterior ribs curving down medially, clavicles,
  scapular edges (over the lungs on AP-like films), hilar vessels fading towards the periphery.

Disease: cardiomegaly enlarges the cardiac silhouette; opacity is consolidation of variable size
and density, lower-zone predominant, possible in any zone of either lung.

Ground truth, exact for every image: the cardiothoracic ratio as a clinician measures it (maximal
transverse cardiac diameter over maximal internal thoracic diameter, both from the analytic
shapes, so pose does not change it) and the opacity burden (the opacified fraction of the visible
lung area, counted on the rendered grid).

Rendering is batched in PyTorch: many phantoms per call, one tensor op per anatomical part
(``benchmarks/bench_phantom.py`` measures phantoms per second).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from cxr_workbench.imaging.diseases import KINDS, reads_as
from cxr_workbench.imaging.filters import gaussian_blur
from cxr_workbench.settings import check_ranges

__all__ = ["MIN_SIZE", "VERSION", "heart_scale", "Opacity", "RANGES", "PhantomParams", "sample_params",
           "render_batch", "render"]

MAX_BLOBS, MAX_LOBES = 3, 3
MIN_SIZE = 16
VERSION = 2                # bumped whenever the rendering changes (training snapshots record it)

# Heart silhouette in units of its scale s, relative to the heart origin: (cx, cy, a, b, tilt) of
# the right-atrial ellipse and of the left-ventricular ellipse.
_RA = (-0.50, -0.10, 0.42, 0.80, 0.10)
_LV = (0.28, 0.05, 0.80, 0.72, 0.50)


def _half_extent_x(a, b, t):
    return math.sqrt((a * math.cos(t)) ** 2 + (b * math.sin(t)) ** 2)


# Transverse cardiac diameter of the unit-scale heart: leftmost RA edge to rightmost LV edge.
_HEART_UNIT_WIDTH = (_LV[0] + _half_extent_x(*_LV[2:])) - (_RA[0] - _half_extent_x(*_RA[2:]))


def heart_scale(ctr, thorax_hw):
    """Scale of the unit heart whose transverse diameter is ``ctr`` times the thoracic diameter
    (floats or tensors)."""
    return ctr * 2 * thorax_hw / _HEART_UNIT_WIDTH


@dataclass(frozen=True)
class Opacity:
    """One opacity of a phantom: its side, centre, radius, density and irregular outline."""
    side: int            # -1: patient's right lung (image left), +1: patient's left lung (image right)
    u: float             # centre across the hemithorax, 0 medial .. 1 lateral
    v: float             # centre down the lung, 0 apex .. 1 diaphragm
    radius: float        # normalised units
    density: float       # 0..1
    lobes: tuple = ()    # ((du, dv, relative radius), ...): irregular outline, offsets in radii


# Valid range of every scalar parameter: one table, used to validate (and named in errors).
RANGES = dict(
    shift_x=(-0.15, 0.15), shift_y=(-0.15, 0.15), rotation=(-0.2, 0.2), scale=(0.8, 1.2),
    thorax_hw=(0.5, 0.8), lung_top=(-0.9, -0.55), diaphragm=(0.25, 0.65), right_dome_offset=(0.0, 0.12),
    dome_height=(0.03, 0.2), mediastinum_hw=(0.05, 0.14), heart_cy=(0.0, 0.3), heart_shift=(-0.02, 0.15),
    ctr=(0.3, 0.75), soft_tissue=(0.05, 0.25), breast=(0.0, 1.0), rib_spacing=(0.08, 0.16), rib_phase=(0.0, 1.0),
    clavicle_y=(-0.85, -0.55), ap=(0.0, 1.0), gamma=(0.5, 2.0), contrast=(0.6, 1.5), brightness=(-0.2, 0.2),
    blur=(0.0, 2.0), noise=(0.0, 0.06), vessel_angle=(-0.5, 0.5),
)


@dataclass(frozen=True)
class PhantomParams:
    # pose (similarity transform of the whole chest)
    """Everything that makes one phantom: pose, anatomy, disease and image formation."""
    shift_x: float = 0.0
    shift_y: float = 0.0
    rotation: float = 0.0           # radians
    scale: float = 1.0
    # anatomy
    thorax_hw: float = 0.66         # internal thoracic half-width at its widest
    lung_top: float = -0.74         # apex height
    diaphragm: float = 0.44         # dome level of the left hemidiaphragm (inspiration: larger is deeper)
    right_dome_offset: float = 0.05  # the right dome sits this much higher
    dome_height: float = 0.11
    mediastinum_hw: float = 0.085   # half-width of the upper mediastinum
    heart_cy: float = 0.16          # heart origin height
    heart_shift: float = 0.05       # heart origin to the image right of the midline
    ctr: float = 0.44               # cardiothoracic ratio
    soft_tissue: float = 0.14       # chest-wall thickness outside the ribs
    breast: float = 0.0             # breast-shadow strength
    rib_spacing: float = 0.115
    rib_phase: float = 0.0
    clavicle_y: float = -0.70
    ap: float = 0.0                 # 1: AP-like film (clavicles high and flat, scapulae over the lungs)
    vessel_angle: float = 0.0       # rotates the hilar vessel fan
    # image formation
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    blur: float = 0.6               # Gaussian sigma in pixels at 64 px (scaled with size)
    noise: float = 0.015
    noise_seed: int = 0
    opacities: tuple = field(default_factory=tuple)

    def validate(self) -> "PhantomParams":
        """Refuse out-of-range parameters, naming the parameter and its range."""
        check_ranges(self, RANGES, "phantom")
        if len(self.opacities) > MAX_BLOBS:
            raise ValueError(f"phantom has {len(self.opacities)} opacities; expected at most {MAX_BLOBS}")
        for o in self.opacities:
            if o.side not in (-1, 1) or not (0 <= o.u <= 1 and 0 <= o.v <= 1 and 0.02 <= o.radius <= 0.4
                                             and 0 <= o.density <= 1) or len(o.lobes) > MAX_LOBES:
                raise ValueError(f"opacity {o}; expected side +-1, u and v in [0, 1], radius in [0.02, 0.4], "
                                 f"density in [0, 1], at most {MAX_LOBES} lobes")
        return self

    @property
    def heart_scale(self) -> float:
        """Scale of the heart shape that gives the requested CTR."""
        return heart_scale(self.ctr, self.thorax_hw)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_params(rng: np.random.Generator, kind: str = "normal") -> PhantomParams:
    """Draw random phantom parameters of one kind ('normal', 'cardiomegaly', 'opacity')."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    u = rng.uniform
    ap = float(rng.random() < 0.15)  # a small fraction of AP-like films
    ctr = u(0.52, 0.68) if kind == "cardiomegaly" else u(0.36, 0.49)
    opacities = ()
    if kind == "opacity":
        items = []
        for _ in range(rng.integers(1, MAX_BLOBS + 1)):
            zone = rng.choice(3, p=[0.15, 0.25, 0.6])  # upper, middle, lower: lower-zone predominant
            v = float(u(*[(0.12, 0.38), (0.38, 0.62), (0.62, 0.9)][zone]))
            items.append(Opacity(side=int(rng.choice([-1, 1])), u=float(u(0.25, 0.8)), v=v,
                                 radius=float(u(0.05, 0.2)), density=float(u(0.35, 1.0)),
                                 lobes=tuple((float(u(-0.9, 0.9)), float(u(-0.9, 0.9)), float(u(0.4, 0.9)))
                                             for _ in range(rng.integers(0, MAX_LOBES + 1)))))
        opacities = tuple(items)
    return PhantomParams(
        shift_x=u(-0.05, 0.05), shift_y=u(-0.05, 0.05), rotation=u(-0.06, 0.06), scale=u(0.92, 1.06),
        thorax_hw=u(0.60, 0.72), lung_top=u(-0.80, -0.68), diaphragm=u(0.36, 0.54),
        right_dome_offset=u(0.02, 0.08), dome_height=u(0.10, 0.18), mediastinum_hw=u(0.07, 0.10),
        heart_cy=u(0.02, 0.12), heart_shift=u(0.02, 0.08), ctr=ctr, soft_tissue=u(0.09, 0.2),
        breast=float(u(0.3, 1.0) if rng.random() < 0.4 else 0.0), rib_spacing=u(0.10, 0.13),
        rib_phase=u(0.0, 1.0), clavicle_y=u(-0.82, -0.74) if ap else u(-0.74, -0.64), ap=ap,
        vessel_angle=u(-0.3, 0.3), gamma=u(0.8, 1.3), contrast=u(0.85, 1.15), brightness=u(-0.06, 0.06),
        blur=u(0.3, 0.9), noise=u(0.006, 0.03), noise_seed=int(rng.integers(2 ** 31)), opacities=opacities)


# --------------------------------------------------------------------------------------------
# Batched rendering
# --------------------------------------------------------------------------------------------

# exp and sigmoid take a slow path (about 40x on this CPU) where the result underflows to a
# denormal; that far from an edge or a ridge the value is 0 or 1 anyway, so the argument is clipped.
_FAR = 30.0


def _soft(signed: torch.Tensor, edge: float) -> torch.Tensor:
    """Smooth indicator of ``signed < 0`` with an edge of width ``edge``."""
    return (signed / -edge).clamp_(-_FAR, _FAR).sigmoid_()


def _decay(q: torch.Tensor) -> torch.Tensor:
    """``exp(-q)`` for q >= 0, e.g. a Gaussian ridge exp(-d^2)."""
    return q.clamp(max=_FAR).neg_().exp_()


def _ellipse(x, y, cx, cy, a, b, t, edge):
    """Soft inside of tilted ellipses; every argument broadcasts over [N, H, W]."""
    c, s = torch.cos(t), torch.sin(t)
    dx, dy = x - cx, y - cy
    u, v = dx * (c / a) + dy * (s / a), dy * (c / b) - dx * (s / b)  # per-image factors first: fewer passes
    return _soft((u.square_() + v.square_()).add_(1e-12).sqrt_().sub_(1) * torch.minimum(a, b), edge)


def _stack(params: list[PhantomParams]) -> dict[str, torch.Tensor]:
    """Scalar parameters as [N, 1, 1] tensors; opacities padded to MAX_BLOBS x (1 + MAX_LOBES)."""
    out = {f.name: torch.tensor([float(getattr(p, f.name)) for p in params])[:, None, None]
           for f in fields(PhantomParams) if f.name not in ("opacities", "noise_seed")}
    n = len(params)
    blobs = torch.zeros(n, MAX_BLOBS, 1 + MAX_LOBES, 7)  # side, u, v, radius, density, du, dv(+rr in radius)
    for i, p in enumerate(params):
        for j, o in enumerate(p.opacities):
            for k, (du, dv, rr) in enumerate(((0.0, 0.0, 1.0),) + tuple(o.lobes)):
                blobs[i, j, k] = torch.tensor([o.side, o.u, o.v, o.radius * rr, o.density, du * o.radius,
                                               dv * o.radius])
    out["blobs"] = blobs
    return out


def render_batch(params: list[PhantomParams], size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render phantoms. Returns (images [N, size, size] float32 in [0, 1], truth dict of [N] arrays:
    ``ctr``, ``opacity_burden``, ``cardiomegaly``, ``opacity``, ``lung_fraction``)."""
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size={size!r}; expected an integer of at least {MIN_SIZE} pixels")
    for p in params:
        p.validate()
    P = _stack(params)
    A = _chest(P, size)
    density = _add_bones(P, A, A["density"] + 0.22 * _vessels(P, A) * A["air"])
    cover, dens = _consolidation(P, A)
    density = density + 0.32 * dens

    # Image formation: exposure curve, blur, detector grain.
    img = (density / 0.62).clamp(0, 1) ** P["gamma"] * P["contrast"] + P["brightness"] + 0.05
    img = gaussian_blur(img, P["blur"][:, 0, 0] * size / 64)
    gen = torch.Generator()
    grain = torch.stack([torch.randn(size, size, generator=gen.manual_seed(p.noise_seed)) for p in params])
    img = (img + P["noise"] * grain).clamp(0, 1)

    visible = A["air"] > 0.5
    lung_px = visible.sum((1, 2)).clamp_min(1)
    burden = ((cover > 0.5) & visible).sum((1, 2)) / lung_px
    ctr = P["ctr"][:, 0, 0]
    truth = dict(ctr=ctr.numpy().astype(np.float32), opacity_burden=burden.numpy().astype(np.float32),
                 lung_fraction=(lung_px / (size * size)).numpy().astype(np.float32))
    truth.update(cardiomegaly=reads_as(truth, "cardiomegaly"), opacity=reads_as(truth, "opacity"))
    return img.numpy().astype(np.float32), truth


def _chest(P: dict, size: int) -> dict[str, torch.Tensor]:
    """The pose and the soft anatomy: body, lungs, heart, mediastinum, trachea and spine, each
    [N, size, size]; ``density`` their sum, ``air`` the visible lung, and the coordinates and levels
    the other parts are drawn in."""
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    gx, gy = gx[None], gy[None]
    # Inverse pose: image coordinates -> anatomical frame.
    c, s = torch.cos(-P["rotation"]), torch.sin(-P["rotation"])
    x0, y0 = (gx - P["shift_x"]) / P["scale"], (gy - P["shift_y"]) / P["scale"]
    x, y = c * x0 - s * y0, s * x0 + c * y0
    ax = x.abs()
    edge = 1.5 / size  # about a pixel, so shapes stay anti-aliased at every size
    T = P["thorax_hw"]

    # Body: neck, shoulders sloping out, chest wall, soft tissue outside the ribs.
    shoulder_y = P["clavicle_y"] + 0.02
    body_hw = torch.where(y < shoulder_y - 0.12, 0.22 + 0.5 * (y - shoulder_y + 0.35).clamp(0, 1),
                          T + P["soft_tissue"] + 0.08 * ((y - shoulder_y) / 0.5).clamp(0, 1).sqrt() - 0.02)
    body = _soft(ax - body_hw, 3 * edge)

    # Lung fields. u: 0 at the mediastinal edge .. 1 at the lateral chest wall; the apex is rounded,
    # the lateral wall bows out to its widest at mid-height, the dome rises medially and falls to
    # a deep lateral costophrenic angle.
    top = P["lung_top"]
    dia = P["diaphragm"] - torch.where(x < 0, P["right_dome_offset"], 0.0)
    height = dia - top
    rel = ((y - top) / height).clamp(0, 1.2)
    lateral = T * (1 - (1 - rel.clamp(0, 0.9) / 0.9) ** 2).clamp(0, 1).sqrt()  # rounded apex, widest at the base
    med_hw = P["mediastinum_hw"] * (1 + 0.5 * ((y - top) / height).clamp(0, 1))
    u = ((ax - med_hw) / (lateral - med_hw).clamp_min(1e-3)).clamp(-1, 2)
    dome = dia + P["dome_height"] * ((u - 0.42) ** 2 / 0.42 ** 2 - 1).clamp(max=0.6)
    lungs = _soft(ax - lateral, 1.5 * edge) * _soft(med_hw - ax, 2 * edge) * _soft(y - dome, 1.5 * edge) \
        * _soft(top - y, 2 * edge)

    # Heart: right-atrial arc and left-ventricular bulge, scaled to the CTR; hidden under the diaphragm.
    hs = heart_scale(P["ctr"], T)
    hx, hy = P["heart_shift"], P["heart_cy"]
    heart = torch.zeros_like(x)
    for cx, cy, a, b, t in (_RA, _LV):
        ell = _ellipse(x, y, hx + cx * hs, hy + cy * hs, a * hs, b * hs, torch.full_like(hs, t), 1.5 * edge)
        heart = torch.maximum(heart, ell)
    heart = heart * _soft(y - (dia + 0.03), 2 * edge)
    # Aortic knob (image right, above the heart) and a mediastinum tapering up to the neck.
    knob_r = 0.05 + 0.01 * P["ap"]
    knob = _ellipse(x, y, P["mediastinum_hw"] + 0.01, hy - 0.45 * hs - 0.2, knob_r, knob_r, torch.zeros_like(hs),
                    1.5 * edge)
    mediastinum = torch.maximum(_soft(ax - med_hw, 2 * edge) * _soft(y - hy, 4 * edge), knob)
    trachea = _soft((x - 0.01).abs() - 0.03, edge) * _soft(y - (top + 0.38), 3 * edge)
    air = lungs * (1 - torch.maximum(heart, mediastinum))
    density = 0.42 * body - 0.34 * air - 0.10 * trachea * body + 0.015 * heart

    # Spine: a column with faint vertebral bodies, seen through the mediastinum.
    spine = _soft(ax - 0.06, edge) * body
    density = density + spine * (0.03 + 0.015 * torch.cos(2 * math.pi * y / 0.09))
    return dict(x=x, y=y, ax=ax, edge=edge, top=top, dia=dia, hy=hy, body=body, air=air, density=density)


def _vessels(P: dict, A: dict) -> torch.Tensor:
    """Hilar vessels [N, S, S]: a fan of branches per side, fading towards the periphery. In polar
    coordinates about the hilum, a branch at angle a is where (theta - a) * r is small."""
    x, y = A["x"], A["y"]
    vessels = torch.zeros_like(x)
    for sgn in (-1.0, 1.0):
        px, py = sgn * (x - sgn * (P["mediastinum_hw"] + 0.06)), y - (A["hy"] - 0.15)
        r = torch.sqrt(px * px + py * py + 1e-12)
        theta = torch.atan2(py, px)
        fade = torch.exp(-r / 0.22) * _soft(r - 0.6, 0.03)
        sharp = r / (0.02 - 0.02 * r).clamp_min(0.006)  # branches narrow towards the periphery
        branches = torch.zeros_like(x)
        for k in range(5):
            branches += _decay(((theta - (-0.9 + 0.45 * k + P["vessel_angle"])) * sharp).square_())
        vessels += branches * fade
    return vessels


def _add_bones(P: dict, A: dict, density: torch.Tensor) -> torch.Tensor:
    """``density`` [N, S, S] with ribs, clavicles, scapulae and breast shadows added (in this order:
    the sums are the same to the last bit as ever)."""
    y, ax, edge, top, dia, T, ap = A["y"], A["ax"], A["edge"], A["top"], A["dia"], P["thorax_hw"], P["ap"]
    # Posterior ribs curve down laterally; anterior ribs (fainter) curve down medially.
    cage = _soft(ax - (T + 0.03), 2 * edge) * _soft(0.05 - ax, edge)
    span = (y > top - 0.08) & (y < dia + 0.15)
    post = (y - top + 0.05 - 0.5 * (ax / T) ** 2 + 0.18 * (ax / T)) / P["rib_spacing"] - P["rib_phase"]
    ribs = _decay(((torch.remainder(post, 1.0) - 0.5) / 0.16) ** 2)
    ant = (y - top - 0.2 + 0.22 * (ax / T) ** 2) / (1.4 * P["rib_spacing"]) - P["rib_phase"]
    ribs_ant = _decay(((torch.remainder(ant, 1.0) - 0.5) / 0.12) ** 2) * (ax > 0.15)
    density = density + (0.09 * ribs + 0.03 * ribs_ant) * cage * span

    # Clavicles (flatter and higher on AP films) and scapular edges (over the lungs on AP films).
    clav_c = P["clavicle_y"] - (0.25 - 0.17 * ap) * (ax - 0.08) + 0.12 * (ax - 0.35) ** 2
    clav = _decay(((y - clav_c) / 0.028) ** 2) * (ax > 0.07) * _soft(ax - (T + 0.12), 2 * edge)
    scap_x = T + 0.04 - ap * 0.16 - 0.06 * ((y - top) / 0.5).clamp(0, 1)
    scap = _soft(scap_x - ax, 3 * edge) * _soft(ax - (T + 0.15), 2 * edge) * _soft(y - (top + 0.55), 6 * edge) \
        * _soft(P["clavicle_y"] + 0.05 - y, -6 * edge)
    density = density + 0.2 * clav + 0.05 * scap

    # Breast shadows over the lower zones.
    breast = _decay(((ax - 0.45) / 0.3) ** 2 + ((y - dia + 0.05) / 0.22) ** 2) * (y < dia + 0.05)
    return density + 0.08 * P["breast"] * breast * A["body"]


def _consolidation(P: dict, A: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Consolidation (cover, density), each [N, S, S]: soft blobs of each lobe, inside the visible
    lung only; computed only for the phantoms that have that blob or lobe (most have none)."""
    x, y, top, air, T = A["x"], A["y"], A["top"], A["air"], P["thorax_hw"]
    side = torch.where(x < 0, -1.0, 1.0)
    B = P["blobs"]
    cover = torch.zeros_like(x)
    dens = torch.zeros_like(x)
    for j in range(MAX_BLOBS):
        idx = (B[:, j, 0, 4] > 0).nonzero().flatten()
        if not len(idx):
            continue
        b = B[idx, j][:, :, :, None, None]  # [m, lobes, 7, 1, 1]
        xs, ys, mh = x[idx], y[idx], P["mediastinum_hw"][idx]
        top_j, dia_j = top[idx], P["diaphragm"][idx]
        cy = top_j + b[:, 0, 2] * (dia_j - top_j)  # v down the lung
        cx = b[:, 0, 0] * (mh * 1.4 + b[:, 0, 1] * (T[idx] - mh * 1.4))  # u across the hemithorax
        blob = torch.zeros_like(xs)
        for k in range(1 + MAX_LOBES):
            has = b[:, k, 3] > 0
            if not has.any():
                continue
            r = b[:, k, 3].clamp_min(1e-3)
            dist = torch.sqrt((xs - cx - b[:, k, 5]) ** 2 + (ys - cy - b[:, k, 6]) ** 2 + 1e-12)
            blob = torch.maximum(blob, _soft(dist - r, 0.02) * has)  # consolidation has ill-defined margins
        blob = blob * (side[idx] == b[:, 0, 0])
        cover[idx] = torch.maximum(cover[idx], blob)
        dens[idx] = torch.maximum(dens[idx], blob * b[:, 0, 4])
    return cover * air, dens * air


def render(params: PhantomParams, size: int = 64) -> tuple[np.ndarray, dict]:
    """Render one phantom. Returns (image [size, size] float32 in [0, 1], ground truth dict)."""
    imgs, truth = render_batch([params], size)
    return imgs[0], {k: v[0].item() for k, v in truth.items()}
