"""The diseases the workbench edits, in one table: the reading that measures each, the threshold
above which that reading means the disease, the sign of the in-box change it causes, and the box
it is edited in by default (paper Table 2)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = ["Disease", "DISEASES", "KINDS", "check_disease", "reads_as", "reads_normal"]


@dataclass(frozen=True)
class Disease:
    """One disease of the table: its reading, threshold, sign, default box and where it occurs."""
    name: str
    reading: str      # the phantom truth / oracle output that measures it
    threshold: float  # reading > threshold means the disease
    sign: int         # +1: the box brightens as the disease grows (a heart covering dark lung, an opacity)
    box: str          # the preset box (imaging.masks.PRESETS) it is edited in by default
    description: str
    # Varied sets (augment --vary-box): preset boxes where the disease occurs, with weights, and
    # the jitter of each reference's box: centre shift (fraction of the side), side scale range.
    zones: tuple[tuple[str, float], ...] = ()
    jitter: tuple[float, float, float] = (0.0, 1.0, 1.0)


DISEASES: dict[str, Disease] = {
    "cardiomegaly": Disease("cardiomegaly", reading="ctr", threshold=0.5, sign=+1, box="heart",
                            description="cardiothoracic ratio above 0.5", zones=(("heart", 1.0),),
                            jitter=(0.08, 0.85, 1.1)),
    # The phantoms' opacities: either lung, upper / middle / lower zone with 0.15 / 0.25 / 0.6
    # (phantom.sample_params); the middle zone's share is split between the upper and lower boxes.
    "opacity": Disease("opacity", reading="opacity_burden", threshold=0.01, sign=+1, box="lung_lower_right",
                       description="more than 1 % of the lung area opacified",
                       zones=(("lung_upper_right", 0.1375), ("lung_upper_left", 0.1375),
                              ("lung_lower_right", 0.3625), ("lung_lower_left", 0.3625)),
                       jitter=(0.15, 0.7, 1.15)),
}


KINDS = ("normal",) + tuple(DISEASES)   # a film's kind: index into this for the oracle's kind head


def check_disease(disease: str) -> str:
    """``disease`` if it is in the table, else a one-line error naming the choices."""
    if not isinstance(disease, str) or disease not in DISEASES:  # a list read from a file is unhashable
        raise ValueError(f"disease={disease!r:.60}; expected one of {sorted(DISEASES)}")
    return disease


def reads_as(readings: Mapping[str, np.ndarray], disease: str) -> np.ndarray:
    """Where ``readings`` (truth or oracle outputs by name, arrays [N]) mean ``disease``: bool [N]."""
    d = DISEASES[check_disease(disease)]
    return np.asarray(readings[d.reading]) > d.threshold


def reads_normal(readings: Mapping[str, np.ndarray]) -> np.ndarray:
    """Where ``readings`` mean none of the diseases: bool [N]."""
    return ~np.any([reads_as(readings, d) for d in DISEASES], axis=0)
