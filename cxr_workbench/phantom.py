"""Procedural frontal chest-radiograph phantoms with ground truth.

A phantom is drawn from explicit parameters (``PhantomParams``) in a normalised frame
(x right, y down, both in [-1, 1]; the patient's left is on the image right, as on a PA film).
Anatomy is a sum of soft-edged densities (body envelope, lungs subtracted, heart, mediastinum,
spine, ribs, clavicles, sub-diaphragmatic soft tissue); disease adds a wider heart
(cardiomegaly) or soft bright patches inside a lung (opacity). The density map is mapped to
brightness with a random exposure, blurred and given quantum noise.

Ground truth for every image: the cardiothoracic ratio (heart width / inner thoracic width,
both horizontal extents, invariant to the pose similarity transform) and the opacity burden
(mean opacity over lung pixels, 0 for a clear chest).

No library renders chest phantoms, hence this module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

KINDS = ("normal", "cardiomegaly", "opacity")
CTR_THRESHOLD = 0.5  # cardiomegaly when the cardiothoracic ratio exceeds this


@dataclass(frozen=True)
class Opacity:
    side: int                      # -1: patient's right lung (image left), +1: left lung
    u: float                       # centre across the lung, in lung half-widths (-1..1, medial->lateral)
    v: float                       # centre down the lung, in lung half-heights (-1 apex .. 1 base)
    radius: float                  # blob radius, normalised units
    density: float                 # peak density added (0..1)
    lobes: tuple = ()              # ((du, dv, relative radius), ...) irregular sub-blobs


@dataclass(frozen=True)
class PhantomParams:
    # pose (similarity transform of the whole chest)
    shift_x: float = 0.0
    shift_y: float = 0.0
    rotation: float = 0.0          # radians
    scale: float = 1.0
    # anatomy
    body_width: float = 0.95       # half-width of the body envelope
    lung_sep: float = 0.32         # |x| of each lung centre
    lung_width: float = 0.27       # lung half-width
    lung_top: float = -0.72        # apex height
    lung_bottom: float = 0.42      # diaphragm level at the lung centre
    dome_height: float = 0.12      # how much the dome rises medially
    right_dome_offset: float = -0.03  # the right hemidiaphragm usually sits higher
    heart_cx: float = 0.08         # heart centre x (patient's left of midline)
    heart_cy: float = 0.13
    heart_height: float = 0.27     # vertical semi-axis
    heart_tilt: float = 0.25       # radians
    ctr: float = 0.45              # cardiothoracic ratio
    mediastinum_width: float = 0.11
    rib_spacing: float = 0.115
    rib_phase: float = 0.0
    clavicle_y: float = -0.66
    # image formation
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    blur: float = 0.8              # Gaussian sigma in pixels at 64 px (scaled with size)
    noise: float = 0.015
    noise_seed: int = 0
    opacities: tuple = field(default_factory=tuple)

    @property
    def thoracic_width(self) -> float:
        return 2 * (self.lung_sep + self.lung_width)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_params(rng: np.random.Generator, kind: str = "normal") -> PhantomParams:
    """Draw random phantom parameters of one kind ('normal', 'cardiomegaly', 'opacity')."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    u = rng.uniform
    ctr = u(0.52, 0.66) if kind == "cardiomegaly" else u(0.36, 0.48)
    opacities = ()
    if kind == "opacity":
        items = []
        for _ in range(rng.integers(1, 4)):
            lobes = tuple((float(u(-0.5, 0.5)), float(u(-0.5, 0.5)), float(u(0.4, 0.9)))
                          for _ in range(rng.integers(1, 4)))
            items.append(Opacity(side=int(rng.choice([-1, 1])), u=float(u(-0.3, 0.6)),
                                 v=float(u(-0.5, 0.55)), radius=float(u(0.07, 0.15)),
                                 density=float(u(0.55, 1.0)), lobes=lobes))
        opacities = tuple(items)
    return PhantomParams(
        shift_x=u(-0.04, 0.04), shift_y=u(-0.04, 0.04), rotation=u(-0.05, 0.05), scale=u(0.95, 1.05),
        body_width=u(0.88, 0.98), lung_sep=u(0.29, 0.34), lung_width=u(0.24, 0.29),
        lung_top=u(-0.78, -0.66), lung_bottom=u(0.36, 0.48), dome_height=u(0.08, 0.16),
        right_dome_offset=u(-0.06, 0.0), heart_cx=u(0.05, 0.11), heart_cy=u(0.1, 0.16),
        heart_height=u(0.24, 0.3), heart_tilt=u(0.15, 0.35), ctr=ctr,
        mediastinum_width=u(0.09, 0.13), rib_spacing=u(0.105, 0.125), rib_phase=u(0.0, 1.0),
        clavicle_y=u(-0.7, -0.62), gamma=u(0.8, 1.25), contrast=u(0.9, 1.1),
        brightness=u(-0.05, 0.05), blur=u(0.5, 1.0), noise=u(0.008, 0.025),
        noise_seed=int(rng.integers(2 ** 31)), opacities=opacities)


def _soft(signed: np.ndarray, edge: float) -> np.ndarray:
    """Smooth indicator of ``signed < 0`` with an edge of width ``edge``."""
    return 0.5 * (1 - np.tanh(signed / edge))


def _heart_semi_axes(p: PhantomParams) -> tuple[float, float]:
    """Horizontal semi-axis giving the requested horizontal half-extent after tilting."""
    half_extent = p.ctr * p.thoracic_width / 2
    b, t = p.heart_height, p.heart_tilt
    a2 = (half_extent ** 2 - (b * np.sin(t)) ** 2) / np.cos(t) ** 2
    if a2 <= 0:
        raise ValueError(f"ctr={p.ctr} is too small for heart_height={b} and tilt={t}")
    return float(np.sqrt(a2)), b


def _lung_mask(p: PhantomParams, x: np.ndarray, y: np.ndarray, side: int, edge: float):
    """Soft lung field of one side, its frame coordinates (u across, v down) and hard mask."""
    xc = side * p.lung_sep
    yc = (p.lung_top + p.lung_bottom) / 2
    a, b = p.lung_width, (p.lung_bottom - p.lung_top) / 2 * 1.15
    lv = (y - yc) / b
    lu = (x - xc) / (a * (0.88 + 0.14 * np.clip(lv, -1, 1))) * side  # wider at the base; > 0 lateral
    shape = np.abs(lu) ** 2.2 + np.abs(lv) ** 2.0 - 1  # superellipse, < 0 inside
    # Diaphragm dome: highest medially-centred, falls to the costophrenic angle laterally.
    base = p.lung_bottom + (p.right_dome_offset if side < 0 else 0.0)
    dome = base - p.dome_height * (1 - np.clip(lu, -1.2, 1.2) ** 2)
    mask = _soft(shape * 0.5 * min(a, b), edge) * _soft(y - dome, edge)
    return mask, lu, lv


def render(params: PhantomParams, size: int = 64) -> tuple[np.ndarray, dict]:
    """Render one phantom. Returns (image [size, size] float32 in [0, 1], ground truth dict)."""
    if size < 16:
        raise ValueError(f"size={size}; expected at least 16 pixels")
    p = params
    lin = (np.arange(size) + 0.5) / size * 2 - 1
    gx, gy = np.meshgrid(lin, lin)
    # Inverse pose: image coordinates -> anatomical frame.
    c, s = np.cos(-p.rotation), np.sin(-p.rotation)
    x0, y0 = (gx - p.shift_x) / p.scale, (gy - p.shift_y) / p.scale
    x, y = c * x0 - s * y0, s * x0 + c * y0
    edge = 1.5 / size  # ~ a pixel, so shapes stay anti-aliased at any size
    ax = np.abs(x)

    # Body envelope, narrowing to the shoulders and neck at the top.
    half_w = p.body_width * np.sqrt(np.clip(1 - ((y - 0.3) / 1.45) ** 2, 0, 1))
    body = _soft(ax - half_w, 3 * edge)

    lungs = np.zeros_like(x)
    opacity = np.zeros_like(x)
    for side in (-1, 1):
        mask, lu, lv = _lung_mask(p, x, y, side, 2 * edge)
        lungs = np.maximum(lungs, mask)
        for o in p.opacities:
            if o.side != side:
                continue
            blob = np.zeros_like(x)
            for du, dv, rr in ((0.0, 0.0, 1.0),) + tuple(o.lobes):
                cu, cv = o.u + du * o.radius / p.lung_width, o.v + dv * o.radius / p.lung_width
                d2 = ((lu - cu) * p.lung_width) ** 2 + ((lv - cv) * p.lung_width) ** 2
                blob = np.maximum(blob, np.exp(-d2 / (2 * (o.radius * rr) ** 2)))
            opacity = np.maximum(opacity, o.density * blob * mask)

    # Heart: tilted ellipse whose horizontal extent is ctr * thoracic width.
    a, b = _heart_semi_axes(p)
    ct, st = np.cos(p.heart_tilt), np.sin(p.heart_tilt)
    hx, hy = x - p.heart_cx, y - p.heart_cy
    hu, hv = (ct * hx + st * hy) / a, (-st * hx + ct * hy) / b
    heart = _soft((np.sqrt(hu ** 2 + hv ** 2) - 1) * min(a, b), 1.5 * edge)
    heart *= _soft(y - (p.lung_bottom + 0.02), 2 * edge)  # hidden below the diaphragm

    # Mediastinum (aortic knob and great vessels) above the heart, and the spine.
    med_w = p.mediastinum_width * (1 + 0.3 * np.clip((y - p.lung_top) / 0.6, 0, 1))
    mediastinum = _soft(np.abs(x - 0.02) - med_w, 2 * edge) * _soft(y - p.heart_cy, 6 * edge)
    mediastinum *= _soft(-(y - p.lung_top + 0.1), 4 * edge)
    spine = _soft(ax - 0.055, edge) * body
    # Heart and mediastinum lie in front of the lungs and hide the air behind them.
    air = lungs * (1 - np.maximum(heart, mediastinum))
    density = 0.45 * body - 0.33 * air + 0.06 * heart + 0.06 * mediastinum
    density += spine * (0.07 + 0.03 * np.cos(2 * np.pi * y / 0.085))

    # Ribs: posterior arcs per side, visible over the thorax.
    thorax = _soft(ax - (p.lung_sep + p.lung_width + 0.06), 2 * edge) * (ax > 0.06)
    rib_y = y - p.lung_top + 0.08 * ax - 0.45 * (ax - 0.1) ** 2
    phase = (rib_y / p.rib_spacing - p.rib_phase) % 1.0
    ribs = np.exp(-((phase - 0.5) * p.rib_spacing / 0.018) ** 2) * thorax
    ribs *= (y > p.lung_top - 0.05) * (y < p.lung_bottom + 0.05)
    density += 0.1 * ribs

    # Clavicles: from the sternal notch up and out to the shoulders.
    clav_c = p.clavicle_y - 0.22 * (ax - 0.08)
    clav = np.exp(-((y - clav_c) / 0.026) ** 2) * (ax > 0.07) * (ax < 0.62)
    density += 0.18 * clav

    density += 0.4 * opacity

    # Image formation: exposure curve, blur, quantum noise.
    img = np.clip(density, 0, None) / 0.8
    img = np.clip(img, 0, 1) ** p.gamma * p.contrast + p.brightness + 0.04
    img = gaussian_filter(img, p.blur * size / 64)
    img = img + np.random.default_rng(p.noise_seed).normal(0, p.noise, img.shape)
    img = np.clip(img, 0, 1).astype(np.float32)

    lung_area = lungs > 0.5
    burden = float(opacity[lung_area].mean()) if lung_area.any() else 0.0
    truth = dict(ctr=float(p.ctr), opacity_burden=burden,
                 cardiomegaly=bool(p.ctr > CTR_THRESHOLD), opacity=bool(len(p.opacities) > 0))
    return img, truth


def kinds_grid(per_kind: int = 6, size: int = 128, seed: int = 0) -> tuple[np.ndarray, list[list[dict]]]:
    """One row of ``per_kind`` phantoms per kind (normal, cardiomegaly, opacity): a float image
    [len(KINDS) * size, per_kind * size] in [0, 1] and the ground truth of every tile, row by row."""
    rng = np.random.default_rng(seed)
    rows, truths = [], []
    for kind in KINDS:
        tiles = [render(sample_params(rng, kind), size) for _ in range(per_kind)]
        rows.append(np.concatenate([img for img, _ in tiles], 1))
        truths.append([truth for _, truth in tiles])
    return np.concatenate(rows), truths
