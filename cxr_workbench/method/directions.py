"""Principal directions of W (GANSpace-style PCA, scikit-learn), PC strips, and the ranking of
PCs by how much of their image change falls inside a box.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA, IncrementalPCA
from tqdm.auto import tqdm

from cxr_workbench.imaging.diseases import DISEASES, check_disease
from cxr_workbench.imaging.masks import Box, disease_for_box, load_box, preset
from cxr_workbench.io import atomic_write, torch_load
from cxr_workbench.model.checkpoints import generator_key
from cxr_workbench.model.latents import (
    apply_direction,
    check_class,
    check_direction,
    check_layers,
    random_classes,
    reference_latents,
    synthesize,
)

__all__ = ["WPCA", "compute_pca", "pc_strip", "direction_strip", "box_change", "inside_share", "box_mean_change",
           "rank_pcs_for_box", "direction_std", "direction_share", "inside_shares", "SPACES", "LocalSearch",
           "LOCAL_SEARCHES", "local_direction", "JacobianSearch", "JACOBIAN_SEARCHES", "box_grams",
           "jacobian_direction", "sefa_directions", "pc_locality", "brightens", "save_direction",
           "MAX_DIRECTION_VALUES", "DIRECTION_FILE_HELP", "resolve_direction", "suggest_direction",
           "ganspace_direction", "DIRECTION_SPECS", "class_direction", "choose_direction", "score_directions",
           "EditPlan", "plan_edit"]


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


def brightens(G, u: torch.Tensor, box: Box, seeds=range(8), layers=None) -> int:
    """+1 when moving along u brightens ``box`` on average over a few references, else -1."""
    with torch.no_grad():
        w_refs = reference_latents(G, list(seeds))
        diff = box_change(G, w_refs, u.to(w_refs), 1.0, layers)
    return 1 if box_mean_change(diff, box.mask().to(diff)) >= 0 else -1


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
        raise ValueError(f"direction={spec!r}; expected 'auto', 'local', 'local+', 'jacobian', 'jacobian+', 'sefa', "
                         "'pc:K[:-1]' or an existing "
                         f"direction file ({DIRECTION_FILE_HELP})")
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


DIRECTION_SPECS = "auto (the most box-local PC), ganspace (the same, on its best range of layers), local (the " \
                  "most box-local combination of the first PCs), local+ (the same with a combination per W+ " \
                  "layer), jacobian / jacobian+ (the most box-local direction to first order, in closed form, in " \
                  "W / per W+ layer), sefa (the most box-local of SeFa's closed-form directions), class:K (toward " \
                  "class K of a conditional generator), pc:K, pc:K:-1, or a .pt/.npy direction file"


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


def _signed(G, u: torch.Tensor, box: Box, disease: str, layers) -> torch.Tensor:
    """u with the sign that changes the box the way ``disease`` does (the one sign rule)."""
    return DISEASES[check_disease(disease)].sign * brightens(G, u, box, layers=layers) * u


def choose_direction(G, pca: WPCA, box: Box, spec: str, disease: str, *, layers=None,
                     cache_dir=None, progress: bool = False) -> tuple[torch.Tensor, str]:
    """u for an edit of ``disease`` in ``box``: ``auto`` (the most box-local PC) or ``local``
    (``local_direction``), each signed to change the box the way the disease does, or a spec for
    ``resolve_direction``. Returns (u [w_dim], description)."""
    if spec == "auto":
        u, best, _ = suggest_direction(G, pca, box, disease, layers=layers, progress=progress)
        return u, f"auto: PC {best['pc']} ({best['inside_share']:.0%} of its change inside the box)"
    if spec == "ganspace":
        u, best = ganspace_direction(G, pca, box, disease, layers=layers, progress=progress)
        run = best["layers"]
        return u, (f"ganspace: PC {best['pc']} on layers {run[0]}-{run[-1]} ({best['inside_share']:.0%} of its change "
                   "inside the box)")
    if spec in JACOBIAN_SEARCHES:
        u = jacobian_direction(G, pca, box, layers=layers, search=JACOBIAN_SEARCHES[spec], cache_dir=cache_dir,
                               progress=progress)
        return _signed(G, u, box, disease, layers), f"{spec}: the most box-local direction to first order"
    if spec == "sefa":
        candidates = sefa_directions(G, layers)
        shares = inside_shares(G, reference_latents(G, range(8)), pca, candidates, box.mask().to(G.w_avg.device),
                               layers=layers)
        k = int(np.argmax(shares))
        return _signed(G, candidates[k], box, disease, layers), (f"sefa: SeFa direction {k} ({shares[k]:.0%} of its "
                                                                 "change inside the box)")
    if spec in LOCAL_SEARCHES:
        search = LOCAL_SEARCHES[spec]
        u, share = local_direction(G, pca, box, layers=layers, search=search, cache_dir=cache_dir,
                                   progress=progress)
        n = min(search.n_pcs, len(pca.components))
        what = f"a combination of the first {n} PCs" if spec == "local" else f"a combination of {n} PCs per layer (W+)"
        return _signed(G, u, box, disease, layers), f"{spec}: {what} ({share:.0%} of its change inside the box)"
    if spec.startswith("class:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"direction {spec!r}; expected class:K with K a class index") from None
        return class_direction(G, k), f"{spec}: toward class {k} (its mean w minus the other classes')"
    return resolve_direction(spec, pca, G.w_dim, G.num_ws)


def score_directions(G, pca: WPCA, box: Box, disease: str, specs, *, seen: torch.Tensor, unseen: torch.Tensor,
                     layers=None, cache_dir=None, progress: bool = False) -> list[dict]:
    """The direction scoreboard: for each spec of ``choose_direction``, its u for ``box`` and how
    box-local it is: the share of its change (+-2 standard deviations of w along u) inside the box
    on ``seen`` references (those u is computed on, seeds 0-7) and on ``unseen`` ones (each [R,
    num_ws, w_dim]), and the seconds choosing it took (a cached search: the time to read it).
    Rows: spec, u, description, seen, unseen, seconds."""
    mask = box.mask().to(seen.device)
    rows = []
    for spec in specs:
        t = time.perf_counter()
        u, desc = choose_direction(G, pca, box, spec, disease, layers=layers, cache_dir=cache_dir, progress=progress)
        seconds = time.perf_counter() - t
        (on_seen,), (on_unseen,) = (inside_shares(G, refs, pca, [u], mask, layers=layers) for refs in (seen, unseen))
        rows.append(dict(spec=spec, u=u, description=desc, seen=on_seen, unseen=on_unseen, seconds=seconds))
    return rows


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
    """The box (a preset, box JSON or Box; default: the disease's box), the disease it shows
    (default: the preset's) and u (``choose_direction``, with its ``progress``; none for Baseline
    LO, ``method="lo"``)."""
    if box is None:
        if disease is None:
            raise ValueError("box=None and disease=None; expected a box, a disease, or both")
        box = DISEASES[check_disease(disease)].box
    disease = disease_for_box(box, disease)
    box_obj = load_box(box, G.img_resolution)
    if method == "lo":
        u, source = None, "none"
    else:
        u, source = choose_direction(G, pca, box_obj, direction, disease, layers=layers, cache_dir=cache_dir,
                                     progress=progress)
    return EditPlan(box_obj, "custom" if isinstance(box, Box) else str(box), disease, u, source)

