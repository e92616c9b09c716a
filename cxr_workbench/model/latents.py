"""W+ latents: the space the method works in.

Reference latents from seeds, layer and direction checks, moving latents along a direction,
synthesis in batches, and the flattened view of the moving layers in which springs and angles
are measured (docs/method.md). Everything here is a pure function of its arguments.
"""
from __future__ import annotations

import numpy as np
import torch

from cxr_workbench.imaging.strips import tile, to_uint8
from cxr_workbench.model.stylegan2 import z_from_seeds

__all__ = ["MAX_RANGE", "parse_range", "MAX_LATENT", "check_latents", "parse_layers", "check_layers",
           "check_direction", "check_class", "class_input", "random_classes", "w_samples", "reference_latents",
           "apply_direction", "synthesize", "flatten_layers", "direction_on_layers", "sample_grid"]

MAX_RANGE = 1_000_000  # values in one parsed range: more is a typo, not a request


def parse_range(text: str, name: str = "value") -> list[int]:
    """``'0-3,7,10-11'`` -> ``[0, 1, 2, 3, 7, 10, 11]`` (seeds and W+ layers alike).

    Every part is ``N`` or ``A-B`` with ``A <= B``; anything else (``5-2``, ``2-``, ``x``, ``''``)
    is an error naming ``name`` and the text.
    """
    out: list[int] = []
    for part in str(text).split(","):
        a, dash, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b) if dash else int(a)
        except ValueError:
            lo, hi = 0, -1
        if hi < lo or lo < 0:
            raise ValueError(f"{name}={text!r}; expected a list like '0-5' or '0,2,4-6' "
                             "(non-negative, A-B with A <= B)")
        if hi - lo + len(out) > MAX_RANGE:
            raise ValueError(f"{name}={text!r}; expected at most {MAX_RANGE} values")
        out.extend(range(lo, hi + 1))
    return out


MAX_LATENT = 1e3  # |w| of any StyleGAN2 is O(1)-O(10); far beyond this is a broken file, not a latent


def check_latents(ws, G=None, source: str = "latents", batch_dims: int = 1) -> torch.Tensor:
    """W+ latents [*batch, num_ws, w_dim] (``batch_dims`` leading dims, each >= 1) as float32, or a
    ValueError naming ``source``: a dense tensor of real floating values, finite, within
    +-MAX_LATENT, of G's shape (any num_ws and w_dim with G None)."""
    if isinstance(ws, torch.Tensor) and (ws.layout != torch.strided or ws.is_meta):
        kind = "a meta tensor (no data)" if ws.is_meta else f"a {str(ws.layout).removeprefix('torch.')} tensor"
        raise ValueError(f"{source}: {kind}; expected dense W+ latents")
    if not isinstance(ws, torch.Tensor) or not ws.is_floating_point() or ws.is_complex():
        kind = type(ws).__name__ if not isinstance(ws, torch.Tensor) else f"a {ws.dtype} tensor"
        raise ValueError(f"{source}: {kind}; expected real floating-point W+ latents")
    batch = ", ".join("RN"[i] if i < 2 else f"B{i}" for i in range(batch_dims))
    layers = (G.num_ws, G.w_dim) if G is not None else ("L", "D")
    if ws.ndim != batch_dims + 2 or (G is not None and tuple(ws.shape[-2:]) != layers) or 0 in ws.shape:
        raise ValueError(f"{source}: latents of shape {tuple(ws.shape)}; expected [{batch}, {layers[0]}, {layers[1]}] "
                         "with no empty dimension")
    if not torch.isfinite(ws).all() or ws.abs().max() > MAX_LATENT:
        raise ValueError(f"{source}: latents with values up to {float(ws.abs().max()):.3g}; expected finite "
                         f"values within +-{MAX_LATENT:g}")
    return ws.detach().float()


def parse_layers(text: str) -> tuple[int, ...] | None:
    """``'all'`` -> None (every W+ layer); ``'0-5'`` -> ``(0, 1, 2, 3, 4, 5)``."""
    return None if text == "all" else tuple(parse_range(text, "layers"))


def check_layers(layers, num_ws: int) -> list[int]:
    """Validate W+ layer indices (None: all), sorted and unique."""
    if layers is None:
        return list(range(num_ws))
    layers = sorted(set(int(i) for i in layers))
    if not layers or layers[0] < 0 or layers[-1] >= num_ws:
        raise ValueError(f"layers={layers}; expected indices in 0..{num_ws - 1}")
    return layers


def check_direction(u, w_dim: int, num_ws: int | None = None) -> torch.Tensor:
    """A direction in W, made unit: [w_dim]; or, where ``num_ws`` is given, one in W+ [num_ws, w_dim]
    (a row per layer), scaled so its non-zero rows have a mean squared norm of 1: a W direction
    repeated on every layer is then the same edit as the W direction. Errors for the wrong size,
    zero or non-finite values."""
    u = torch.as_tensor(u, dtype=torch.float32)
    plus = num_ws is not None and tuple(u.shape) == (num_ws, w_dim)
    if not plus:
        u = u.flatten()
        if u.numel() != w_dim:
            raise ValueError(f"direction u has {u.numel()} values; expected w_dim = {w_dim}"
                             + (f" (W) or [{num_ws}, {w_dim}] (W+)" if num_ws is not None else ""))
    if not torch.isfinite(u).all():
        raise ValueError("direction u has non-finite values")
    rows = u.reshape(-1, w_dim).norm(dim=1)
    if rows.max() < 1e-8:
        raise ValueError("direction u is zero; expected a non-zero vector")
    return u / rows[rows > 0].square().mean().sqrt()


def check_class(G, label) -> int:
    """A class index for G: 0..c_dim - 1 for a conditional generator, 0 for an unconditional one."""
    c_dim = G.c_dim
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < max(c_dim, 1):
        raise ValueError(f"class={label!r}; expected " + (f"a class in 0..{c_dim - 1}" if c_dim else
                                                          "0: the generator is unconditional (c_dim = 0)"))
    return int(label)


def class_input(G, label, n: int) -> torch.Tensor | None:
    """The class input of ``n`` latents of class ``label``: [n] indices, None when G is unconditional."""
    label = check_class(G, label)
    return torch.full([n], label, dtype=torch.long) if G.c_dim else None


def random_classes(G, n: int, gen: torch.Generator) -> torch.Tensor | None:
    """Classes for ``n`` latents (None when G is unconditional): W as a whole, so drawn as often as G
    saw each class (``G.c_shares``), uniformly when that is unknown (an imported generator)."""
    if not G.c_dim:
        return None
    if G.c_shares is None:
        return torch.randint(G.c_dim, [n], generator=gen)
    return torch.multinomial(G.c_shares, n, replacement=True, generator=gen)


def w_samples(G, gen: torch.Generator, n: int = 10_000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` latents of W for z drawn from ``gen`` (every class alike), their mean and their spread
    (the root mean square distance from the mean): [n, w_dim], [w_dim], []."""
    with torch.no_grad():
        z = torch.randn(n, G.z_dim, generator=gen).to(G.w_avg.device)
        w = G.mapping(z, random_classes(G, n, gen))[:, 0]
        mean = w.mean(0)
        return w, mean, (w - mean).square().sum(1).mean().sqrt()


def reference_latents(G, seeds, psi: float = 1.0, label: int = 0) -> torch.Tensor:
    """W+ latents [R, num_ws, w_dim] of the given seeds (z ~ N(0, I) from numpy's RandomState), of
    class ``label`` when G is conditional."""
    seeds = list(seeds)
    with torch.no_grad():
        return G.mapping(z_from_seeds(seeds, G.z_dim).to(G.w_avg.device), class_input(G, label, len(seeds)), psi=psi)


def apply_direction(w_ref: torch.Tensor, u: torch.Tensor, amounts, layers=None) -> torch.Tensor:
    """``w_ref + a u`` on the chosen W+ layers for each amount a.

    w_ref: [R, num_ws, w_dim]; u: [w_dim] (W) or [num_ws, w_dim] (W+); amounts: [m]
    -> ws [R, m, num_ws, w_dim].
    """
    num_ws = w_ref.shape[1]
    layers = check_layers(layers, num_ws)
    amounts = torch.as_tensor(amounts, dtype=w_ref.dtype, device=w_ref.device)
    sel = torch.zeros(num_ws, 1, device=w_ref.device, dtype=w_ref.dtype)
    sel[layers] = 1
    step = sel * u.to(w_ref)  # [num_ws, w_dim]
    return w_ref[:, None] + amounts[None, :, None, None] * step[None, None]


def synthesize(G, ws: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Images for ws [..., num_ws, w_dim] -> [..., C, H, W], without gradients, in chunks."""
    lead = ws.shape[:-2]
    flat = ws.reshape(-1, *ws.shape[-2:])
    with torch.no_grad():
        out = torch.cat([G.synthesis(flat[i:i + batch]) for i in range(0, len(flat), batch)])
    return out.reshape(*lead, *out.shape[1:])


def flatten_layers(w: torch.Tensor, layers) -> torch.Tensor:
    """The chosen W+ layers of latents [..., num_ws, w_dim], flattened: [..., len(layers) * w_dim]
    (the space where springs and angles are measured)."""
    return w[..., layers, :].reshape(*w.shape[:-2], -1)


def direction_on_layers(u: torch.Tensor, layers) -> torch.Tensor:
    """u on the moving ``layers``, flattened and made unit: [len(layers) * w_dim], the space where
    springs and angles are measured. A W direction [w_dim] repeats on each layer; a W+ one
    [num_ws, w_dim] keeps its own rows."""
    flat = u.repeat(len(layers)) if u.ndim == 1 else u[list(layers)].flatten()
    norm = flat.norm()
    if norm < 1e-8:
        raise ValueError(f"direction u is zero on layers {list(layers)}; expected it to move at least one of them")
    return flat / norm


def sample_grid(G, seeds, cols: int = 8, psi: float = 1.0, label: int | None = 0) -> np.ndarray:
    """Images of the given seeds (of class ``label``) tiled into a uint8 grid [rows*H, cols*W]
    (channels averaged). ``label`` None shows every class of a conditional G: row r is of class
    r % c_dim (of class 0 for an unconditional G)."""
    seeds = list(seeds)
    if label is None:
        rows = [seeds[i:i + cols] for i in range(0, len(seeds), cols)]
        ws = torch.cat([reference_latents(G, row, psi=psi, label=r % max(G.c_dim, 1)) for r, row in enumerate(rows)])
    else:
        ws = reference_latents(G, seeds, psi=psi, label=label)
    return tile(to_uint8(synthesize(G, ws)), cols)
