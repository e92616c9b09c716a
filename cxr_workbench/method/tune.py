"""Pivotal tuning (PTI, Roich et al. 2021): after a film is inverted to a pivot latent, fine-tune a
copy of the synthesis weights so that the pivot renders the film itself, ribs and all.

The loss is PTI's with MS-SSIM in place of LPIPS (``pytorch-msssim``; LPIPS needs downloaded
weights): L2 + (1 - MS-SSIM) between the tuned rendering of each pivot and its film, plus PTI's
locality regulariser: latents on the way from the pivot toward random latents of W (at a distance
of ``locality_radius`` times the spread of W) must render as the untuned generator renders them,
so the tuned generator changes near the pivots only and an edit away from the pivot still means
what it meant. The mapping network is not tuned: W, its PCA and the directions found in it stay.

All films of a call are tuned together into one generator (PTI's multi-image variant); tune one
film per call for the closest reconstruction. The tuned weights are kept as a delta from the
generator they were tuned from (``save_tuning``): weights-only, checked on load against that
generator and against the tuned generator's hash (``load_tuning``).
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxr_workbench.io import atomic_write, torch_load
from cxr_workbench.method.invert import check_images, psnr
from cxr_workbench.model.checkpoints import generator_key
from cxr_workbench.model.latents import check_latents, w_samples
from cxr_workbench.model.stylegan2 import MAX_SEED
from cxr_workbench.settings import setting, validate_settings

__all__ = ["TuneConfig", "TuneResult", "msssim", "tune_generator", "TUNING_FORMAT", "pivots_key", "save_tuning",
           "load_tuning"]

TUNING_FORMAT = "cxr-workbench tuning 1"


@dataclass
class TuneConfig:
    """Settings of pivotal tuning. The regulariser's weight and reach are PTI's; the learning rate is
    PTI's 3e-4 times 3.3: at 64 px, 100 steps of 3e-4 leave a phantom film at 31 dB, of 1e-3 at 33 dB
    (PTI tunes for 350 steps at 1024 px)."""

    steps: int = setting(100, "fine-tuning steps of the synthesis weights", low=1, high=100_000)
    lr: float = setting(1e-3, "Adam learning rate", low=0, high=1.0, open_low=True)
    l2_weight: float = setting(1.0, "weight of the pixel L2 loss", low=0, high=1e6)
    msssim_weight: float = setting(1.0, "weight of 1 - MS-SSIM (PTI: LPIPS)", low=0, high=1e6)
    locality_weight: float = setting(0.1, "weight of the locality regulariser (PTI's lambda_R)", low=0, high=1e6)
    locality_radius: float = setting(1.0, "how far from the pivot the regulariser looks, in units of the spread "
                                          "of W (PTI's alpha)", low=0, high=1e3)
    locality_samples: int = setting(2, "latents the regulariser draws per step", low=1, high=1024)
    seed: int = setting(0, "seed of the regulariser's draws", low=0, high=MAX_SEED)

    validate = validate_settings


@dataclass
class TuneResult:
    """A tuned generator and how well it reproduces the films."""
    G: object                # the tuned copy (eval mode, no gradients)
    images: torch.Tensor     # [N, C, H, W] the pivots' renderings by it
    psnr_before: torch.Tensor  # [N] dB, the untuned generator's
    psnr: torch.Tensor       # [N] dB, the tuned one's
    history: list = field(default_factory=list)  # loss per step


def msssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image pair [N, 1, H, W] in [-1, 1] (five scales; the window as large as the
    smallest image allows: 3 px at 64 px, 7 px at 128 px, 11 px from 176 px). [N]"""
    from pytorch_msssim import ms_ssim
    side = min(a.shape[-2:])
    win = max(w for w in (3, 5, 7, 9, 11) if (w - 1) * 16 < side) if side > 32 else None
    if win is None:
        raise ValueError(f"images of {side} px; MS-SSIM needs more than 32 px")
    return ms_ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, size_average=False, win_size=win)


def _image_loss(imgs: torch.Tensor, goal: torch.Tensor, cfg: TuneConfig) -> torch.Tensor:
    return cfg.l2_weight * F.mse_loss(imgs, goal) + cfg.msssim_weight * (1 - msssim(imgs, goal)).mean()


def tune_generator(G, films: torch.Tensor, ws: torch.Tensor, config: TuneConfig | None = None,
                   progress: bool = True) -> TuneResult:
    """Fine-tune a copy of G's synthesis so that the pivots ``ws`` [N, num_ws, w_dim] render the
    ``films`` [N, C, R, R] in [-1, 1] (see the module docstring). G itself is not changed."""
    cfg = (config or TuneConfig()).validate()
    films = check_images(G, films).to(G.w_avg.device)
    ws = check_latents(ws, G).to(films.device)
    if len(ws) != len(films):
        raise ValueError(f"{len(ws)} pivots for {len(films)} films; expected one pivot per film")
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        before = psnr(G.synthesis(ws), films)
    w_all, _, spread = w_samples(G, gen)
    tuned = copy.deepcopy(G)
    params = list(tuned.synthesis.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    history = []
    for _ in tqdm(range(cfg.steps), disable=not progress, desc="tune", leave=False):
        loss = _image_loss(tuned.synthesis(ws), films, cfg)
        if cfg.locality_weight:
            w_r = _around_pivots(ws, w_all, spread * cfg.locality_radius, cfg.locality_samples, gen)
            with torch.no_grad():
                goal = G.synthesis(w_r)
            loss = loss + cfg.locality_weight * _image_loss(tuned.synthesis(w_r), goal, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    for p in params:
        p.requires_grad_(False)
    tuned.eval()
    with torch.no_grad():
        images = tuned.synthesis(ws)
    return TuneResult(tuned, images, before.cpu(), psnr(images, films).cpu(), history)


def _around_pivots(ws: torch.Tensor, w_all: torch.Tensor, radius: torch.Tensor, k: int,
                   gen: torch.Generator) -> torch.Tensor:
    """k latents [k, num_ws, w_dim], each ``radius`` from a random pivot toward a random w of W
    (PTI's w_r = w_p + alpha (w_z - w_p) / |w_z - w_p|, per W+ layer)."""
    pick = torch.randint(len(ws), (k,), generator=gen).to(ws.device)
    target = w_all[torch.randint(len(w_all), (k,), generator=gen).to(ws.device)]
    pivots = ws[pick]
    step = target[:, None] - pivots
    return pivots + radius * step / step.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def pivots_key(ws: torch.Tensor) -> str:
    """Short hash of the pivots [N, num_ws, w_dim] a tuning was made for."""
    return hashlib.sha256(ws.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def save_tuning(path, G, tuned, ws: torch.Tensor, overwrite: bool = True) -> tuple[Path, object]:
    """Write the tuning of ``tuned`` from ``G`` for the pivots ``ws`` as a weights-only delta of the
    synthesis weights. Returns the path and the tuned generator exactly as ``load_tuning`` rebuilds
    it (G + delta in float32, within a rounding of ``tuned``), whose hash the file records."""
    source = dict(G.synthesis.named_parameters())
    delta = {name: (p.detach() - source[name].detach()).cpu() for name, p in tuned.synthesis.named_parameters()}
    rebuilt = _apply(G, delta)
    data = dict(format=TUNING_FORMAT, generator=generator_key(G), tuned=generator_key(rebuilt), pivots=pivots_key(ws),
                delta=delta)
    return atomic_write(path, lambda f: torch.save(data, f), "wb", overwrite), rebuilt


def _apply(G, delta: dict):
    tuned = copy.deepcopy(G)
    with torch.no_grad():
        for name, p in tuned.synthesis.named_parameters():
            p.add_(delta[name].to(p))
    return tuned


def load_tuning(path, G, ws: torch.Tensor):
    """The tuned generator of a ``save_tuning`` file, rebuilt on G: refused (one line) when the file
    was tuned from another generator or for other pivots than ``ws``, or when the rebuilt weights
    do not hash as recorded."""
    data = torch_load(path, "tuning file", max_bytes=2 ** 31)
    if not isinstance(data, dict) or data.get("format") != TUNING_FORMAT or not isinstance(data.get("delta"), dict):
        raise ValueError(f"{path}: not a tuning file; expected the tuned.pt written by cxr-workbench invert --tune")
    if data.get("generator") != generator_key(G):
        raise ValueError(f"{path} was tuned from generator {data.get('generator')}, not from this one "
                         f"({generator_key(G)}); use the generator the films were inverted with")
    if data.get("pivots") != pivots_key(ws):
        raise ValueError(f"{path} was tuned for other latents than these; use the latents.pt written with it")
    names = {n for n, _ in G.synthesis.named_parameters()}
    delta = data["delta"]
    if set(delta) != names or any(not isinstance(v, torch.Tensor) or v.shape != p.shape
                                  for (n, p) in G.synthesis.named_parameters() for v in [delta.get(n)]):
        raise ValueError(f"{path}: its weights do not fit the generator's synthesis; the file is damaged")
    tuned = _apply(G, delta)
    if generator_key(tuned) != data.get("tuned"):
        raise ValueError(f"{path}: the tuned weights do not match their checksum; the file is damaged")
    return tuned.eval()
