"""The plan of an edit: a box, the disease it shows and the direction u, resolved once from what a
request names (a preset or box file, a disease, a direction spec)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cxr_workbench.imaging.masks import Box, choose_box
from cxr_workbench.method.directions import choose_direction
from cxr_workbench.method.pca import WPCA

__all__ = ["EditPlan", "plan_edit"]


@dataclass
class EditPlan:
    """Everything an edit needs besides its references."""

    box: Box
    box_name: str              # the preset or file the box came from ("custom" for a Box)
    disease: str
    u: torch.Tensor | None     # [w_dim] or [num_ws, w_dim]; None for Baseline LO
    u_source: str              # how u was chosen, for manifests and metrics


def plan_edit(G, pca: WPCA | None, *, box=None, disease: str | None = None, direction: str = "auto",
              method: str = "lo+dir", layers=None, cache_dir=None, progress: bool = False) -> EditPlan:
    """The box (a preset, box JSON, Box or ``masks.BoxChoice``; default: the disease's box), the
    disease it shows (default: the preset's) and u (``choose_direction``, with its ``progress``;
    none for Baseline LO, ``method="lo"``)."""
    choice = choose_box(box, disease)
    box_obj = choice.at(G.img_resolution)
    if method == "lo":
        u, source = None, "none"
    else:
        chosen = choose_direction(G, pca, box_obj, direction, choice.disease, layers=layers, cache_dir=cache_dir,
                                  progress=progress)
        u, source = chosen.u, chosen.description
    return EditPlan(box_obj, choice.name, choice.disease, u, source)
