"""Severity oracle: a small CNN trained on films with exact truth (phantoms or DRRs) that reads the
cardiothoracic ratio, the opacity burden, the kind (normal / cardiomegaly / opacity) and anatomical
plausibility off an image. It stands in for the pulmonologist of the paper when we ask whether an edit really moved
the disease attribute, and its penultimate features feed the Fréchet distance of the model card.

Plausibility is learned against corrupted images (jigsaw-shuffled quadrants, upside-down chests,
smooth noise): "plausible" means lungs, heart and mediastinum are where a chest film has them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cxr_workbench.imaging import sources
from cxr_workbench.imaging.datasets import TruthDataset
from cxr_workbench.imaging.diseases import KINDS
from cxr_workbench.model.checkpoints import machine_description, read_checkpoint, save_checkpoint
from cxr_workbench.settings import setting, validate_settings

__all__ = ["BURDEN_SCALE", "SeverityOracle", "corrupt", "OracleReport", "evaluate_oracle", "OracleConfig",
           "train_oracle", "save_oracle", "load_oracle"]

CTR_MEAN, CTR_SCALE = 0.5, 0.1      # targets are standardised for training
BURDEN_SCALE = 0.2


class SeverityOracle(nn.Module):
    """images [B, 1, R, R] in [-1, 1] -> dict of ctr [B], opacity_burden [B], kind_logits [B, 3],
    plausible_logit [B], features [B, 4 * width]."""

    def __init__(self, resolution: int = 64, width: int = 16):
        super().__init__()
        self.config = dict(resolution=resolution, width=width)
        self.resolution = resolution
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.SiLU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        side = resolution // 16
        self.pool = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * side * side, 4 * width), nn.SiLU())
        self.head = nn.Linear(4 * width, 2 + len(KINDS) + 1)

    def forward(self, img: torch.Tensor) -> dict:
        if img.ndim != 4 or img.shape[1] != 1 or img.shape[-1] != self.resolution:
            raise ValueError(f"oracle input has shape {tuple(img.shape)}; expected [B, 1, {self.resolution}, "
                             f"{self.resolution}]")
        feats = self.pool(self.body(img))
        out = self.head(feats)
        return dict(ctr=out[:, 0] * CTR_SCALE + CTR_MEAN, opacity_burden=out[:, 1] * BURDEN_SCALE,
                    kind_logits=out[:, 2:5], plausible_logit=out[:, 5], features=feats)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> dict[str, np.ndarray]:
        """Numpy predictions for images [N, 1, R, R] (or [N, R, R]): ctr, opacity_burden, kind
        (index into diseases.KINDS), kind_probs, plausible (bool), features."""
        self.eval()
        if images.ndim == 3:
            images = images[:, None]
        dev = next(self.parameters()).device
        outs = [self(images[i:i + batch].to(dev).float()) for i in range(0, len(images), batch)]
        cat = {k: torch.cat([o[k] for o in outs]).float().cpu() for k in outs[0]}  # fp32 under autocast too
        probs = cat["kind_logits"].softmax(-1)
        return dict(ctr=cat["ctr"].numpy(), opacity_burden=cat["opacity_burden"].clamp_min(0).numpy(),
                    kind=probs.argmax(-1).numpy(), kind_probs=probs.numpy(),
                    plausible=(cat["plausible_logit"] > 0).numpy(), features=cat["features"].numpy())


def corrupt(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Anatomically implausible versions of images [B, 1, R, R]: one of jigsaw quadrants,
    upside-down, or smooth noise, chosen per image."""
    b, _, r, _ = images.shape
    out = images.clone()
    kind = torch.randint(3, [b], generator=gen)
    h = r // 2
    for i in range(b):
        if kind[i] == 0:
            q = [images[i, :, :h, :h], images[i, :, :h, h:], images[i, :, h:, :h], images[i, :, h:, h:]]
            p = torch.randperm(4, generator=gen)
            while (p == torch.arange(4)).all():
                p = torch.randperm(4, generator=gen)
            q = [q[j] for j in p]
            out[i] = torch.cat([torch.cat(q[:2], 2), torch.cat(q[2:], 2)], 1)
        elif kind[i] == 1:
            out[i] = images[i].flip(1)
        else:
            noise = torch.randn(1, 1, r // 8, r // 8, generator=gen)
            out[i] = F.interpolate(noise, size=(r, r), mode="bicubic", align_corners=False)[0].clamp(-1, 1)
    return out


@dataclass
class OracleReport:
    """The oracle's errors on held-out films."""
    ctr_mae: float
    burden_mae: float
    kind_accuracy: float
    plausible_accuracy: float
    n_val: int

    def to_dict(self):
        return self.__dict__.copy()


def evaluate_oracle(oracle: SeverityOracle, data: TruthDataset, seed: int = 1) -> OracleReport:
    """Errors on held-out films (and their corruptions for plausibility)."""
    imgs = data.images_tensor()
    pred = oracle.predict(imgs)
    bad = oracle.predict(corrupt(imgs, torch.Generator().manual_seed(seed)))
    kinds = np.array([KINDS.index(k) for k in data.kind])
    return OracleReport(ctr_mae=float(np.abs(pred["ctr"] - data.ctr).mean()),
                        burden_mae=float(np.abs(pred["opacity_burden"] - data.burden).mean()),
                        kind_accuracy=float((pred["kind"] == kinds).mean()),
                        plausible_accuracy=float((pred["plausible"].mean() + (~bad["plausible"]).mean()) / 2),
                        n_val=len(imgs))


@dataclass
class OracleConfig:
    """Training settings of the severity oracle."""

    n_train: int = setting(20000, "training films", low=64, high=10_000_000)
    n_val: int = setting(2000, "held-out films for the report", low=1, high=10_000_000)
    resolution: int = setting(64, "image size", choices=(32, 64, 128))
    epochs: int = setting(8, "passes over the training films", low=1, high=1000)
    batch: int = setting(128, "images per step", low=4, high=65536)
    lr: float = setting(2e-3, "peak AdamW step size (one-cycle schedule)", low=0, high=10, open_low=True)
    seed: int = setting(1, "seed of the training films (held-out ones: seed + 1000) and the weights",
                        low=0, high=2 ** 31 - 1000)
    source: str = setting("phantom", "where the films come from", choices=sources.SOURCES)
    ct: str = setting("", "a CT folder (NIfTI volume or DICOM series, and labelmap) for --source drr; "
                          "empty: the shipped CT",
                      expected="a folder path")

    validate = validate_settings


def train_oracle(config: OracleConfig | None = None, *, progress: bool = True):
    """Train on freshly rendered films (seed ``config.seed``), report on held-out ones (seed + 1000).

    Returns (oracle, OracleReport, wall time in s).
    """
    cfg = (config or OracleConfig()).validate()
    sources.check_films(cfg.source, cfg.ct or None)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    films = dict(source=cfg.source, ct=cfg.ct or None)
    train = TruthDataset(cfg.n_train, cfg.resolution, seed=cfg.seed, progress=progress, **films)
    val = TruthDataset(cfg.n_val, cfg.resolution, seed=cfg.seed + 1000, **films)
    imgs = train.images_tensor()
    ctr = torch.from_numpy(train.ctr)
    burden = torch.from_numpy(train.burden)
    kinds = torch.tensor([KINDS.index(k) for k in train.kind])
    model = SeverityOracle(cfg.resolution)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * (cfg.n_train // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(steps), disable=not progress, desc="oracle")
    for _ in bar:
        model.train()
        idx = torch.randint(cfg.n_train, [cfg.batch], generator=gen)
        x = imgs[idx] + 0.02 * torch.randn(cfg.batch, 1, cfg.resolution, cfg.resolution, generator=gen)
        n_bad = cfg.batch // 4
        x_bad = corrupt(x[:n_bad], gen)
        out = model(torch.cat([x, x_bad]))
        good = slice(0, cfg.batch)
        loss = (F.mse_loss((out["ctr"][good] - CTR_MEAN) / CTR_SCALE, (ctr[idx] - CTR_MEAN) / CTR_SCALE)
                + F.mse_loss(out["opacity_burden"][good] / BURDEN_SCALE, burden[idx] / BURDEN_SCALE)
                + F.cross_entropy(out["kind_logits"][good], kinds[idx])
                + F.binary_cross_entropy_with_logits(
                    out["plausible_logit"], torch.cat([torch.ones(cfg.batch), torch.zeros(n_bad)])))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    model.source = cfg.source
    return model, evaluate_oracle(model, val, cfg.seed), time.time() - t0


def save_oracle(path, oracle: SeverityOracle, report: OracleReport | None = None, wall_time: float = 0.0,
                overwrite: bool = True, source: str = "phantom", ct=None):
    """Write the oracle with its card: what it learned (``source``, ``ct``), how long, on what, its held-out errors."""
    card = dict(training_data=sources.describe(source, ct), source=source, wall_time_s=round(wall_time, 1),
                machine=machine_description(), held_out=report.to_dict() if report else None)
    return save_checkpoint(path, dict(kind="oracle", config=oracle.config, oracle=oracle.state_dict(),
                                      model_card=card), overwrite)


def load_oracle(path) -> SeverityOracle:
    """An oracle written by ``save_oracle``, in eval mode, with ``source`` the films it learned."""
    data = read_checkpoint(path)
    if data.get("kind") != "oracle":
        raise ValueError(f"{path} holds a {data.get('kind')!r}, not an oracle")
    model = SeverityOracle(**data["config"])
    model.load_state_dict(data["oracle"])
    model.source = data.get("model_card", {}).get("source", "phantom")  # the films it learned to read
    return model.eval().requires_grad_(False)
