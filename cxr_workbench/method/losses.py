"""The losses of the method (paper Eqs. 1, 2, 4; the forms chosen are explained in docs/method.md).

All are batched over R references and n trajectory points and differentiable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DISTANCES", "SCHEDULES", "ANGLE_FORMS", "ssim_map", "pixel_distance_maps", "target_schedule",
           "image_loss", "spring_loss", "angle_loss"]

DISTANCES = ("l1", "l2", "ssim")     # D of Eq. 1
SCHEDULES = ("ramp", "constant")     # in-box targets c_i: c*i/n or c
ANGLE_FORMS = ("hinge", "literal")   # Eq. 4: a cone of half-angle theta', or the paper's line as printed


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-(torch.arange(size) - size // 2).float() ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, window: int = 7) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004) of images [N, C, H, W] -> [N, H, W] (mean over channels).

    Gaussian window (sigma 1.5; 7 px by default, small images), reflect padding so the map covers
    every pixel.
    """
    c = a.shape[1]
    w = _gaussian_window(window).to(a)[None, None].expand(c, 1, window, window)
    pad = window // 2

    def blur(x):
        return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(1)


def pixel_distance_maps(x_ref: torch.Tensor, x: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-pixel distance D between each point and its reference.

    x_ref: [R, C, H, W]; x: [R, n, C, H, W] -> [R, n, H, W].
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r}; expected one of {DISTANCES}")
    r, n = x.shape[:2]
    ref = x_ref[:, None].expand_as(x)
    if distance == "l1":
        return (x - ref).abs().mean(2)
    if distance == "l2":
        return (x - ref).square().mean(2)
    flat = x.reshape(r * n, *x.shape[2:])
    return (1 - ssim_map(ref.reshape_as(flat), flat)).reshape(r, n, *x.shape[-2:])


def target_schedule(c: float, n: int, schedule: str = "ramp") -> torch.Tensor:
    """In-box targets c_i, i = 1..n: ``ramp`` c*i/n (default) or ``constant`` c."""
    if schedule == "ramp":
        return c * torch.arange(1, n + 1, dtype=torch.float32) / n
    if schedule == "constant":
        return torch.full([n], float(c))
    raise ValueError(f"schedule={schedule!r}; expected one of {SCHEDULES}")


def image_loss(x_ref: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
               distance: str = "l1") -> torch.Tensor:
    """Eq. 1: ``L_X = |D(x_M, x_i,M) - c_i| + D(x*_M, x*_i,M)`` per point.

    x_ref: [R, C, H, W]; x: [R, n, C, H, W]; mask: [1 or R, 1, H, W], 1.0 inside the box
    (``masks.box_masks``); targets c_i: [n]. Returns [R, n]. D inside is the mean over the box,
    outside the mean over the complement.
    """
    d = pixel_distance_maps(x_ref, x, distance)  # [R, n, H, W]
    mask = mask.to(d)
    inside = (d * mask).sum((-2, -1)) / mask.sum((-2, -1))
    outside = (d * (1 - mask)).sum((-2, -1)) / (1 - mask).sum((-2, -1))
    return (inside - targets.to(d)).abs() + outside


def spring_loss(points: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Eq. 2: ``sum_{i=1}^{n-k} (||z_i - z_{i+k}||_2 - k sigma)^2``.

    points: [R, n, D] (optimised layers, flattened) -> [R].
    """
    if points.shape[1] <= k:
        return points.new_zeros(points.shape[0])
    dist = (points[:, k:] - points[:, :-k]).norm(dim=-1)
    return (dist - k * sigma).square().sum(1)


def angle_loss(points: torch.Tensor, ref: torch.Tensor, u: torch.Tensor, theta: float,
               form: str = "hinge", eps: float = 1e-8) -> torch.Tensor:
    """Eq. 4 with v_i = (z_i - z) / ||z_i - z||, angle_i = arccos(v_i . u).

    ``hinge`` (default): mean_i max(0, angle_i - theta), a cone of half-angle theta around u.
    ``literal``: the paper's mean_i angle_i - theta (theta then only shifts the value).
    points: [R, n, D]; ref: [R, D]; u: [D] or [R, D] unit; theta in radians. Returns [R].
    """
    v = points - ref[:, None]
    v = v / (v.norm(dim=-1, keepdim=True) + eps)
    u = u if u.ndim == 2 else u[None].expand(points.shape[0], -1)
    cos = (v * u[:, None]).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6)  # keep arccos' gradient finite
    angle = torch.arccos(cos)
    if form == "hinge":
        return (angle - theta).clamp_min(0).mean(1)
    if form == "literal":
        return angle.mean(1) - theta
    raise ValueError(f"angle form={form!r}; expected one of {ANGLE_FORMS}")
