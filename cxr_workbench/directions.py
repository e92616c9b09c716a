"""Principal directions of W (GANSpace-style PCA, scikit-learn), PC strips, and the ranking of
PCs by how much of their image change falls inside a box.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA, IncrementalPCA
from tqdm.auto import tqdm

from .io import atomic_write
from .masks import Box


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


def generator_key(G) -> str:
    """Short content hash of a generator's weights (the PCA cache key)."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def compute_pca(G, n_samples: int = 20000, seed: int = 0, batch: int = 2000, incremental: bool | None = None,
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
            w = G.mapping(torch.randn(size, G.z_dim, generator=gen).to(device))[:, 0].cpu().double().numpy()
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


def check_layers(layers, num_ws: int) -> list[int]:
    """Validate a list of W+ layer indices (None: all)."""
    if layers is None:
        return list(range(num_ws))
    layers = sorted(set(int(i) for i in layers))
    if not layers or layers[0] < 0 or layers[-1] >= num_ws:
        raise ValueError(f"layers={layers}; expected indices in 0..{num_ws - 1}")
    return layers


def parse_layers(text: str) -> list[int]:
    """'0-5' or '0,2,4-6' -> list of ints."""
    out = []
    for part in str(text).split(","):
        a, _, b = part.strip().partition("-")
        try:
            out.extend(range(int(a), int(b or a) + 1))
        except ValueError:
            raise ValueError(f"layers={text!r}; expected a list like '0-5' or '0,2,4-6'") from None
    return out


def check_direction(u, w_dim: int) -> torch.Tensor:
    """A unit direction [w_dim]; errors for the wrong size, zero or non-finite vectors."""
    u = torch.as_tensor(u, dtype=torch.float32).flatten()
    if u.numel() != w_dim:
        raise ValueError(f"direction u has {u.numel()} values; expected w_dim = {w_dim}")
    if not torch.isfinite(u).all():
        raise ValueError("direction u has non-finite values")
    norm = u.norm()
    if norm < 1e-8:
        raise ValueError("direction u is zero; expected a non-zero vector")
    return u / norm


def apply_direction(w_ref: torch.Tensor, u: torch.Tensor, amounts, layers=None) -> torch.Tensor:
    """``w_ref + a u`` on the chosen W+ layers for each amount a.

    w_ref: [R, num_ws, w_dim]; u: [w_dim]; amounts: [m] -> ws [R, m, num_ws, w_dim].
    """
    num_ws = w_ref.shape[1]
    layers = check_layers(layers, num_ws)
    amounts = torch.as_tensor(amounts, dtype=w_ref.dtype, device=w_ref.device)
    sel = torch.zeros(num_ws, 1, device=w_ref.device, dtype=w_ref.dtype)
    sel[layers] = 1
    step = sel * u.to(w_ref)[None]  # [num_ws, w_dim]
    return w_ref[:, None] + amounts[None, :, None, None] * step[None, None]


def synthesize(G, ws: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Images for ws [..., num_ws, w_dim] -> [..., C, H, W], without gradients, in chunks."""
    lead = ws.shape[:-2]
    flat = ws.reshape(-1, *ws.shape[-2:])
    with torch.no_grad():
        out = torch.cat([G.synthesis(flat[i:i + batch]) for i in range(0, len(flat), batch)])
    return out.reshape(*lead, *out.shape[1:])


def pc_strip(G, w_ref: torch.Tensor, pca: WPCA, k: int, sigmas=(-3, -2, -1, 0, 1, 2, 3), layers=None,
             sign: int = +1) -> torch.Tensor:
    """Images of w_ref moved along PC k by ``sigmas`` of its standard deviation.

    w_ref: [num_ws, w_dim] -> [len(sigmas), C, H, W].
    """
    amounts = torch.as_tensor(sigmas, dtype=torch.float32) * pca.std[k]
    ws = apply_direction(w_ref[None], pca.direction(k, sign), amounts, layers)[0]
    return synthesize(G, ws)


def rank_pcs_for_box(G, w_refs: torch.Tensor, pca: WPCA, box: Box, n_pcs: int = 20, amount: float = 2.0,
                     layers=None) -> list[dict]:
    """For each of the first ``n_pcs`` PCs: how much of its image change falls inside ``box``.

    The change is ``|G(w + a s u) - G(w - a s u)|`` (a = ``amount`` standard deviations), averaged
    over the references w_refs [R, num_ws, w_dim]. Returns rows sorted by ``inside_share`` with
    ``pc``, ``inside_share`` (fraction of the total change inside the box), ``lift`` (share /
    box area fraction; 1 means no preference for the box) and ``box_change`` (signed mean change
    inside the box for the + sign: > 0 means +u brightens the box).
    """
    n_pcs = min(n_pcs, len(pca.components))
    mask = box.mask()
    area = float(mask.mean())
    rows = []
    for k in range(n_pcs):
        a = float(amount * pca.std[k])
        imgs = synthesize(G, apply_direction(w_refs, pca.direction(k), [-a, a], layers))  # [R, 2, C, H, W]
        diff = (imgs[:, 1] - imgs[:, 0]).mean(1).cpu()  # [R, H, W]
        total = diff.abs().sum((1, 2)).clamp_min(1e-12)
        share = float(((diff.abs() * mask).sum((1, 2)) / total).mean())
        signed = float((diff * mask).sum((1, 2)).mean() / mask.sum())
        rows.append(dict(pc=k, inside_share=share, lift=share / area, box_change=signed,
                         std=float(pca.std[k])))
    return sorted(rows, key=lambda r: -r["inside_share"])


def save_direction(path, u: torch.Tensor, source: str = "", overwrite: bool = True) -> Path:
    """Save a direction for ``--direction FILE`` (a weights-only torch file with ``u`` [w_dim])."""
    data = {"u": torch.as_tensor(u, dtype=torch.float32).flatten(), "source": source}
    return atomic_write(path, lambda f: torch.save(data, f), "wb", overwrite)


def resolve_direction(spec: str, pca: WPCA | None, w_dim: int) -> tuple[torch.Tensor, str]:
    """``pc:K`` or ``pc:K:-1`` (PC K of ``pca`` with a sign), ``auto`` (see ``suggest_direction``;
    resolved by the caller, who knows the box), or a file saved by ``save_direction``
    (``.pt``) or a numpy ``.npy`` vector. Returns (unit u [w_dim], description)."""
    if spec.startswith("pc:"):
        parts = spec.split(":")
        try:
            k, sign = int(parts[1]), int(parts[2]) if len(parts) > 2 else 1
        except (ValueError, IndexError):
            raise ValueError(f"direction={spec!r}; expected 'pc:K' or 'pc:K:-1'") from None
        if pca is None:
            raise ValueError("a pc:K direction needs the PCA of the generator")
        return check_direction(pca.direction(k, sign), w_dim), f"PC {k} (sign {sign:+d})"
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"direction={spec!r}; expected 'pc:K[:-1]' or an existing .pt/.npy file")
    if path.suffix == ".npy":
        return check_direction(np.load(path, allow_pickle=False), w_dim), f"file {path}"
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "u" not in data:
        raise ValueError(f"{path}: expected a direction file with a 'u' entry (see save_direction)")
    return check_direction(data["u"], w_dim), data.get("source") or f"file {path}"


def suggest_direction(G, pca: WPCA, box: Box, seeds=range(8), n_pcs: int = 10, layers=None, sign: int = +1):
    """The PC most local to ``box`` (largest inside share over a few seeds), signed so that the box
    changes with the desired ``sign`` (+1: brightens). The paper picks by eye; this helps the eye.

    Returns (u [w_dim], ranking row of the chosen PC, full ranking).
    """
    from .optimize import reference_latents
    rows = rank_pcs_for_box(G, reference_latents(G, list(seeds)), pca, box, n_pcs=n_pcs, layers=layers)
    best = rows[0]
    return pca.direction(best["pc"], sign if best["box_change"] >= 0 else -sign), best, rows
