"""Principal directions of W (GANSpace-style PCA, scikit-learn), PC strips, how much of a
direction's image change falls inside a box, and the PCs ranked by it (``suggest_direction``, the
paper's PC picked for a box; ``ganspace_direction``, the same on a range of layers).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA, IncrementalPCA
from tqdm.auto import tqdm

from cxr_workbench.imaging.diseases import DISEASES, check_disease
from cxr_workbench.imaging.masks import Box
from cxr_workbench.io import atomic_write
from cxr_workbench.model.checkpoints import generator_key
from cxr_workbench.model.latents import apply_direction, check_layers, random_classes, reference_latents, synthesize

__all__ = ["WPCA", "compute_pca", "pc_strip", "direction_strip", "box_change", "inside_share", "box_mean_change",
           "rank_pcs_for_box", "direction_std", "direction_share", "inside_shares", "brightens", "suggest_direction",
           "ganspace_direction"]


@dataclass
class WPCA:
    """PCA of w = mapping(z): ``components`` [K, w_dim] unit rows, ``std`` [K] per-PC standard
    deviations, ``mean`` [w_dim]."""

    mean: torch.Tensor
    components: torch.Tensor
    std: torch.Tensor
    explained_variance_ratio: torch.Tensor
    n_samples: int
    seed: int
    generator_key: str

    def direction(self, k: int, sign: int = +1) -> torch.Tensor:
        """Unit direction u [w_dim] of PC ``k`` (0-based), with the chosen sign."""
        if not 0 <= k < len(self.components):
            raise ValueError(f"pc={k}; expected 0..{len(self.components) - 1}")
        if sign not in (1, -1):
            raise ValueError(f"sign={sign!r}; expected +1 or -1")
        return sign * self.components[k].clone()

    def save(self, path, overwrite: bool = True) -> Path:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return atomic_write(path, lambda f: torch.save(data, f), "wb", overwrite)

    @classmethod
    def load(cls, path) -> "WPCA":
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def compute_pca(G, *, n_samples: int = 20000, seed: int = 0, batch: int = 2000, incremental: bool | None = None,
                cache_dir=None, progress: bool = False) -> WPCA:
    """PCA of ``n_samples`` w vectors. IncrementalPCA for large N (> 100k) unless told otherwise.

    With ``cache_dir`` the result is stored as ``pca_<generator key>_<n>_<seed>.pt`` and reused.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples={n_samples}; expected at least 2")
    key = generator_key(G)
    cache = Path(cache_dir) / f"pca_{key}_{n_samples}_{seed}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        return WPCA.load(cache)
    gen = torch.Generator().manual_seed(seed)
    device = G.w_avg.device
    incremental = n_samples > 100_000 if incremental is None else incremental
    model = IncrementalPCA(batch_size=batch) if incremental else PCA(random_state=seed)
    if incremental and n_samples < G.w_dim:
        raise ValueError(f"n_samples={n_samples}; IncrementalPCA needs at least w_dim = {G.w_dim}")
    # Equal chunks of at least `batch` samples, so every partial_fit sees >= w_dim rows.
    sizes = [len(c) for c in np.array_split(np.arange(n_samples), max(1, n_samples // max(batch, G.w_dim)))]
    chunks = []
    with torch.no_grad():
        for size in tqdm(sizes, disable=not progress, desc="PCA of W"):
            z = torch.randn(size, G.z_dim, generator=gen).to(device)
            w = G.mapping(z, random_classes(G, size, gen))[:, 0].cpu().double().numpy()
            if incremental:
                model.partial_fit(w)
            else:
                chunks.append(w)
    if not incremental:
        model.fit(np.concatenate(chunks))
    result = WPCA(mean=torch.from_numpy(model.mean_).float(),
                  components=torch.from_numpy(model.components_).float(),
                  std=torch.from_numpy(np.sqrt(model.explained_variance_)).float(),
                  explained_variance_ratio=torch.from_numpy(model.explained_variance_ratio_).float(),
                  n_samples=n_samples, seed=seed, generator_key=key)
    if cache is not None:
        result.save(cache)
    return result


def pc_strip(G, w_ref: torch.Tensor, pca: WPCA, k: int, *, sigmas=(-3, -2, -1, 0, 1, 2, 3), layers=None,
             sign: int = +1) -> torch.Tensor:
    """Images of w_ref moved along PC k by ``sigmas`` of its standard deviation.

    w_ref: [num_ws, w_dim] -> [len(sigmas), C, H, W].
    """
    return direction_strip(G, w_ref, pca, pca.direction(k, sign), sigmas=sigmas, layers=layers)


def direction_strip(G, w_ref: torch.Tensor, pca: WPCA, u: torch.Tensor, *, sigmas=(-3, -2, -1, 0, 1, 2, 3),
                    layers=None) -> torch.Tensor:
    """Images of w_ref moved along the direction u ([w_dim], or [num_ws, w_dim] in W+) by ``sigmas``
    of W's standard deviation along u (``direction_std``). w_ref: [num_ws, w_dim] -> [len(sigmas), C, H, W]."""
    amounts = torch.as_tensor(sigmas, dtype=torch.float32) * float(direction_std(pca, u))
    return synthesize(G, apply_direction(w_ref[None], u, amounts, layers)[0])


def box_change(G, w_refs: torch.Tensor, u: torch.Tensor, amount, layers=None) -> torch.Tensor:
    """``G(w + a u) - G(w - a u)`` averaged over channels: [R, H, W] for w_refs [R, num_ws, w_dim],
    u [w_dim] (or [num_ws, w_dim]) on the chosen layers and a = ``amount`` (absolute); differentiable in u
    and amount."""
    sel = torch.zeros(G.num_ws, 1, dtype=w_refs.dtype, device=w_refs.device)
    sel[check_layers(layers, G.num_ws)] = 1
    step = amount * sel * u  # [num_ws, w_dim]
    imgs = G.synthesis(torch.cat([w_refs - step, w_refs + step]))
    return (imgs[len(w_refs):] - imgs[:len(w_refs)]).mean(1)


def inside_share(diff: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of the absolute change inside ``mask`` [H, W], per image of diff [R, H, W] -> [R]."""
    a = diff.abs()
    return (a * mask).sum((1, 2)) / a.sum((1, 2)).clamp_min(1e-12)


def box_mean_change(diff: torch.Tensor, mask: torch.Tensor) -> float:
    """Signed mean change inside ``mask`` [H, W], averaged over the images of diff [R, H, W]; its
    sign is the one rule for which way a direction moves a box (>= 0: brightens)."""
    return float((diff * mask).sum((1, 2)).mean() / mask.sum())


def rank_pcs_for_box(G, w_refs: torch.Tensor, pca: WPCA, box: Box, *, n_pcs: int = 20, amount: float = 2.0,
                     layers=None, progress: bool = False) -> list[dict]:
    """For each of the first ``n_pcs`` PCs: how much of its image change falls inside ``box``.

    The change is ``|G(w + a s u) - G(w - a s u)|`` (a = ``amount`` standard deviations), averaged
    over the references w_refs [R, num_ws, w_dim]. Returns rows sorted by ``inside_share`` with
    ``pc``, ``inside_share`` (fraction of the total change inside the box), ``lift`` (share /
    box area fraction; 1 means no preference for the box) and ``box_change`` (signed mean change
    inside the box for the + sign) and ``brightens`` (the sign of u that brightens the box:
    +1 when ``box_change >= 0``, the one sign rule everything uses). ``progress``: a bar over the
    PCs (seconds each at 1024 px on a CPU).
    """
    n_pcs = min(n_pcs, len(pca.components))
    mask = box.mask().to(w_refs.device)
    area = float(mask.mean())
    rows = []
    with torch.no_grad():
        for k in tqdm(range(n_pcs), disable=not progress, desc="PCs for the box", leave=False):
            diff = box_change(G, w_refs, pca.direction(k).to(w_refs), float(amount * pca.std[k]), layers)
            share = float(inside_share(diff, mask).mean())
            signed = box_mean_change(diff, mask)
            rows.append(dict(pc=k, inside_share=share, lift=share / area, box_change=signed,
                             brightens=1 if signed >= 0 else -1, std=float(pca.std[k])))
    return sorted(rows, key=lambda r: -r["inside_share"])


def direction_std(pca: WPCA, u: torch.Tensor) -> torch.Tensor:
    """Standard deviation of w along the unit direction u [w_dim] (a PC's own std for a PC); for a
    W+ direction [num_ws, w_dim], the root mean square over its non-zero rows of the std of w . row
    (so a W direction repeated on every layer has its own std)."""
    rows = u.reshape(-1, u.shape[-1])
    rows = rows[rows.detach().norm(dim=1) > 0]
    return torch.sqrt(((rows @ pca.components.to(u).T) ** 2 * pca.std.to(u) ** 2).sum(1).mean())


def direction_share(G, w_refs: torch.Tensor, pca: WPCA, u: torch.Tensor, mask: torch.Tensor, amount: float,
                    *, layers=None) -> torch.Tensor:
    """Mean over references w_refs [R, num_ws, w_dim] of the inside share of the change along the
    direction u ([w_dim] or [num_ws, w_dim]), at +-``amount`` standard deviations of w along u; differentiable in u."""
    return inside_share(box_change(G, w_refs, u, amount * direction_std(pca, u), layers), mask).mean()


def inside_shares(G, w_refs: torch.Tensor, pca: WPCA, directions, mask: torch.Tensor, *, layers=None) -> list[float]:
    """``direction_share`` at +-2 standard deviations of each u in ``directions`` (as the PCs are
    ranked), on w_refs [R, num_ws, w_dim]; no gradients."""
    with torch.no_grad():
        return [float(direction_share(G, w_refs, pca, u.to(w_refs), mask, 2.0, layers=layers)) for u in directions]


def brightens(G, u: torch.Tensor, box: Box, seeds=range(8), layers=None) -> int:
    """+1 when moving along u brightens ``box`` on average over a few references, else -1."""
    with torch.no_grad():
        w_refs = reference_latents(G, list(seeds))
        diff = box_change(G, w_refs, u.to(w_refs), 1.0, layers)
    return 1 if box_mean_change(diff, box.mask().to(diff)) >= 0 else -1


def suggest_direction(G, pca: WPCA, box: Box, disease: str, *, seeds=range(8), n_pcs: int = 10, layers=None,
                      progress: bool = False):
    """The PC most local to ``box`` (largest inside share over a few seeds), signed so that the box
    changes the way ``disease`` changes it (``masks.DISEASES``). The paper picks by eye; this helps
    the eye.

    Returns (u [w_dim], ranking row of the chosen PC, full ranking).
    """
    sign = DISEASES[check_disease(disease)].sign
    rows = rank_pcs_for_box(G, reference_latents(G, list(seeds)), pca, box, n_pcs=n_pcs, layers=layers,
                            progress=progress)
    best = rows[0]
    return pca.direction(best["pc"], sign * best["brightens"]), best, rows


def ganspace_direction(G, pca: WPCA, box: Box, disease: str, *, seeds=range(8), n_pcs: int = 10, layers=None,
                       min_layers: int = 2, progress: bool = False) -> tuple[torch.Tensor, dict]:
    """GANSpace's way (Härkönen et al. 2020): a PC applied to a range of layers only. Of the first
    ``n_pcs`` PCs on every run of at least ``min_layers`` consecutive moving ``layers``, the one most
    local to ``box`` (largest inside share over a few seeds), signed as ``suggest_direction``.

    Returns (u [num_ws, w_dim], zero outside its layers; its ranking row, with ``layers``)."""
    layers = check_layers(layers, G.num_ws)
    runs = [layers[i:j] for i in range(len(layers)) for j in range(i + min_layers, len(layers) + 1)
            if layers[j - 1] - layers[i] == j - 1 - i]  # consecutive layers only
    if not runs:
        raise ValueError(f"layers {layers} hold no run of {min_layers} consecutive layers for a GANSpace range")
    w_refs = reference_latents(G, list(seeds))
    best = max(({**row, "layers": run} for run in tqdm(runs, disable=not progress, desc="layer ranges", leave=False)
                for row in rank_pcs_for_box(G, w_refs, pca, box, n_pcs=n_pcs, layers=run)[:1]),
               key=lambda r: r["inside_share"])
    u = torch.zeros(G.num_ws, G.w_dim)
    u[best["layers"]] = pca.direction(best["pc"], DISEASES[check_disease(disease)].sign * best["brightens"])
    return u, best
