"""The region of interest: a rectangle in image pixels, validated, with presets for the shipped model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cxr_workbench.imaging.diseases import DISEASES, check_disease

__all__ = ["MIN_SIDE", "PRESETS", "BOX_FIELDS", "Box", "box_masks", "preset", "BoxChoice", "choose_box", "load_box",
           "check_box", "jittered_box", "reference_box"]

MIN_SIDE = 4  # pixels; a smaller box has too few pixels for a stable image loss

# Presets in fractions of the image (x0, y0, x1, y1), drawn on the phantom anatomy (phantom.py).
# Sides are the patient's: "right" lung is on the image left, as on a PA film.
PRESETS: dict[str, dict] = {
    "heart": dict(fractions=(0.30, 0.42, 0.80, 0.74), disease="cardiomegaly",
                  description="heart borders: cardiomegaly widens the cardiac silhouette"),
    "lung_lower_right": dict(fractions=(0.16, 0.46, 0.42, 0.70), disease="opacity",
                             description="patient's right lower zone (image left)"),
    "lung_lower_left": dict(fractions=(0.58, 0.46, 0.84, 0.70), disease="opacity",
                            description="patient's left lower zone (image right)"),
    "lung_upper_right": dict(fractions=(0.16, 0.18, 0.42, 0.42), disease="opacity",
                             description="patient's right upper zone (image left)"),
    "lung_upper_left": dict(fractions=(0.58, 0.18, 0.84, 0.42), disease="opacity",
                            description="patient's left upper zone (image right)"),
}

BOX_FIELDS = ("x0", "y0", "x1", "y1", "resolution")


@dataclass(frozen=True)
class Box:
    """Rectangle ``[x0, x1) x [y0, y1)`` in pixels of an image of size ``resolution``."""

    x0: int
    y0: int
    x1: int
    y1: int
    resolution: int

    def __post_init__(self):
        for name in ("x0", "y0", "x1", "y1", "resolution"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"Box.{name}={v!r}; expected an int (pixels)")
        r = self.resolution
        if r < MIN_SIDE:
            raise ValueError(f"Box.resolution={r}; expected at least {MIN_SIDE}")
        if not (0 <= self.x0 < self.x1 <= r and 0 <= self.y0 < self.y1 <= r):
            raise ValueError(f"Box({self.x0}, {self.y0}, {self.x1}, {self.y1}) is empty or outside the "
                             f"{r}x{r} image; expected 0 <= x0 < x1 <= {r} and 0 <= y0 < y1 <= {r}")
        if self.width < MIN_SIDE or self.height < MIN_SIDE:
            raise ValueError(f"Box({self.x0}, {self.y0}, {self.x1}, {self.y1}) is {self.width}x{self.height} "
                             f"pixels; expected at least {MIN_SIDE} each way")
        if self.width == r and self.height == r:
            raise ValueError("Box covers the whole image; the method needs pixels outside it to keep still")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @classmethod
    def from_fractions(cls, fx0: float, fy0: float, fx1: float, fy1: float, resolution: int) -> "Box":
        """Box from fractions of the image side, rounded to pixels."""
        for name, v in zip(("fx0", "fy0", "fx1", "fy1"), (fx0, fy0, fx1, fy1)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name}={v}; expected a fraction in [0, 1]")
        return cls(round(fx0 * resolution), round(fy0 * resolution), round(fx1 * resolution),
                   round(fy1 * resolution), resolution)

    def fractions(self) -> tuple[float, float, float, float]:
        r = self.resolution
        return self.x0 / r, self.y0 / r, self.x1 / r, self.y1 / r

    def at_resolution(self, resolution: int) -> "Box":
        return Box.from_fractions(*self.fractions(), resolution)

    def mask(self, device=None) -> torch.Tensor:
        """Pixel mask [R, R], 1.0 inside the box."""
        m = torch.zeros(self.resolution, self.resolution, device=device)
        m[self.y0:self.y1, self.x0:self.x1] = 1.0
        return m

    def soft_mask(self, feather: float, device=None) -> torch.Tensor:
        """Pixel mask [R, R]: 0 outside the box, rising smoothly over ``feather`` pixels from the
        box's edge to 1 inside (0: the hard mask). Nothing outside the box is touched."""
        if feather <= 0:
            return self.mask(device)
        c = torch.arange(self.resolution, dtype=torch.float32, device=device) + 0.5  # pixel centres
        dx = torch.minimum(c - self.x0, self.x1 - c)
        dy = torch.minimum(c - self.y0, self.y1 - c)
        t = (torch.minimum(dy[:, None], dx[None, :]) / feather).clamp(0, 1)
        return t * t * (3 - 2 * t)  # smoothstep

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path, overwrite: bool = True) -> Path:
        from cxr_workbench.io import write_json
        return write_json(path, self.to_dict(), overwrite=overwrite)

    @classmethod
    def from_dict(cls, d, source: str = "box") -> "Box":
        """A box from a dict of integer pixels ``x0, y0, x1, y1, resolution``; errors name ``source``
        and the field."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: holds {type(d).__name__} {d!r:.60}; expected an object with "
                             f"{', '.join(BOX_FIELDS)}")
        missing = [k for k in BOX_FIELDS if k not in d]
        if missing:
            raise ValueError(f"{source}: lacks {missing}; expected {', '.join(BOX_FIELDS)} (integer pixels)")
        values = []
        for k in BOX_FIELDS:
            v = d[k]
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{source}: field {k!r} is {v!r}; expected an integer number of pixels")
            values.append(v)
        try:
            return cls(*values)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path) -> "Box":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"box file {path}: cannot be read ({e})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"box file {path}: not valid JSON ({e}); expected an object with "
                             f"{', '.join(BOX_FIELDS)}") from None
        return cls.from_dict(data, source=f"box file {path}")


def box_masks(box: Box | list[Box], R: int, resolution: int, device=None) -> torch.Tensor:
    """The masks of one box for all R references, or of one box per reference: [1 or R, 1, H, W],
    1.0 inside. Made once per run; a count or a resolution that does not fit is refused."""
    boxes = [box] if isinstance(box, Box) else list(box)
    if len(boxes) not in (1, R):
        raise ValueError(f"{len(boxes)} boxes for {R} references; expected one, or one per reference")
    for b in boxes:
        if b.resolution != resolution:
            raise ValueError(f"box is for {b.resolution} px but the images are {resolution} px; use "
                             "box.at_resolution()")
    return torch.stack([b.mask(device=device) for b in boxes])[:, None]


def preset(name: str, resolution: int) -> Box:
    """A named preset box (see ``PRESETS``) at the given resolution."""
    if name not in PRESETS:
        raise ValueError(f"box preset {name!r} unknown; expected one of {sorted(PRESETS)}")
    return Box.from_fractions(*PRESETS[name]["fractions"], resolution)


@dataclass(frozen=True)
class BoxChoice:
    """A box as a request names it, read and checked once, with the disease an edit of it shows: a
    preset (made at the generator's resolution by ``at``) or a Box read from a file or drawn."""

    name: str               # the preset or file it came from; "custom" for a drawn Box
    disease: str
    box: Box | None = None  # None for a preset

    def at(self, resolution: int) -> Box:
        """The box at ``resolution`` px."""
        return _at(self.name, self.box, resolution)


def choose_box(spec, disease: str | None = None) -> BoxChoice:
    """Read ``spec`` (a preset name, a box JSON file, a Box, a BoxChoice; None: ``disease``'s
    preset) once, with the disease its edit shows: ``disease`` when given, else the preset's; a
    custom box must say which disease it is for."""
    if isinstance(spec, BoxChoice):
        return spec if disease in (None, spec.disease) else BoxChoice(spec.name, check_disease(disease), spec.box)
    if spec is None:
        if disease is None:
            raise ValueError("box=None and disease=None; expected a box, a disease, or both")
        spec = DISEASES[check_disease(disease)].box
    name, box = _read_spec(spec)
    if disease is not None:
        disease = check_disease(disease)
    elif box is None:
        disease = PRESETS[name]["disease"]
    else:
        raise ValueError(f"box={name} is not a preset, so its disease is unknown; give one of {sorted(DISEASES)} "
                         "(--disease)")
    return BoxChoice(name, disease, box)


def load_box(spec, resolution: int) -> Box:
    """A Box, a preset name (``heart``, ``lung_lower_left`` ...) or a box JSON file, at ``resolution``."""
    return _at(*_read_spec(spec), resolution)


def check_box(spec) -> str:
    """A preset name, or a box JSON file read and checked at its own resolution (where it will be
    used is not known yet: an app's generator, say); returns the spec."""
    _read_spec(spec)
    return spec


def _at(name: str, box: Box | None, resolution: int) -> Box:
    if box is None:
        return preset(name, resolution)
    return box if box.resolution == resolution else box.at_resolution(resolution)


def _read_spec(spec) -> tuple[str, Box | None]:
    """(name, Box) of a Box or a box file; (name, None) of a preset."""
    if isinstance(spec, BoxChoice):
        return spec.name, spec.box
    if isinstance(spec, Box):
        return "custom", spec
    if isinstance(spec, (str, Path)) and str(spec) in PRESETS:
        return str(spec), None
    if isinstance(spec, (str, Path)) and Path(spec).is_file():
        return str(spec), Box.load(spec)
    raise ValueError(f"box={spec!r:.80}; expected a preset ({', '.join(PRESETS)}) or a box .json file")


def jittered_box(box: Box, rng, shift: float, scale: tuple[float, float]) -> Box:
    """``box`` moved by up to ``shift`` of its sides and each side scaled by a factor drawn from
    ``scale``, kept inside the image and at least ``MIN_SIDE`` px (numpy ``rng``)."""
    r = box.resolution
    w, h = (max(MIN_SIDE, min(r - 1, round(side * rng.uniform(*scale)))) for side in (box.width, box.height))
    cx = (box.x0 + box.x1) / 2 + rng.uniform(-shift, shift) * box.width
    cy = (box.y0 + box.y1) / 2 + rng.uniform(-shift, shift) * box.height
    x0 = min(max(round(cx - w / 2), 0), r - w)
    y0 = min(max(round(cy - h / 2), 0), r - h)
    return Box(x0, y0, x0 + w, y0 + h, r)


def reference_box(disease: str, reference: int, resolution: int, salt: int = 0) -> tuple[str, Box]:
    """The zone and box of one reference of a varied set: a zone where ``disease`` occurs, drawn
    with its weight (``diseases.Disease.zones``), then jittered; the same for the same reference,
    disease and ``salt`` (the set's seed)."""
    spec = DISEASES[check_disease(disease)]
    rng = np.random.default_rng([int(reference), int(salt), sorted(DISEASES).index(disease)])
    names, weights = zip(*spec.zones)
    zone = names[rng.choice(len(names), p=np.asarray(weights) / sum(weights))]
    shift, lo, hi = spec.jitter
    return zone, jittered_box(preset(zone, resolution), rng, shift, (lo, hi))
