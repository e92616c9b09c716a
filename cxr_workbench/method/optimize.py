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
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
from tqdm.auto import tqdm

from cxr_workbench.imaging.masks import Box, box_masks
from cxr_workbench.method.losses import (
    ANGLE_FORMS,
    DISTANCES,
    SCHEDULES,
    angle_loss,
    image_loss,
    spring_loss,
    target_schedule,
)
from cxr_workbench.model.latents import (
    apply_direction,
    check_direction,
    check_layers,
    direction_on_layers,
    flatten_layers,
    parse_layers,
    synthesize,
)
from cxr_workbench.settings import setting, validate_settings

__all__ = ["METHODS", "METHOD_LABELS", "LOConfig", "NAMED_CONFIGS", "named_config", "Trajectory", "objective_terms",
           "directions_on_layers", "evaluate_objective", "optimize_trajectory", "interpolate_points", "translate_along",
           "BATCH_MEMORY", "activation_bytes", "references_per_loop", "run_method", "join_trajectories"]

METHODS = ("lo", "lo+dir", "linear")
METHOD_LABELS = {"lo": "Baseline LO", "linear": "Linear translation", "lo+dir": "LO + direction"}


@dataclass(frozen=True)
class LOConfig:
    """Settings of one trajectory optimisation; defaults from the paper where it gives them
    (docs/method.md says why for the rest). Each field's metadata is the one definition of its
    meaning and range: ``validate`` and the CLI's options are derived from it (``settings``)."""

    n: int = setting(12, "points in the trajectory (paper: 12)", low=3, high=1000)
    sigma: float = setting(0.3, "spring rest length between consecutive points (paper's best: 0.3)", low=0, high=100,
                            open_low=True)
    theta_deg: float = setting(35.0, "half-angle of the cone around u, degrees (paper's best theta': 35)",
                                low=0, high=180, open_low=True, open_high=True)
    angle_form: str = setting("hinge", "Eq. 4 form: hinge (a cone) or literal (as printed)", choices=ANGLE_FORMS)
    c: float = setting(0.1, "in-box change targeted at the last point, in units of D", low=0, high=4)
    schedule: str = setting("ramp", "in-box targets: ramp c*i/n or constant c", choices=SCHEDULES)
    distance: str = setting("l1", "image distance D of Eq. 1", choices=DISTANCES)
    alpha: float = setting(1.0, "weight of the image loss sum_i L_X", low=0, high=1e6)
    beta: float = setting(1.0, "weight of L_spring(k=1)", low=0, high=1e6)
    gamma: float = setting(1.0, "weight of L_spring(k=2)", low=0, high=1e6)
    delta: float = setting(1.0, "weight of L_angle (ignored by Baseline LO)", low=0, high=1e6)
    layers: tuple[int, ...] | None = setting((0, 1, 2, 3, 4, 5), "W+ layers that move, e.g. 0-5 ('all': all)",
                                             low=0, optional=True, parse=parse_layers)
    lr: float = setting(0.01, "Adam step size", low=0, high=10, open_low=True)
    max_steps: int = setting(300, "step cap", low=1, high=1_000_000)
    min_steps: int = setting(30, "no plateau stop before this step", low=0, high=1_000_000)
    window: int = setting(15, "plateau: the best loss fell by less than tol (relative) over this many steps",
                           low=1, high=1_000_000)
    tol: float = setting(0.01, "plateau tolerance (relative)", low=0, high=1)
    lr_drops: int = setting(2, "on a plateau, multiply lr by lr_drop this many times, then stop", low=0, high=100)
    lr_drop: float = setting(0.3, "lr factor on a plateau", low=0, high=1, open_low=True)
    init_spacing: float = setting(0.5, "initial points at i * init_spacing * sigma along the start direction",
                                   low=0, high=100)
    init_seed: int = setting(0, "seed of the start jitter and of Baseline LO's random start direction",
                              low=0, high=2 ** 63 - 1)
    coarse: int = setting(1, "optimise every k-th point only (n/k points, springs k*sigma) and place the others "
                             "on straight lines between them in W+; 1: every point (the paper)", low=1, high=100)

    validate = validate_settings

    def __post_init__(self):
        # checked once, when made (replace() makes a new one): a config that exists is valid
        validate_settings(self)
        if self.n % self.coarse or self.n // self.coarse < 3:
            raise ValueError(f"coarse={self.coarse} with n={self.n}; expected a divisor of n that leaves at least "
                             "3 optimised points")
        if self.coarse * self.sigma > 100:
            raise ValueError(f"coarse={self.coarse} with sigma={self.sigma}; the optimised points' springs "
                             "(coarse * sigma) must stay within 100")


# Named settings: ours (the defaults, docs/method.md says why); the paper's as printed (the same
# in-box target c for every point, Eq. 4 literally); and for augmentation sets, ours with an
# in-box change of 0.3 at the last point, where 0.1 leaves most cardiomegaly edits below the
# clinical CTR threshold, the points starting a spring length apart along u (not half of one, so
# the springs need not stretch the path first) and at most 50 steps at 2x the lr: 1.85x the
# samples per hour of the earlier 100 steps at 3x the lr, at the same oracle readings and PV within
# 3 % (benchmarks/bench_augment.py; docs/method.md).
# The editor's fast setting: 4 of the 12 points optimised (each optimised point stands for 3 of
# the paper's), a fixed 120 steps at 3x the lr from points a spring length apart, the others
# interpolated: a strip in about 3 s on 2 cores with the generator compiled, PV, trend and
# leakage near the full setting's (benchmarks/bench_interactive.py; docs/method.md).
NAMED_CONFIGS = {"ours": LOConfig(), "literal": LOConfig(schedule="constant", angle_form="literal"),
                 "augment": LOConfig(c=0.3, max_steps=50, lr=0.02, init_spacing=1.0),
                 "interactive": LOConfig(coarse=3, max_steps=120, min_steps=120, lr=0.03, init_spacing=1.0,
                                         lr_drops=0)}


def named_config(name: str, **overrides) -> LOConfig:
    """The named settings with ``overrides`` (LOConfig fields), validated."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"settings={name!r}; expected one of {sorted(NAMED_CONFIGS)}")
    try:
        return replace(NAMED_CONFIGS[name], **overrides)
    except TypeError as e:  # an unknown field name
        raise ValueError(f"settings {sorted(overrides)}: {e}") from None


@dataclass
class Trajectory:
    """An optimised trajectory: its latents, images and the loss history."""
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


def _prepare(G, w_ref: torch.Tensor, box, config: LOConfig):
    """The run's inputs resolved once: the references [R, num_ws, w_dim] on G's device, the moving
    layers, and the box masks [1 or R, 1, H, W] (``box``: one, or one per reference; None: no
    mask). The config was checked when it was made."""
    if w_ref.ndim == 2:
        w_ref = w_ref[None]
    if w_ref.ndim != 3 or w_ref.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f"w_ref has shape {tuple(w_ref.shape)}; expected [R, {G.num_ws}, {G.w_dim}] "
                         f"or [{G.num_ws}, {G.w_dim}]")
    layers = check_layers(config.layers, G.num_ws)
    device = G.w_avg.device
    mask = None if box is None else box_masks(box, w_ref.shape[0], G.img_resolution, device)
    return w_ref.detach().to(device, torch.float32), layers, mask


def objective_terms(x_ref, images, mask, points, ref, u_flat, config: LOConfig) -> dict:
    """The terms of Eq. 3 (+ Eq. 4 when ``u_flat`` is given), per reference.

    x_ref: [R, C, H, W]; images: [R, n, C, H, W]; mask: [1 or R, 1, H, W] (``masks.box_masks``); points:
    [R, n, D] moving layers flattened; ref: [R, D]; u_flat: [D] or [R, D] unit, or None. Returns
    dict of [R] tensors, ``total`` included.
    """
    targets = target_schedule(config.c, images.shape[1], config.schedule).to(images.device)
    terms = dict(image=image_loss(x_ref, images, mask, targets, config.distance).sum(1),
                 spring1=spring_loss(points, 1, config.sigma), spring2=spring_loss(points, 2, config.sigma))
    terms["angle"] = angle_loss(points, ref, u_flat, math.radians(config.theta_deg), config.angle_form) \
        if u_flat is not None else torch.zeros_like(terms["image"])
    terms["total"] = (config.alpha * terms["image"] + config.beta * terms["spring1"] + config.gamma * terms["spring2"]
                      + (config.delta * terms["angle"] if u_flat is not None else 0))
    return terms


def directions_on_layers(G, u, R: int, layers) -> torch.Tensor:
    """u on the moving ``layers`` for each of R references: [R, L * w_dim] unit rows. ``u`` is one
    direction ([w_dim] or [num_ws, w_dim]) for all references or a list of R (varied boxes)."""
    us = list(u) if isinstance(u, (list, tuple)) else [u] * R
    if len(us) != R:
        raise ValueError(f"{len(us)} directions for {R} references; expected one, or one per reference")
    return torch.stack([direction_on_layers(check_direction(v, G.w_dim, G.num_ws), layers) for v in us])


def evaluate_objective(G, traj: "Trajectory", box, u, layers=None) -> dict:
    """The objective of a finished trajectory, measured on ``layers`` (default: all W+ layers), so
    trajectories found on different layer sets can be compared. ``box`` and ``u``: one, or one per
    reference. Returns floats (mean over R)."""
    layers = check_layers(layers, G.num_ws)
    R, n = traj.points.shape[:2]
    def flat(w):
        return flatten_layers(w, layers)
    u_flat = None if u is None else directions_on_layers(G, u, R, layers).to(traj.points)
    with torch.no_grad():
        mask = box_masks(box, R, traj.images.shape[-1], traj.images.device)
        terms = objective_terms(traj.reference_images, traj.images, mask, flat(traj.points), flat(traj.w_ref),
                                u_flat, traj.config)
    return {k: float(v.mean()) for k, v in terms.items()}


def _start(G, u, R: int, layers: list[int], config: LOConfig, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The points' first offsets from the reference on the moved layers, [R, n, L * w_dim] requiring
    grad: spaced along u (or a random unit direction for Baseline LO) with a little jitter; and u on
    those layers [R, L * w_dim] (None for Baseline LO)."""
    L, n, w_dim = len(layers), config.n, G.w_dim
    gen = torch.Generator().manual_seed(config.init_seed)
    if u is None:
        start = torch.randn(R, L * w_dim, generator=gen)
        u_flat = None
    else:
        u_flat = directions_on_layers(G, u, R, layers).to(device)  # [R, L * w_dim]
        start = u_flat.cpu()
    start = (start / start.norm(dim=-1, keepdim=True)).to(device)
    steps_along = torch.arange(1, n + 1, device=device, dtype=torch.float32) * config.init_spacing * config.sigma
    jitter = 1e-3 * config.sigma * torch.randn(R, n, L * w_dim, generator=gen).to(device)
    return (steps_along[None, :, None] * start[:, None] + jitter).requires_grad_(True), u_flat


class _Plateau:
    """The stopping rule: when the best mean total so far has improved by less than ``tol`` (relative)
    over ``window`` steps, drop the learning rate (``lr_drops`` times), then stop. Best-so-far, not
    the last value: one Adam wobble upwards must not end the run."""

    def __init__(self, config: LOConfig):
        self.config, self.best_mean, self.drops, self.plateau_from = config, [], 0, 0

    def converged(self, step: int, total: float, opt: torch.optim.Optimizer) -> bool:
        cfg, best = self.config, self.best_mean
        best.append(min(best[-1], total) if best else total)
        if step + 1 >= max(cfg.min_steps, self.plateau_from + cfg.window + 1):
            before, now = best[-cfg.window - 1], best[-1]
            if (before - now) / (abs(before) + 1e-12) < cfg.tol:
                if self.drops == cfg.lr_drops:
                    return True
                self.drops, self.plateau_from = self.drops + 1, step + 1
                for group in opt.param_groups:
                    group["lr"] *= cfg.lr_drop
        return False


def optimize_trajectory(G, w_ref: torch.Tensor, box: Box, *, u: torch.Tensor | None = None,
                        config: LOConfig | None = None, progress: bool = True,
                        callback: Callable[[int, dict], bool | None] | None = None,
                        callback_every: int = 10) -> Trajectory:
    """Find n latent points whose images change only inside ``box`` (Baseline LO when u is None,
    LO + direction otherwise).

    w_ref: [R, num_ws, w_dim] (or [num_ws, w_dim]); u: [w_dim] direction in W or [num_ws, w_dim] in W+
    (its sign matters), or a list of one per reference; ``box``: a Box, or a list of one per reference.
    ``callback(step, info)`` is called every ``callback_every`` steps with the current losses and
    images (``info["images"]`` [R, n, C, H, W]); returning True stops the run.
    """
    config = config or LOConfig()
    w_ref, layers, mask = _prepare(G, w_ref, box, config)
    if config.coarse == 1:
        return _optimize(G, w_ref, layers, mask, u, config, progress, callback, callback_every)
    k = config.coarse
    rough = _optimize(G, w_ref, layers, mask, u, replace(config, n=config.n // k, sigma=config.sigma * k, coarse=1),
                      progress, callback, callback_every)
    t0 = time.perf_counter()
    points = interpolate_points(w_ref, rough.points, k)
    return replace(rough, points=points, images=synthesize(G, points), config=config,
                   wall_time=rough.wall_time + time.perf_counter() - t0)


def _optimize(G, w_ref: torch.Tensor, layers: list[int], mask: torch.Tensor, u, config: LOConfig, progress: bool,
              callback, callback_every: int) -> Trajectory:
    """The loop of ``optimize_trajectory`` on resolved inputs (``_prepare``), every point optimised."""
    device = w_ref.device
    R, n, L, w_dim = w_ref.shape[0], config.n, len(layers), G.w_dim
    method = "lo" if u is None else "lo+dir"
    offset, u_flat = _start(G, u, R, layers, config, device)

    ref_sel = flatten_layers(w_ref, layers)  # [R, L * w_dim]
    with torch.no_grad():
        x_ref = G.synthesis(w_ref)
    opt = torch.optim.Adam([offset], lr=config.lr)
    history = {k: [] for k in ("image", "spring1", "spring2", "angle", "total")}
    status, message = "max_steps", ""
    # Each reference keeps its best points: Adam wobbles, and a NaN must not cost the good points.
    best_offset = offset.detach().clone()
    best_total = torch.full([R], math.inf, device=device)
    plateau = _Plateau(config)
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
        terms = objective_terms(x_ref, images, mask, ref_sel[:, None] + offset, ref_sel, u_flat, config)
        total = terms["total"].sum()
        if not torch.isfinite(total):
            found = torch.isfinite(best_total)
            status = "nan"
            message = (f"loss became non-finite at step {step}; " + (
                "kept each reference's best points before it" if found.all() else
                f"references {found.logical_not().nonzero().flatten().tolist()} had no finite step, so no points"))
            warnings.warn(message, stacklevel=2)
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
        if plateau.converged(step, history["total"][-1], opt):
            status = "converged"
            break
        bar.set_postfix(loss=f"{history['total'][-1]:.4f}")
    bar.close()

    ws = full_ws(best_offset)
    with torch.no_grad():
        images = synthesize(G, ws)
    return Trajectory(method=method, w_ref=w_ref, points=ws.detach(), reference_images=x_ref, images=images,
                      config=config, history=history, steps=step + 1, status=status, message=message,
                      wall_time=time.perf_counter() - t0)


def interpolate_points(w_ref: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """k points for each optimised one, on straight lines in W+ from the reference through the
    optimised points (``LOConfig.coarse``): the (j*k)-th point is the j-th optimised one.

    w_ref: [R, num_ws, w_dim]; points: [R, m, num_ws, w_dim]. Returns [R, m * k, num_ws, w_dim]."""
    path = torch.cat([w_ref[:, None], points], dim=1)            # [R, m + 1, num_ws, w_dim]
    t = torch.arange(1, points.shape[1] * k + 1, device=points.device) / k
    lo = t.floor().long().clamp(max=points.shape[1] - 1)
    frac = (t - lo)[None, :, None, None]
    return path[:, lo] * (1 - frac) + path[:, lo + 1] * frac


def translate_along(G, w_ref: torch.Tensor, u: torch.Tensor, config: LOConfig | None = None,
                    step_size: float | None = None) -> Trajectory:
    """Linear translation (paper Fig. 3, row 3): w_i = w_ref + i * step_size * u on the chosen
    layers, i = 1..n (``step_size`` defaults to sigma, the spring rest length)."""
    config = config or LOConfig()
    w_ref, layers, _ = _prepare(G, w_ref, None, config)
    u = check_direction(u, G.w_dim, G.num_ws).to(w_ref.device)
    size = config.sigma if step_size is None else step_size
    t0 = time.perf_counter()
    ws = apply_direction(w_ref, u, torch.arange(1, config.n + 1) * size, layers)
    with torch.no_grad():
        x_ref = G.synthesis(w_ref)
    return Trajectory(method="linear", w_ref=w_ref, points=ws, reference_images=x_ref,
                      images=synthesize(G, ws), config=config, wall_time=time.perf_counter() - t0)


BATCH_MEMORY = 8 * 2 ** 30  # bytes of activations one optimisation loop may hold (run_method's chunks)


def activation_bytes(G) -> int:
    """About what one image's forward and backward pass through ``G.synthesis`` holds in memory:
    each synthesis layer keeps about four float32 maps of its size for the backward pass (an
    estimate that errs on the safe side)."""
    per_block = [getattr(G.synthesis, f"b{r}").conv1.weight.shape[0] * r * r for r in G.synthesis.block_resolutions]
    return int(4 * 4 * 3 * sum(per_block))  # 4 maps of 4 bytes per layer, 3 layers per block (conv0, conv1, rgb)


def references_per_loop(G, n: int, memory: int = BATCH_MEMORY) -> int:
    """How many references' n images fit one loop within ``memory`` bytes (at least 1)."""
    return max(1, memory // (n * activation_bytes(G)))


def run_method(G, method: str, w_ref, box, *, u=None, config: LOConfig | None = None,
               memory: int = BATCH_MEMORY, **kw) -> Trajectory:
    """One entry point for the three methods compared in the paper. ``box`` and ``u``: one for all
    references, or a list of one per reference. ``kw`` (progress, callback ...) goes to
    ``optimize_trajectory``; linear translation has no loop and ignores it.

    References whose images would not fit ``memory`` bytes in one loop (``references_per_loop``:
    large generators, many references) are optimised in chunks, one after the other, and their
    trajectories joined; each chunk then converges on its own, as separate runs would."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}")
    if method != "lo" and u is None:
        raise ValueError(f"method {method!r} needs a direction u")
    w_ref = w_ref[None] if w_ref.ndim == 2 else w_ref
    if method == "linear":
        if not isinstance(u, (list, tuple)):
            return translate_along(G, w_ref, u, config)
        return join_trajectories([translate_along(G, w_ref[i:i + 1], v, config) for i, v in enumerate(u)])
    u = u if method == "lo+dir" else None
    per = references_per_loop(G, (config or LOConfig()).n, memory)
    if len(w_ref) <= per:
        return optimize_trajectory(G, w_ref, box, u=u, config=config, **kw)
    def rows(x, i):  # a per-reference list is split with the references; a shared box or u is not
        return x[i:i + per] if isinstance(x, (list, tuple)) else x
    parts = [optimize_trajectory(G, w_ref[i:i + per], rows(box, i), u=rows(u, i), config=config, **kw)
             for i in range(0, len(w_ref), per)]
    return join_trajectories(parts)


def join_trajectories(parts: list[Trajectory]) -> Trajectory:
    """Trajectories of chunks of references as one: tensors concatenated along the references; the
    steps and history of the longest chunk, the summed wall time, the worst status."""
    longest = max(parts, key=lambda t: t.steps)
    order = ("nan", "stopped", "max_steps", "converged", "done")
    tensors = {k: torch.cat([getattr(t, k) for t in parts]) for k in ("w_ref", "points", "reference_images", "images")}
    return Trajectory(method=parts[0].method, config=parts[0].config, **tensors, history=longest.history,
                      steps=longest.steps, status=min((t.status for t in parts), key=order.index),
                      message="; ".join(t.message for t in parts if t.message),
                      wall_time=sum(t.wall_time for t in parts))
