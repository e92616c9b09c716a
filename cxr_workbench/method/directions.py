"""Directions by name: a registry of finders (``FINDERS``), each returning one ``DirectionRecord``
for a box and a disease, used by the CLI's choices and errors, the scoreboard and notebook 02;
``pc:K``, ``class:K`` and direction files beside them. The finders live in ``method.pca`` (the
PCs) and ``method.searches`` (the searches).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cxr_workbench.imaging.diseases import DISEASES, KINDS, check_disease
from cxr_workbench.imaging.masks import Box
from cxr_workbench.io import atomic_write, torch_load
from cxr_workbench.method.pca import WPCA, brightens, ganspace_direction, inside_shares, suggest_direction
from cxr_workbench.method.searches import (
    JACOBIAN_SEARCHES,
    LOCAL_SEARCHES,
    class_direction,
    jacobian_direction,
    local_direction,
    sefa_directions,
)
from cxr_workbench.model.latents import apply_direction, check_direction, reference_latents, synthesize

__all__ = ["DirectionRecord", "Finder", "FINDERS", "DIRECTION_SPECS", "knows_kinds", "choose_direction", "WALK_AMOUNTS",
           "reading_along", "score_directions",
           "save_direction", "MAX_DIRECTION_VALUES", "DIRECTION_FILE_HELP", "resolve_direction"]


@dataclass
class DirectionRecord:
    """A direction chosen for a box: u ([w_dim], or [num_ws, w_dim] for a per-layer one), how it
    was found, the share of its change inside the box on the references it was found on (None for
    a direction not found for a box: pc:K, class:K, a file, or a finder that measures none), and
    the seconds finding it took (a cached search: the time to read it)."""

    u: torch.Tensor
    description: str
    inside_share: float | None
    seconds: float


@dataclass(frozen=True)
class Finder:
    """A named way to find u: ``find(G, pca, box, disease, layers=, cache_dir=, progress=)`` returns
    (u signed the way the disease changes the box, description, inside share or None)."""

    find: Callable
    help: str


def _signed(G, u: torch.Tensor, box: Box, disease: str, layers) -> torch.Tensor:
    """u with the sign that changes the box the way ``disease`` does (the one sign rule)."""
    return DISEASES[check_disease(disease)].sign * brightens(G, u, box, layers=layers) * u


def _auto(G, pca, box, disease, *, layers, cache_dir, progress):
    u, best, _ = suggest_direction(G, pca, box, disease, layers=layers, progress=progress)
    return u, f"auto: PC {best['pc']} ({best['inside_share']:.0%} of its change inside the box)", best["inside_share"]


def _ganspace(G, pca, box, disease, *, layers, cache_dir, progress):
    u, best = ganspace_direction(G, pca, box, disease, layers=layers, progress=progress)
    run = best["layers"]
    return u, (f"ganspace: PC {best['pc']} on layers {run[0]}-{run[-1]} ({best['inside_share']:.0%} of its change "
               "inside the box)"), best["inside_share"]


def _jacobian(name):
    def find(G, pca, box, disease, *, layers, cache_dir, progress):
        u = jacobian_direction(G, pca, box, layers=layers, search=JACOBIAN_SEARCHES[name], cache_dir=cache_dir,
                               progress=progress)
        return _signed(G, u, box, disease, layers), f"{name}: the most box-local direction to first order", None
    return find


def _sefa(G, pca, box, disease, *, layers, cache_dir, progress):
    candidates = sefa_directions(G, layers)
    shares = inside_shares(G, reference_latents(G, range(8)), pca, candidates, box.mask().to(G.w_avg.device),
                           layers=layers)
    k = int(np.argmax(shares))
    return (_signed(G, candidates[k], box, disease, layers),
            f"sefa: SeFa direction {k} ({shares[k]:.0%} of its change inside the box)", shares[k])


def _local(name):
    search = LOCAL_SEARCHES[name]

    def find(G, pca, box, disease, *, layers, cache_dir, progress):
        u, share = local_direction(G, pca, box, layers=layers, search=search, cache_dir=cache_dir, progress=progress)
        n = min(search.n_pcs, len(pca.components))
        what = f"a combination of the first {n} PCs" if search.space == "w" else \
            f"a combination of {n} PCs per layer (W+)"
        return _signed(G, u, box, disease, layers), f"{name}: {what} ({share:.0%} of its change inside the box)", share
    return find


def knows_kinds(G) -> bool:
    """Whether G is one of our kind-conditional generators (``train --condition kind``), whose class k is
    ``KINDS[k]``; an imported conditional generator's classes mean nothing we know (class:K names them)."""
    return bool(getattr(G, "source", None)) and G.c_dim == len(KINDS)


def _kind(G, pca, box, disease, *, layers, cache_dir, progress):
    if not knows_kinds(G):
        raise ValueError(f"direction kind: the generator has {G.c_dim} classes and is not one of ours told the kind "
                         "of film; expected a generator trained with --condition kind (the default), or class:K")
    k = KINDS.index(check_disease(disease))
    return class_direction(G, k), f"kind: toward class {k}, {KINDS[k]} (its mean w minus the other classes')", None


# The finders by name, in the order the CLI lists them.
FINDERS = {
    "auto": Finder(_auto, "the most box-local PC"),
    "ganspace": Finder(_ganspace, "the same, on its best range of layers"),
    "local": Finder(_local("local"), "the most box-local combination of the first PCs"),
    "local+": Finder(_local("local+"), "the same with a combination per W+ layer"),
    "jacobian": Finder(_jacobian("jacobian"), "the most box-local direction to first order, in closed form, in W"),
    "jacobian+": Finder(_jacobian("jacobian+"), "the same per W+ layer"),
    "sefa": Finder(_sefa, "the most box-local of SeFa's closed-form directions"),
    "kind": Finder(_kind, "toward the disease's class, for a generator told the kind of film (the default)"),
}
DIRECTION_SPECS = ", ".join(f"{name} ({f.help})" for name, f in FINDERS.items()) + \
    ", class:K (toward class K of a conditional generator), pc:K, pc:K:-1, or a .pt/.npy direction file"


def choose_direction(G, pca: WPCA | None, box: Box | None, spec: str, disease: str, *, layers=None,
                     cache_dir=None, progress: bool = False) -> DirectionRecord:
    """u for an edit of ``disease`` in ``box``: a finder of ``FINDERS`` (signed to change the box the
    way the disease does), ``class:K``, or a spec for ``resolve_direction``. The record's inside
    share is the finder's own measure (None where it takes none: ``score_directions`` measures
    every u alike)."""
    t = time.perf_counter()
    share = None
    if spec in FINDERS:
        u, description, share = FINDERS[spec].find(G, pca, box, disease, layers=layers, cache_dir=cache_dir,
                                                   progress=progress)
    elif spec.startswith("class:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"direction {spec!r}; expected class:K with K a class index") from None
        u, description = class_direction(G, k), f"{spec}: toward class {k} (its mean w minus the other classes')"
    else:
        u, description = resolve_direction(spec, pca, G.w_dim, G.num_ws)
    return DirectionRecord(u, description, None if share is None else float(share), time.perf_counter() - t)


# Distances along u (of unit norm on each moving layer) of a straight walk: about as far as the points
# of LO + direction travel (n = 12 points, springs of sigma 0.3-1.0 over six layers).
WALK_AMOUNTS = (0.0, 4.0, 8.0, 12.0)


def reading_along(G, u: torch.Tensor, refs: torch.Tensor, reader, disease: str, *, amounts=WALK_AMOUNTS,
                  layers=None) -> dict:
    """What a straight walk along u does to the disease, as ``reader`` reads it: the mean reading of
    ``disease`` on ``refs`` [R, num_ws, w_dim] at each of ``amounts`` (u on ``layers``) and the share of
    references read as the disease, and plausible, at the last: {"reading": [A], "reads_as": float}.
    A box-local direction need not move the disease (it may only change the exposure in the box)."""
    pred = reader.predict(synthesize(G, apply_direction(refs, u, amounts, layers)).flatten(0, 1))
    reading = np.asarray(pred[reader.severity(disease)]).reshape(len(refs), len(amounts))
    shown = (reader.reads_as(pred, disease) & reader.plausible(pred)).reshape(len(refs), len(amounts))
    return dict(reading=reading.mean(0), reads_as=float(shown[:, -1].mean()))


def score_directions(G, pca: WPCA, box: Box, disease: str, specs, *, seen: torch.Tensor, unseen: torch.Tensor,
                     layers=None, cache_dir=None, reader=None, progress: bool = False) -> list[dict]:
    """The direction scoreboard: for each spec of ``choose_direction``, its u for ``box`` and how
    box-local it is: the share of its change (+-2 standard deviations of w along u) inside the box
    on ``seen`` references (those u is computed on, seeds 0-7) and on ``unseen`` ones (each [R,
    num_ws, w_dim]), and the seconds choosing it took (a cached search: the time to read it); with a
    ``reader``, what a straight walk along u does to the disease on the unseen ones (``reading_along``).
    Rows: spec, u, description, seen, unseen, seconds (and walk)."""
    mask = box.mask().to(seen.device)
    rows = []
    for spec in specs:
        r = choose_direction(G, pca, box, spec, disease, layers=layers, cache_dir=cache_dir, progress=progress)
        (on_seen,), (on_unseen,) = (inside_shares(G, refs, pca, [r.u], mask, layers=layers) for refs in (seen, unseen))
        rows.append(dict(spec=spec, u=r.u, description=r.description, seen=on_seen, unseen=on_unseen,
                         seconds=r.seconds))
        if reader is not None:
            rows[-1]["walk"] = reading_along(G, r.u, unseen, reader, disease, layers=layers)
    return rows


def save_direction(path, u: torch.Tensor, source: str = "", overwrite: bool = True) -> Path:
    """Save a direction for ``--direction FILE`` (a weights-only torch file with ``u`` [w_dim], or
    [num_ws, w_dim] for a W+ direction)."""
    u = torch.as_tensor(u, dtype=torch.float32)
    data = {"u": u if u.ndim == 2 else u.flatten(), "source": source}
    return atomic_write(path, lambda f: torch.save(data, f), "wb", overwrite)


MAX_DIRECTION_VALUES = 2 ** 20  # a direction is [w_dim] or [num_ws, w_dim]: far fewer values
DIRECTION_FILE_HELP = "a .pt saved by save_direction (a dict with 'u' [w_dim] or [num_ws, w_dim]) or a .npy array"


def resolve_direction(spec: str, pca: WPCA | None, w_dim: int, num_ws: int | None = None) -> tuple[torch.Tensor, str]:
    """``pc:K`` or ``pc:K:-1`` (PC K of ``pca`` with a sign), or a direction file (see
    ``DIRECTION_FILE_HELP``; a W+ [num_ws, w_dim] one only where ``num_ws`` is given). Returns
    (u, description), u as ``latents.check_direction`` makes it. ``auto`` and ``local`` need the
    box: see ``choose_direction``."""
    if spec.startswith("pc:"):
        parts = spec.split(":")
        try:
            k, sign = int(parts[1]), int(parts[2]) if len(parts) > 2 else 1
            if len(parts) > 3:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"direction={spec!r}; expected 'pc:K' or 'pc:K:-1'") from None
        if pca is None:
            raise ValueError("a pc:K direction needs the PCA of the generator")
        return check_direction(pca.direction(k, sign), w_dim), f"PC {k} (sign {sign:+d})"
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"direction={spec!r}; expected {', '.join(repr(n) for n in FINDERS)}, 'class:K', "
                         f"'pc:K[:-1]' or an existing direction file ({DIRECTION_FILE_HELP})")
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header's shape, nothing read yet
        except Exception as e:  # not an array file, or an object array we refuse to unpickle
            raise ValueError(f"direction file {path}: not a numpy array ({str(e)[:80]}); expected "
                             f"{DIRECTION_FILE_HELP}") from None
        if array.size > MAX_DIRECTION_VALUES:
            raise ValueError(f"direction file {path}: an array of shape {array.shape}; expected {DIRECTION_FILE_HELP}")
        data = {"u": np.array(array)}
    else:
        data = torch_load(path, "direction file", max_bytes=MAX_DIRECTION_VALUES * 8 + 2 ** 16)
    if not isinstance(data, dict) or "u" not in data:
        raise ValueError(f"direction file {path}: holds no 'u' entry; expected {DIRECTION_FILE_HELP}")
    try:
        u = check_direction(data["u"], w_dim, num_ws)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"direction file {path}: {e}") from None
    source = data.get("source")
    return u, source if isinstance(source, str) and source else f"file {path}"
