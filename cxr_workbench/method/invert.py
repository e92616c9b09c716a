"""Bringing films into the latent space: GAN inversion into W+ (or W).

After the StyleGAN2 projector (Karras et al. 2020, ``projector.py`` of NVlabs): start at w_avg
(plus ``restarts - 1`` starts drawn around it), Adam with a learning-rate ramp up and cosine ramp
down, Gaussian noise on w that fades out early. The loss is pixel (L2 or L1) + SSIM, and on request
a feature term from the shipped oracle's backbone (``feature_weight``; LPIPS weights cannot be
downloaded here). The feature term is off by default: measured, it lowers the PSNR of generated
images and of films alike (``InvertConfig.feature_weight``). All images and restarts of a call are
one batch.

One deliberate difference from the projector: the per-layer noise maps are not optimised. The
workbench renders every latent with the generator's fixed noise (edits, PV, strips), so a
latent found with tuned noise would not reproduce its film when edited; with the noise fixed,
the projector's noise regulariser has nothing to act on. Everything the film needs must be in w.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxr_workbench.method.losses import ssim_map
from cxr_workbench.model.latents import w_samples
from cxr_workbench.model.readers import OracleReader
from cxr_workbench.model.stylegan2 import MAX_SEED
from cxr_workbench.settings import setting, validate_settings

__all__ = ["SPACES", "PIXEL_LOSSES", "InvertConfig", "InversionResult", "psnr", "mean_ssim", "check_images", "invert",
           "reconstruction_report"]

SPACES = ("w+", "w")
PIXEL_LOSSES = ("l2", "l1")


@dataclass
class InvertConfig:
    """Settings of an inversion; the schedule is NVlabs' projector's."""

    space: str = setting("w+", "optimise one w per W+ layer (w+) or one w for all (w)", choices=SPACES)
    steps: int = setting(300, "optimisation steps", low=1, high=100_000)
    lr: float = setting(0.1, "peak learning rate (the projector's)", low=0, high=1e6, open_low=True)
    lr_rampup: float = setting(0.05, "share of the steps spent ramping the lr up", low=0, high=1e6)
    lr_rampdown: float = setting(0.25, "share of the steps spent ramping it down (cosine)", low=0, high=1e6)
    noise_factor: float = setting(0.05, "initial noise on w, in units of the spread of W", low=0, high=1e6)
    noise_ramp: float = setting(0.75, "share of the steps over which that noise fades", low=0, high=1e6)
    restarts: int = setting(2, "starts per image: w_avg, then draws around it; the best is kept", low=1, high=64)
    pixel: str = setting("l2", "pixel loss", choices=PIXEL_LOSSES)
    pixel_weight: float = setting(1.0, "weight of the pixel loss", low=0, high=1e6)
    ssim_weight: float = setting(0.5, "weight of 1 - SSIM", low=0, high=1e6)
    # 0 by evidence (benchmarks/bench_tuning.py): the term cost 11 films the generator never saw 4.7 dB
    # (26.8 vs 31.5) and generated images 9.3 dB (40.5 vs 49.8); pixels and SSIM alone do better on both.
    feature_weight: float = setting(0.0, "weight of the oracle-backbone features (ignored without an oracle)",
                                    low=0, high=1e6)
    seed: int = setting(0, "seed of the restarts' draws", low=0, high=MAX_SEED)

    validate = validate_settings


@dataclass
class InversionResult:
    """What an inversion returns: the latents, the reconstructions and their errors per film."""
    ws: torch.Tensor        # [N, num_ws, w_dim] the recovered latents (W+ even for space="w")
    images: torch.Tensor    # [N, C, H, W] their renderings
    losses: torch.Tensor    # [N] final loss of the kept start
    psnr: torch.Tensor      # [N] dB, on the [-1, 1] range
    ssim: torch.Tensor      # [N] mean SSIM
    history: list = field(default_factory=list)  # mean loss per step


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images [N, C, H, W] in [-1, 1] (peak-to-peak 2)."""
    mse = (a - b).square().flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def mean_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of image pairs [N, 1, H, W] in [-1, 1], one value per pair."""
    return ssim_map(a, b).flatten(1).mean(1)


def _lr_at(t: float, cfg: InvertConfig) -> float:
    ramp = min(1.0, (1.0 - t) / max(cfg.lr_rampdown, 1e-8))
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return cfg.lr * ramp * min(1.0, t / max(cfg.lr_rampup, 1e-8))


def check_images(G, images: torch.Tensor) -> torch.Tensor:
    """Images [N, C, R, R] in [-1, 1] at the generator's size and channels, or a one-line error."""
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim == 3:
        images = images[:, None]
    expected = (G.img_channels, G.img_resolution, G.img_resolution)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images have shape {tuple(images.shape)}; expected [N, {', '.join(map(str, expected))}] "
                         "(load films with datasets.to_model_range)")
    if not torch.isfinite(images).all() or images.min() < -1.001 or images.max() > 1.001:
        raise ValueError("images must be finite and in [-1, 1]")
    return images


def invert(G, images: torch.Tensor, config: InvertConfig | None = None, oracle=None,
           progress: bool = True) -> InversionResult:
    """Latents whose renderings reproduce ``images`` [N, C, R, R] in [-1, 1] (see module docstring).
    ``oracle``: the severity oracle (or an ``OracleReader`` of it), whose features join the loss."""
    cfg = (config or InvertConfig()).validate()
    oracle = oracle.oracle if isinstance(oracle, OracleReader) else oracle
    target = check_images(G, images).to(G.w_avg.device)
    n, k = len(target), cfg.restarts
    gen = torch.Generator().manual_seed(cfg.seed)
    _, w_avg, w_std = w_samples(G, gen)  # the film's class is unknown: all of W
    with torch.no_grad():
        starts = w_avg[None].repeat(n * k, 1)
        if k > 1:  # the first start of each image is w_avg itself, the others lie around it
            jitter = torch.randn(n, k - 1, G.w_dim, generator=gen).to(target.device) * 0.5 * w_std / math.sqrt(G.w_dim)
            starts.view(n, k, -1)[:, 1:] += jitter
    layers = G.num_ws if cfg.space == "w+" else 1
    w_opt = starts[:, None].repeat(1, layers, 1).requires_grad_(True)  # [n * k, layers, w_dim]
    opt = torch.optim.Adam([w_opt], lr=cfg.lr, betas=(0.9, 0.999))
    goal = target.repeat_interleave(k, 0)
    goal_feats = oracle.pool(oracle.body(goal)).detach() if oracle is not None and cfg.feature_weight else None
    history = []
    per_start = torch.zeros(n * k)
    for step in tqdm(range(cfg.steps), disable=not progress, desc="invert", leave=False):
        t = step / cfg.steps
        for group in opt.param_groups:
            group["lr"] = _lr_at(t, cfg)
        noise = w_std / math.sqrt(G.w_dim) * cfg.noise_factor * max(0.0, 1 - t / max(cfg.noise_ramp, 1e-8)) ** 2
        ws = w_opt + torch.randn(w_opt.shape, generator=gen).to(w_opt.device) * noise
        imgs = G.synthesis(ws.expand(-1, G.num_ws, -1))
        per_start = _loss(imgs, goal, goal_feats, oracle, cfg)
        opt.zero_grad(set_to_none=True)
        per_start.sum().backward()
        opt.step()
        history.append(float(per_start.detach().mean()))
    with torch.no_grad():
        ws = w_opt.detach().expand(-1, G.num_ws, -1)
        imgs = G.synthesis(ws)
        final = _loss(imgs, goal, goal_feats, oracle, cfg).view(n, k)
        best = final.argmin(1)
        pick = torch.arange(n) * k + best
        ws, imgs = ws[pick].clone(), imgs[pick]
    return InversionResult(ws=ws, images=imgs, losses=final.min(1).values, psnr=psnr(imgs, target),
                           ssim=mean_ssim(imgs, target), history=history)


def _loss(imgs, goal, goal_feats, oracle, cfg: InvertConfig) -> torch.Tensor:
    """Per-image loss [B]: pixel + SSIM + oracle features."""
    diff = imgs - goal
    pixel = diff.square() if cfg.pixel == "l2" else diff.abs()
    loss = cfg.pixel_weight * pixel.flatten(1).mean(1) + cfg.ssim_weight * (1 - mean_ssim(imgs, goal))
    if goal_feats is not None:
        feats = oracle.pool(oracle.body(imgs.clamp(-1, 1)))
        loss = loss + cfg.feature_weight * F.mse_loss(feats, goal_feats, reduction="none").mean(1)
    return loss


def reconstruction_report(films: torch.Tensor, result: InversionResult, oracle=None) -> list[dict]:
    """Per film: how well the latent reproduces it (PSNR, SSIM, mean |error|) and, with the oracle,
    what the oracle reads off the film and off its reconstruction, and whether it finds the film
    plausible. A film from outside the model's domain shows as low PSNR and an implausible film."""
    rows = [dict(psnr=float(p), ssim=float(s), mean_abs_error=float((a - b).abs().mean()))
            for p, s, a, b in zip(result.psnr, result.ssim, films, result.images.cpu())]
    if oracle is not None:
        film, recon = oracle.predict(films), oracle.predict(result.images.clamp(-1, 1).cpu())
        for i, row in enumerate(rows):
            row.update(film_ctr=float(film["ctr"][i]), film_burden=float(film["opacity_burden"][i]),
                       film_plausible=bool(film["plausible"][i]), reconstruction_ctr=float(recon["ctr"][i]),
                       reconstruction_burden=float(recon["opacity_burden"][i]))
    return rows
