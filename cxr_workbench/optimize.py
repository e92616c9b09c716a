"""Batched trajectory optimisation (paper Eq. 3, plus Eq. 4 for LO + direction) and linear
translation along a direction.

All n points of all R references move together: one forward and one backward of R*n images
per Adam step. Only the chosen W+ layers move; the others stay at w_ref. The loop stops when the
relative decrease of the loss over a window falls below ``tol`` (or at ``max_steps``).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from .directions import apply_direction, check_direction, check_layers, synthesize
from .losses import DISTANCES, angle_loss, image_loss, spring_loss, target_schedule
from .masks import Box
from .stylegan2 import z_from_seeds

METHODS = ("lo", "lo+dir", "linear")


@dataclass
class LOConfig:
    n: int = 12                   # points in the trajectory (paper)
    sigma: float = 0.3            # spring rest length (paper's best)
    theta_deg: float = 35.0       # half-angle of the cone around u (paper's best theta')
    angle_form: str = "hinge"     # "hinge" (DESIGN) or "literal" (paper's Eq. 4 as printed)
    c: float = 0.1                # in-box change targeted at the last point, in units of D
    schedule: str = "ramp"        # c_i = c i / n ("ramp") or c ("constant")
    distance: str = "l1"          # D: "l1", "l2" or "ssim"
    alpha: float = 1.0            # weight of sum_i L_X
    beta: float = 1.0             # weight of L_spring(k=1)
    gamma: float = 1.0            # weight of L_spring(k=2)
    delta: float = 1.0            # weight of L_angle (ignored by Baseline LO)
    layers: tuple[int, ...] | None = (0, 1, 2, 3, 4, 5)  # W+ layers that move (None: all)
    lr: float = 0.01              # Adam step size
    max_steps: int = 300
    min_steps: int = 30
    window: int = 15              # plateau: the best loss fell by less than tol (relative) ...
    tol: float = 0.01             # ... over the last window steps
    lr_drops: int = 2             # on a plateau, multiply lr by lr_drop this many times, then stop
    lr_drop: float = 0.3
    init_spacing: float = 0.5     # initial points at i * init_spacing * sigma along the start direction
    seed: int = 0

    def validate(self) -> "LOConfig":
        if not isinstance(self.n, int) or self.n < 3:
            raise ValueError(f"n={self.n!r}; expected an integer >= 3 points")
        if not self.sigma > 0:
            raise ValueError(f"sigma={self.sigma!r}; expected a positive spring rest length")
        if not 0 < self.theta_deg < 180:
            raise ValueError(f"theta_deg={self.theta_deg!r}; expected an angle in (0, 180) degrees")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance={self.distance!r}; expected one of {DISTANCES}")
        if self.angle_form not in ("hinge", "literal"):
            raise ValueError(f"angle_form={self.angle_form!r}; expected 'hinge' or 'literal'")
        if not 0 < self.lr_drop <= 1 or self.lr_drops < 0:
            raise ValueError(f"lr_drop={self.lr_drop!r}, lr_drops={self.lr_drops!r}; expected lr_drop in (0, 1] "
                             "and lr_drops >= 0")
        if self.max_steps < 1 or self.min_steps < 0 or self.window < 1:
            raise ValueError(f"max_steps={self.max_steps}, min_steps={self.min_steps}, window={self.window}; "
                             "expected max_steps >= 1, min_steps >= 0, window >= 1")
        for name in ("alpha", "beta", "gamma", "delta", "lr", "c"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected a non-negative number")
        return self


@dataclass
class Trajectory:
    method: str                    # "lo" (Baseline LO), "lo+dir" or "linear"
    w_ref: torch.Tensor            # [R, num_ws, w_dim]
    points: torch.Tensor           # [R, n, num_ws, w_dim]
    reference_images: torch.Tensor  # [R, C, H, W]
    images: torch.Tensor           # [R, n, C, H, W]
    config: LOConfig
    history: dict = field(default_factory=dict)  # per-step losses, mean over references
    steps: int = 0
    status: str = "done"           # "converged", "max_steps", "stopped", "nan" or "done" (linear)
    message: str = ""
    wall_time: float = 0.0

    def sequence(self, r: int = 0) -> torch.Tensor:
        """The reference followed by the n edits: [n + 1, C, H, W] (what PV is computed on)."""
        return torch.cat([self.reference_images[r:r + 1], self.images[r]])

    def summary(self) -> dict:
        return dict(method=self.method, steps=self.steps, status=self.status, message=self.message,
                    wall_time=self.wall_time, config=asdict(self.config))


def _prepare(G, w_ref: torch.Tensor, box: Box | None, config: LOConfig):
    config.validate()
    if w_ref.ndim == 2:
        w_ref = w_ref[None]
    if w_ref.ndim != 3 or w_ref.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f"w_ref has shape {tuple(w_ref.shape)}; expected [R, {G.num_ws}, {G.w_dim}] "
                         f"or [{G.num_ws}, {G.w_dim}]")
    if box is not None and box.resolution != G.img_resolution:
        raise ValueError(f"box is for {box.resolution} px but the generator makes {G.img_resolution} px; "
                         "use box.at_resolution()")
    layers = check_layers(config.layers, G.num_ws)
    return w_ref.detach().to(G.w_avg.device, torch.float32), layers


def flatten_layers(w: torch.Tensor, layers) -> torch.Tensor:
    """The chosen W+ layers of latents [..., num_ws, w_dim], flattened: [..., len(layers) * w_dim]
    (the space where springs and angles are measured)."""
    return w[..., layers, :].reshape(*w.shape[:-2], -1)


def tile_direction(u: torch.Tensor, n_layers: int) -> torch.Tensor:
    """A unit direction u [w_dim] tiled over ``n_layers`` layers and made unit again: [n_layers * w_dim]."""
    return u.repeat(n_layers) / math.sqrt(n_layers)


def objective_terms(x_ref, images, box: Box, points, ref, u_flat, config: LOConfig) -> dict:
    """The terms of Eq. 3 (+ Eq. 4 when ``u_flat`` is given), per reference.

    x_ref: [R, C, H, W]; images: [R, n, C, H, W]; points: [R, n, D] moving layers flattened;
    ref: [R, D]; u_flat: [D] unit or None. Returns dict of [R] tensors, ``total`` included.
    """
    targets = target_schedule(config.c, images.shape[1], config.schedule).to(images.device)
    terms = dict(image=image_loss(x_ref, images, box, targets, config.distance).sum(1),
                 spring1=spring_loss(points, 1, config.sigma), spring2=spring_loss(points, 2, config.sigma))
    terms["angle"] = angle_loss(points, ref, u_flat, math.radians(config.theta_deg), config.angle_form) \
        if u_flat is not None else torch.zeros_like(terms["image"])
    terms["total"] = (config.alpha * terms["image"] + config.beta * terms["spring1"] + config.gamma * terms["spring2"]
                      + (config.delta * terms["angle"] if u_flat is not None else 0))
    return terms


def evaluate_objective(G, traj: "Trajectory", box: Box, u: torch.Tensor | None, layers=None) -> dict:
    """The objective of a finished trajectory, measured on ``layers`` (default: all W+ layers), so
    trajectories found on different layer sets can be compared. Returns floats (mean over R)."""
    layers = check_layers(layers, G.num_ws)
    R, n = traj.points.shape[:2]
    flat = lambda w: flatten_layers(w, layers)
    u_flat = None if u is None else tile_direction(check_direction(u, G.w_dim), len(layers))
    with torch.no_grad():
        terms = objective_terms(traj.reference_images, traj.images, box, flat(traj.points), flat(traj.w_ref),
                                u_flat, traj.config)
    return {k: float(v.mean()) for k, v in terms.items()}


def optimize_trajectory(G, w_ref: torch.Tensor, box: Box, u: torch.Tensor | None = None,
                        config: LOConfig | None = None, progress: bool = True,
                        callback: Callable[[int, dict], bool | None] | None = None,
                        callback_every: int = 10) -> Trajectory:
    """Find n latent points whose images change only inside ``box`` (Baseline LO when u is None,
    LO + direction otherwise).

    w_ref: [R, num_ws, w_dim] (or [num_ws, w_dim]); u: [w_dim] direction in W (its sign matters).
    ``callback(step, info)`` is called every ``callback_every`` steps with the current losses and
    images (``info["images"]`` [R, n, C, H, W]); returning True stops the run.
    """
    config = config or LOConfig()
    w_ref, layers = _prepare(G, w_ref, box, config)
    device = w_ref.device
    R, n, L, w_dim = w_ref.shape[0], config.n, len(layers), G.w_dim
    method = "lo" if u is None else "lo+dir"
    gen = torch.Generator().manual_seed(config.seed)

    if u is None:
        start = torch.randn(R, L * w_dim, generator=gen)
        u_flat = None
    else:
        u = check_direction(u, w_dim).to(device)
        u_flat = tile_direction(u, L)
        start = u_flat.cpu()[None].expand(R, -1)
    start = (start / start.norm(dim=-1, keepdim=True)).to(device)
    steps_along = torch.arange(1, n + 1, device=device, dtype=torch.float32) * config.init_spacing * config.sigma
    jitter = 1e-3 * config.sigma * torch.randn(R, n, L * w_dim, generator=gen).to(device)
    offset = (steps_along[None, :, None] * start[:, None] + jitter).requires_grad_(True)  # [R, n, L*w_dim]

    ref_sel = flatten_layers(w_ref, layers)  # [R, L * w_dim]
    with torch.no_grad():
        x_ref = G.synthesis(w_ref)
    opt = torch.optim.Adam([offset], lr=config.lr)
    history = {k: [] for k in ("image", "spring1", "spring2", "angle", "total")}
    status, message = "max_steps", ""
    # Each reference keeps its best points: Adam wobbles, and a NaN must not cost the good points.
    best_offset = offset.detach().clone()
    best_total = torch.full([R], math.inf, device=device)
    best_mean = []  # best mean total so far, per step (the plateau rule)
    drops, plateau_from = 0, 0
    t0 = time.perf_counter()

    def full_ws(off):
        ws = w_ref[:, None].repeat(1, n, 1, 1)
        ws[:, :, layers] = (ref_sel[:, None] + off).reshape(R, n, L, w_dim)
        return ws

    bar = tqdm(range(config.max_steps), disable=not progress, desc=method, leave=False)
    step = 0
    for step in bar:
        ws = full_ws(offset)
        images = G.synthesis(ws.reshape(R * n, G.num_ws, w_dim)).reshape(R, n, *x_ref.shape[1:])
        terms = objective_terms(x_ref, images, box, ref_sel[:, None] + offset, ref_sel, u_flat, config)
        total = terms["total"].sum()
        if not torch.isfinite(total):
            status, message = "nan", (f"loss became non-finite at step {step}; kept each reference's best points "
                                      "before it")
            warnings.warn(message)
            break
        with torch.no_grad():
            better = terms["total"] < best_total
            best_total = torch.where(better, terms["total"], best_total)
            best_offset[better] = offset[better]
        for k, v in terms.items():
            history[k].append(float(v.detach().mean()))
        if callback is not None and step % callback_every == 0:
            if callback(step, dict(step=step, images=images.detach(),
                                   **{k: v[-1] for k, v in history.items()})):
                status, message = "stopped", f"stopped by the callback at step {step}"
                break
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        h = history["total"]
        best_mean.append(min(best_mean[-1], h[-1]) if best_mean else h[-1])
        # Best-so-far, not the last value: one Adam wobble upwards must not end the run.
        if step + 1 >= max(config.min_steps, plateau_from + config.window + 1):
            before, now = best_mean[-config.window - 1], best_mean[-1]
            if (before - now) / (abs(before) + 1e-12) < config.tol:
                if drops == config.lr_drops:
                    status = "converged"
                    break
                drops, plateau_from = drops + 1, step + 1
                for group in opt.param_groups:
                    group["lr"] *= config.lr_drop
        bar.set_postfix(loss=f"{h[-1]:.4f}")
    bar.close()

    ws = full_ws(best_offset)
    with torch.no_grad():
        images = synthesize(G, ws)
    return Trajectory(method=method, w_ref=w_ref, points=ws.detach(), reference_images=x_ref, images=images,
                      config=config, history=history, steps=step + 1, status=status, message=message,
                      wall_time=time.perf_counter() - t0)


def translate_along(G, w_ref: torch.Tensor, u: torch.Tensor, config: LOConfig | None = None,
                    step_size: float | None = None) -> Trajectory:
    """Linear translation (paper Fig. 3, row 3): w_i = w_ref + i * step_size * u on the chosen
    layers, i = 1..n (``step_size`` defaults to sigma, the spring rest length)."""
    config = config or LOConfig()
    w_ref, layers = _prepare(G, w_ref, None, config)
    u = check_direction(u, G.w_dim).to(w_ref.device)
    size = config.sigma if step_size is None else step_size
    t0 = time.perf_counter()
    ws = apply_direction(w_ref, u, torch.arange(1, config.n + 1) * size, layers)
    with torch.no_grad():
        x_ref = G.synthesis(w_ref)
    return Trajectory(method="linear", w_ref=w_ref, points=ws, reference_images=x_ref,
                      images=synthesize(G, ws), config=config, wall_time=time.perf_counter() - t0)


def run_method(G, method: str, w_ref, box: Box, u=None, config: LOConfig | None = None, **kw) -> Trajectory:
    """One entry point for the three methods compared in the paper. ``kw`` (progress, callback ...)
    goes to ``optimize_trajectory``; linear translation has no loop and ignores it."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}")
    if method != "lo" and u is None:
        raise ValueError(f"method {method!r} needs a direction u")
    if method == "linear":
        return translate_along(G, w_ref, u, config)
    return optimize_trajectory(G, w_ref, box, u if method == "lo+dir" else None, config, **kw)


def reference_latents(G, seeds, psi: float = 1.0) -> torch.Tensor:
    """W+ latents [R, num_ws, w_dim] of the given seeds (z ~ N(0, I) from numpy's RandomState)."""
    with torch.no_grad():
        return G.mapping(z_from_seeds(seeds, G.z_dim).to(G.w_avg.device), psi=psi)

