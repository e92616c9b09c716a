"""Metrics: the Pixel-Variation (PV) metric of the paper (our reading: docs/method.md), its
plain-language companions, and a Fréchet distance between feature sets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import linalg
from scipy.stats import spearmanr

from cxr_workbench.imaging.masks import Box

__all__ = ["PVResult", "PV_AVERAGES", "pv_metric", "box_leakage", "trend", "frechet_distance", "feature_spread",
           "knn_precision_recall", "ks_statistic"]


@dataclass
class PVResult:
    """The PV metric and its parts (S, M) for one trajectory."""
    S: float             # smoothness: mean |dc+| + |dc-| (small is smooth)
    M: float             # monotonicity: mean dc+ + dc- + dr+ + dr- (large is monotone, in the box)
    PV: float            # M / S
    monotonicity: float  # Spearman rho of the in-box mean against i, times the sign
    leakage: float       # mean |x_i - x_1| outside / inside the box
    n: int               # images in the sequence

    def to_dict(self) -> dict:
        return asdict(self)


def _as_sequence(images) -> torch.Tensor:
    x = torch.as_tensor(images, dtype=torch.float64)
    if x.ndim == 4:
        if x.shape[1] != 1:
            x = x.mean(1)  # colour: compare luminance
        else:
            x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"images have shape {tuple(x.shape)}; expected [n, H, W] or [n, C, H, W]")
    if x.shape[0] < 3:
        raise ValueError(f"a sequence of {x.shape[0]} images; expected at least 3")
    return x


# The paper's "average of positive (negative) pixel values" read two ways (docs/method.md):
# "sign": the sum over the pixels of that sign / their count; "all": that sum / all pixels of the map.
PV_AVERAGES = ("sign", "all")


def _signed_means(d: torch.Tensor, average: str = "sign") -> tuple[torch.Tensor, torch.Tensor]:
    """Averages of the strictly positive and of the strictly negative values of each map ([m, H, W])."""
    pos, neg = d > 0, d < 0
    if average == "all":
        return (d * pos).mean((1, 2)), (d * neg).mean((1, 2))
    dp = (d * pos).sum((1, 2)) / pos.sum((1, 2)).clamp_min(1)
    dn = (d * neg).sum((1, 2)) / neg.sum((1, 2)).clamp_min(1)
    return dp, dn


def pv_metric(images, box: Box, sign: int = +1, average: str = "sign") -> PVResult:
    """PV of an ordered sequence x_1..x_n ([n, H, W] or [n, C, H, W]) for a box and desired sign.

    ``dc_i = s (x_i - x_{i-1})``, ``dr_i = s (x_i - x_1)``, i = 2..n; outside the box a pixel counts
    as ``-|d|``; d+ / d- average the strictly positive / negative values, over those pixels
    (``average="sign"``, 0 if none) or over all pixels of the map (``average="all"``);
    ``S = mean(|dc+| + |dc-|)``, ``M = mean(dc+ + dc- + dr+ + dr-)``, ``PV = M / S``.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign={sign!r}; expected +1 (region brightens) or -1 (darkens)")
    if average not in PV_AVERAGES:
        raise ValueError(f"average={average!r}; expected one of {PV_AVERAGES}")
    x = _as_sequence(images)
    if x.shape[-1] != box.resolution or x.shape[-2] != box.resolution:
        raise ValueError(f"images are {tuple(x.shape[-2:])} but the box is for {box.resolution} px")
    inside = box.mask().bool()

    def penalise_outside(d):
        return torch.where(inside, d, -d.abs())

    dc = penalise_outside(sign * (x[1:] - x[:-1]))
    dr = penalise_outside(sign * (x[1:] - x[0]))
    dcp, dcn = _signed_means(dc, average)
    drp, drn = _signed_means(dr, average)
    S = float((dcp.abs() + dcn.abs()).mean())
    M = float((dcp + dcn + drp + drn).mean())
    PV = M / S if S > 0 else float("nan")

    in_mean = x[:, inside].mean(1).numpy()
    rho = spearmanr(np.arange(len(in_mean)), in_mean).statistic if np.ptp(in_mean) > 0 else 0.0
    return PVResult(S=S, M=M, PV=PV, monotonicity=float(sign * rho), leakage=box_leakage(x[1:] - x[0], inside),
                    n=int(x.shape[0]))


def box_leakage(change: torch.Tensor, inside: torch.Tensor) -> float:
    """Mean |change| outside the box over the mean inside it: change [..., H, W] (images minus
    their reference), inside [H, W] bool. 0 for a change that stays in the box, 1 for one spread
    evenly; inf for a change only outside."""
    change = change.abs()
    out_change, in_change = float(change[..., ~inside].mean()), float(change[..., inside].mean())
    return out_change / in_change if in_change > 0 else float("inf") if out_change > 0 else 0.0


def trend(values) -> float:
    """Spearman rho of a per-image quantity (e.g. oracle CTR) against its position in the sequence."""
    v = np.asarray(values, dtype=float)
    if len(v) < 3:
        raise ValueError(f"{len(v)} values; expected at least 3 for a trend")
    return float(spearmanr(np.arange(len(v)), v).statistic) if np.ptp(v) > 0 else 0.0


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, F] (as in FID)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets of shapes {a.shape} and {b.shape}; expected [N, F] with the same F")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(mu_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def feature_spread(feats: np.ndarray) -> tuple[float, float]:
    """How varied a feature set [N, F] (N >= 2) is: the mean Euclidean distance between distinct
    rows (how spread it is), and the mean distance from each row to its nearest other row (near 0
    when every sample has a near-copy, however spread the copies are)."""
    x = np.asarray(feats, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features of shape {x.shape}; expected [N, F] with N >= 2")
    from scipy.spatial.distance import pdist, squareform
    d = pdist(x)
    full = squareform(d)
    np.fill_diagonal(full, np.inf)
    return float(d.mean()), float(full.min(1).mean())


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets [N, F], [M, F].

    Each set's manifold is the union of balls around its points with radius the distance to the
    k-th nearest neighbour in the same set. Precision: share of fake points inside the real
    manifold; recall: share of real points inside the fake manifold.
    """
    a = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) <= k:
        raise ValueError(f"feature sets of shapes {tuple(a.shape)} and {tuple(b.shape)}; expected [N, F] with the "
                         f"same F and more than k={k} rows each")

    def radii(x):  # distance to the k-th neighbour (index k: index 0 is the point itself)
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    def inside(points, centres, r):
        return float((torch.cdist(points, centres) <= r[None]).any(1).double().mean())

    return inside(b, a, radii(a)), inside(a, b, radii(b))


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs)."""
    from scipy.stats import ks_2samp
    return float(ks_2samp(np.asarray(a, float), np.asarray(b, float)).statistic)
