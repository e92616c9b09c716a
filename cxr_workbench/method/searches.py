"""Searched directions: the most box-local combination of PCs (``local_direction``, by gradient
descent), the most box-local direction to first order (``jacobian_direction``, in closed form),
SeFa's closed-form directions and a conditional generator's class direction. Searches are kept in
a cache folder, named by what determines them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.imaging.masks import Box, preset
from cxr_workbench.io import atomic_write, torch_load
from cxr_workbench.method.pca import WPCA, direction_share, inside_shares, rank_pcs_for_box
from cxr_workbench.model.checkpoints import generator_key
from cxr_workbench.model.latents import check_class, check_direction, check_layers, reference_latents

__all__ = ["SPACES", "LocalSearch", "LOCAL_SEARCHES", "local_direction", "JacobianSearch", "JACOBIAN_SEARCHES",
           "box_grams", "jacobian_direction", "sefa_directions", "class_direction", "pc_locality"]


SPACES = ("w", "w+")


@dataclass(frozen=True)
class LocalSearch:
    """Settings of ``local_direction``: where to search and how long."""

    n_pcs: int = 30  # u lives in the span of the first n_pcs PCs
    seeds: tuple[int, ...] = tuple(range(16))  # references the share is averaged over
    steps: int = 150
    lr: float = 0.05
    amount: float = 2.0  # standard deviations of w along u, as in rank_pcs_for_box
    space: str = "w"  # "w": one u for every moving layer; "w+": a row of its own per moving layer


# The --direction specs that search. local+: a row per layer in all of W (every PC); 32 references,
# since 128 coefficients a layer overfit 16 (55 % inside on them, 50 % on unseen ones, lung box of
# the 640-kimg default).
LOCAL_SEARCHES = {"local": LocalSearch(),
                  "local+": LocalSearch(n_pcs=1024, seeds=tuple(range(32)), steps=400, space="w+")}


def _cache_file(cache_dir, kind: str, *identity) -> Path | None:
    """Where a computed direction of ``kind`` is kept, named by a hash of what determines it."""
    if not cache_dir:
        return None
    return Path(cache_dir) / f"{kind}_{hashlib.sha256(repr(identity).encode()).hexdigest()[:16]}.pt"


def local_direction(G, pca: WPCA, box: Box, *, layers=None, search: LocalSearch = LocalSearch(), cache_dir=None,
                    progress: bool = False) -> tuple[torch.Tensor, float]:
    """The direction, in the span of the first PCs, whose image change falls most inside ``box``.

    The paper picks u among the PCs; at this generator's size no single PC is local (the best moves
    about a quarter of its change inside a preset box). This maximises the same inside share as
    ``rank_pcs_for_box`` over combinations of PCs, by gradient ascent from the most local PC: one
    combination for all moving layers (``search.space`` "w"), or one per layer ("w+").
    Returns (u, its inside share on the search references): unit [w_dim], or in W+ [num_ws, w_dim]
    with zero rows off ``layers`` (scaled as ``latents.check_direction`` does); the sign is arbitrary
    (``choose_direction`` signs it for a disease). With ``cache_dir`` the result is kept there,
    keyed by the generator's weights, the box, the layers and the search settings.
    """
    if search.space not in SPACES:
        raise ValueError(f"space={search.space!r}; expected one of {SPACES}")
    layers = check_layers(layers, G.num_ws)
    cache = _cache_file(cache_dir, "local", generator_key(G), pca.generator_key, box, layers, search)
    if cache is not None and cache.is_file():
        data = torch_load(cache, "local direction cache")
        return data["u"], float(data["inside_share"])
    device = G.w_avg.device
    w_refs = reference_latents(G, list(search.seeds))
    mask = box.mask().to(device)
    n = min(search.n_pcs, len(pca.components))
    basis = pca.components[:n].to(device)
    start = rank_pcs_for_box(G, w_refs, pca, box, n_pcs=n, amount=search.amount, layers=layers)[0]
    rows = 1 if search.space == "w" else len(layers)

    def direction(coef):  # [rows, n] -> u, scaled as check_direction scales it
        u = coef @ basis
        if search.space == "w":
            return (u / u.norm())[0]
        full = torch.zeros(G.num_ws, G.w_dim, device=device)
        full[layers] = u * (rows ** 0.5 / u.norm())
        return full

    coef = torch.zeros(rows, n, device=device)
    coef[:, start["pc"]] = 1.0
    coef.requires_grad_(True)
    opt = torch.optim.Adam([coef], lr=search.lr)
    best = (start["inside_share"], direction(coef).detach().clone())
    for _ in tqdm(range(search.steps), disable=not progress, desc="local direction"):
        u = direction(coef)
        share = direction_share(G, w_refs, pca, u, mask, search.amount, layers=layers)
        if share.item() > best[0]:
            best = (share.item(), u.detach().clone())
        opt.zero_grad()
        (-share).backward()
        opt.step()
    u, share = best[1].cpu(), best[0]
    if cache is not None:
        atomic_write(cache, lambda f: torch.save({"u": u, "inside_share": share}, f), "wb", True)
    return u, share


@dataclass(frozen=True)
class JacobianSearch:
    """Settings of ``jacobian_direction``."""

    seeds: tuple[int, ...] = tuple(range(8))  # references whose Jacobians are summed
    space: str = "w"  # "w": one u for every moving layer; "w+": a row of its own per moving layer
    ridge: float = 1e-2  # added to the outside Gram matrix, relative to its mean eigenvalue
    step: float = 0.05  # central-difference step in w (w's own spread is about 1)
    candidates: int = 1  # top generalized eigenvectors; the one with the largest inside share is kept


# jacobian+: 768 unknowns (a row per layer) overfit 8 references (67 % of the heart box's change
# inside on unseen ones, 40 % of the lung box's), so 32 with a smaller ridge; and of its top 5
# eigenvectors the one with the largest finite inside share on them, since the quotient squares
# the change and on the lung box a reference or two with large changes pull the top one their way
# (25 % inside; the second: 51 %). Unseen references: 74 % / 46 % (docs/method.md, *Choosing u*).
JACOBIAN_SEARCHES = {"jacobian": JacobianSearch(),
                     "jacobian+": JacobianSearch(seeds=tuple(range(32)), space="w+", ridge=1e-5, candidates=5)}


def box_grams(G, w_refs: torch.Tensor, mask: torch.Tensor, *, layers=None, space: str = "w", step: float = 0.05,
              chunk: int = 256, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram matrices of the image's Jacobian with respect to the moving part of w, split by ``mask``:
    (sum_r J_in^T J_in, sum_r J_out^T J_out), each [P, P]; J [H*W, P] is d image / d v at each
    reference of w_refs [R, num_ws, w_dim], where v [P] is added to every moving layer (``space``
    "w", P = w_dim) or to each moving layer separately ("w+", P = len(layers) * w_dim). Columns
    by central differences, ``chunk`` of them per batch of images (several times faster here than
    autograd's vectorised forward-mode Jacobian)."""
    layers = check_layers(layers, G.num_ws)
    P = G.w_dim * (len(layers) if space == "w+" else 1)
    device = w_refs.device
    inside, outside = mask.flatten().bool(), ~mask.flatten().bool()
    gram_in = torch.zeros(P, P, dtype=torch.float64, device=device)
    gram_out = torch.zeros_like(gram_in)
    rows = torch.tensor(layers, device=device)
    with torch.no_grad():
        for w in tqdm(w_refs, disable=not progress, desc="Jacobians"):
            columns = []
            for start in range(0, P, chunk):
                idx = torch.arange(start, min(P, start + chunk), device=device)
                d = torch.zeros(len(idx), G.num_ws, G.w_dim, device=device)
                if space == "w+":
                    d[torch.arange(len(idx), device=device), rows[idx // G.w_dim], idx % G.w_dim] = step
                else:
                    d[:, layers] = step * torch.eye(G.w_dim, device=device)[idx][:, None]
                imgs = G.synthesis(torch.cat([w + d, w - d])).mean(1).flatten(1)
                columns.append(((imgs[:len(idx)] - imgs[len(idx):]) / (2 * step)).double())
            J = torch.cat(columns).T  # [H*W, P]
            gram_in += J[inside].T @ J[inside]
            gram_out += J[outside].T @ J[outside]
    return gram_in, gram_out


def jacobian_direction(G, pca: WPCA, box: Box, *, layers=None, search: JacobianSearch = JacobianSearch(),
                       cache_dir=None, progress: bool = False) -> torch.Tensor:
    """The direction whose image change is most inside ``box`` to first order, in closed form (as
    ReSeFa, Zhu et al. 2022): the top generalized eigenvector of the inside Gram matrix against the
    outside one plus a ridge (``box_grams``), i.e. the u maximising |J_in u|^2 / (|J_out u|^2 +
    ridge |u|^2) summed over the references; with ``search.candidates`` > 1, of the top ones the u
    whose change at +-2 standard deviations of w along it (``pca``) is most inside the box on the
    same references. Returns u as ``local_direction`` does: unit [w_dim], or [num_ws, w_dim] with zero
    rows off ``layers``; the sign is arbitrary. Cached in ``cache_dir``."""
    import scipy.linalg
    if search.space not in SPACES:
        raise ValueError(f"space={search.space!r}; expected one of {SPACES}")
    layers = check_layers(layers, G.num_ws)
    cache = _cache_file(cache_dir, "jacobian", generator_key(G), pca.generator_key, box, layers, search)
    if cache is not None and cache.is_file():
        return torch_load(cache, "jacobian direction cache")["u"]
    w_refs = reference_latents(G, list(search.seeds))
    mask = box.mask().to(w_refs.device)
    gram_in, gram_out = box_grams(G, w_refs, mask, layers=layers, space=search.space, step=search.step,
                                  progress=progress)
    gram_in, gram_out = gram_in.cpu().numpy(), gram_out.cpu().numpy()
    P = len(gram_out)
    ridge = search.ridge * np.trace(gram_out) / P
    k = min(search.candidates, P)
    _, vectors = scipy.linalg.eigh(gram_in, gram_out + ridge * np.eye(P), subset_by_index=[P - k, P - 1])

    def direction(v):
        v = torch.tensor(v, dtype=torch.float32)
        if search.space == "w":
            return check_direction(v, G.w_dim)
        full = torch.zeros(G.num_ws, G.w_dim)
        full[layers] = v.reshape(len(layers), G.w_dim)
        return check_direction(full, G.w_dim, G.num_ws)

    candidates = [direction(vectors[:, j]) for j in range(k - 1, -1, -1)]  # the top one first
    u = candidates[int(np.argmax(inside_shares(G, w_refs, pca, candidates, mask, layers=layers)))] if k > 1 \
        else candidates[0]
    if cache is not None:
        atomic_write(cache, lambda f: torch.save({"u": u}, f), "wb", True)
    return u


def sefa_directions(G, layers=None, k: int = 10) -> torch.Tensor:
    """SeFa (Shen and Zhou, 2021) in closed form: the top ``k`` eigenvectors of A^T A, A the style
    affine weights of the convolutions that read the moving ``layers`` of W+, each weight row made
    unit. Needs no sampling and no box. Returns [k, w_dim] unit rows."""
    layers = set(check_layers(layers, G.num_ws))
    weights, w_idx = [], 0
    for block in (getattr(G.synthesis, f"b{res}") for res in G.synthesis.block_resolutions):
        convs = [block.conv1] if block.num_conv == 1 else [block.conv0, block.conv1]
        weights += [conv.affine.weight for j, conv in enumerate(convs) if w_idx + j in layers]
        w_idx += block.num_conv
    if not weights:
        raise ValueError(f"layers={sorted(layers)}: no convolution reads them (only ToRGB layers)")
    A = torch.cat(weights).detach().double()
    A = A / A.norm(dim=1, keepdim=True)
    _, vectors = torch.linalg.eigh(A.T @ A)
    return vectors[:, -k:].flip(1).T.float()


def class_direction(G, k: int, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Toward class ``k`` of a conditional generator, in W: the mean w of class k minus the mean w of
    the other classes, over the same ``n`` z (made unit). [w_dim]"""
    if G.c_dim < 2:
        raise ValueError(f"direction class:{k}: the generator has {G.c_dim} classes; a class direction "
                         "needs a conditional generator with at least 2")
    k = check_class(G, k)
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(G.w_avg.device)
    with torch.no_grad():
        means = torch.stack([G.mapping(z, torch.full([n], j, dtype=torch.long))[:, 0].mean(0) for j in range(G.c_dim)])
    others = torch.cat([means[:k], means[k + 1:]]).mean(0)
    return check_direction((means[k] - others).cpu(), G.w_dim)


def pc_locality(G, pca, boxes=None) -> dict:
    """For each preset box (default: each disease's): the most local PC among the first 10 and its
    inside share (seeds 0-7), and the inside shares of ``local_direction`` in W and in W+ (``--direction
    local``, ``local+``) on references they were not searched on (seeds 100-107)."""
    out = {}
    held_out = reference_latents(G, range(100, 108))
    for name in boxes or [d.box for d in DISEASES.values()]:
        box = preset(name, G.img_resolution)
        best = rank_pcs_for_box(G, reference_latents(G, range(8)), pca, box, n_pcs=10)[0]
        out[name] = dict(pc=best["pc"], inside_share=best["inside_share"])
        for key, spec in (("local_inside_share", "local"), ("local_plus_inside_share", "local+")):
            search = LOCAL_SEARCHES[spec]
            u, _ = local_direction(G, pca, box, search=search)
            with torch.no_grad():
                out[name][key] = float(direction_share(G, held_out, pca, u, box.mask(), search.amount))
    return out
