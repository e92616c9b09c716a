"""Edits that keep the film: what the generator cannot draw (a line, a marker, the film's own
texture) stays, and only the edit's change enters the box.

An edit of an inverted film is the reconstruction moved along a trajectory; the reconstruction
misses whatever the generator cannot draw. A film-preserving edit adds the trajectory's change
from its first point (the reconstruction) to the film itself, inside a soft-edged box: every pixel
outside the box is the film's, exactly. The residual (film minus reconstruction) shows what the
generator did not draw; a large residual inside the box means the edit is made on a chest that
differs from the film where it matters.
"""
from __future__ import annotations

import torch

from cxr_workbench.imaging.masks import Box

__all__ = ["FEATHER", "RESIDUAL_WARNING", "keep_film", "residual", "residual_in_box", "residual_warnings"]

FEATHER = 3.0            # px of the box's soft edge at 64 px (scaled with the resolution)
RESIDUAL_WARNING = 0.1   # mean |film - reconstruction| inside the box on the [-1, 1] range: 5 % of it


def keep_film(films: torch.Tensor, sequences: torch.Tensor, box: Box, feather: float = FEATHER) -> torch.Tensor:
    """Film-preserving edits: ``films`` [N, C, H, W] plus each sequence's change from its first point
    (``sequences`` [N, T, C, H, W], the reconstruction then the edits), inside ``box`` with an edge
    of ``feather`` pixels at 64 px. Returns [N, T, C, H, W] in [-1, 1]; its first point is the film,
    and outside the box every point is the film exactly."""
    if sequences.ndim != 5 or films.shape != sequences[:, 0].shape:
        raise ValueError(f"films {tuple(films.shape)} and sequences {tuple(sequences.shape)}; expected [N, C, H, W] "
                         "and [N, T, C, H, W] of the same films")
    mask = box.soft_mask(feather * box.resolution / 64, device=films.device)
    change = (sequences - sequences[:, :1]) * mask
    return torch.where(mask > 0, (films[:, None] + change).clamp(-1, 1), films[:, None].expand_as(sequences))


def residual(films: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """What the generator did not draw: film minus reconstruction, [N, C, H, W] in [-2, 2]."""
    return films - reconstructions.to(films)


def residual_in_box(films: torch.Tensor, reconstructions: torch.Tensor, box: Box) -> torch.Tensor:
    """Mean |residual| inside the box per film [N], on the [-1, 1] range."""
    mask = box.mask(films.device).bool()
    return residual(films, reconstructions).abs()[..., mask].flatten(1).mean(1)


def residual_warnings(names, inside, limit: float = RESIDUAL_WARNING) -> list[str]:
    """One line per film whose residual inside the box (``residual_in_box``, ``inside`` [N]) exceeds
    ``limit``."""
    return [f"{name}: the reconstruction differs from the film inside the box by {float(v):.3f} on average "
            f"(above {limit}); the edit is made on a chest that differs there: tune the generator (--tune) "
            "or keep the film (--keep-film)" for name, v in zip(names, inside) if float(v) > limit]
