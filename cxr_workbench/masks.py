"""The region of interest: a rectangle in image pixels, validated, with presets for the shipped model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

MIN_SIDE = 4  # pixels; a smaller box has too few pixels for a stable image loss

# Presets in fractions of the image (x0, y0, x1, y1), drawn on the phantom anatomy (phantom.py).
# Sides are the patient's: "right" lung is on the image left, as on a PA film.
# sign: +1 when the disease brightens the box (heart grows over dark lung; opacity whitens).
PRESETS: dict[str, dict] = {
    "heart": dict(fractions=(0.30, 0.42, 0.80, 0.74), disease="cardiomegaly", sign=+1,
                  description="heart borders: cardiomegaly widens the cardiac silhouette"),
    "lung_lower_right": dict(fractions=(0.16, 0.46, 0.42, 0.70), disease="opacity", sign=+1,
                             description="patient's right lower zone (image left)"),
    "lung_lower_left": dict(fractions=(0.58, 0.46, 0.84, 0.70), disease="opacity", sign=+1,
                            description="patient's left lower zone (image right)"),
    "lung_upper_right": dict(fractions=(0.16, 0.18, 0.42, 0.42), disease="opacity", sign=+1,
                             description="patient's right upper zone (image left)"),
    "lung_upper_left": dict(fractions=(0.58, 0.18, 0.84, 0.42), disease="opacity", sign=+1,
                            description="patient's left upper zone (image right)"),
}


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

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path, overwrite: bool = True) -> Path:
        from .io import write_json
        return write_json(path, self.to_dict(), overwrite=overwrite)

    @classmethod
    def from_dict(cls, d: dict) -> "Box":
        missing = {"x0", "y0", "x1", "y1", "resolution"} - set(d)
        if missing:
            raise ValueError(f"box JSON lacks {sorted(missing)}; expected x0, y0, x1, y1, resolution")
        return cls(*(int(d[k]) for k in ("x0", "y0", "x1", "y1", "resolution")))

    @classmethod
    def load(cls, path) -> "Box":
        return cls.from_dict(json.loads(Path(path).read_text()))


def preset(name: str, resolution: int) -> Box:
    """A named preset box (see ``PRESETS``) at the given resolution."""
    if name not in PRESETS:
        raise ValueError(f"box preset {name!r} unknown; expected one of {sorted(PRESETS)}")
    return Box.from_fractions(*PRESETS[name]["fractions"], resolution)
