"""Image filters shared by the film renderers (phantoms, DRRs)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur"]


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of images [N, S, S], one sigma (pixels) per image [N]; ``padding``
    "replicate" or "reflect" at the edges. The kernel reaches 3 sigma, at most to half the image."""
    n, s = img.shape[0], img.shape[-1]
    radius = max(1, min(s // 2 - 1, int(math.ceil(3 * float(sigma.max())))))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)  # [N, 2 radius + 1]
    x = F.pad(img[None], (radius, radius, radius, radius), mode=padding)
    x = F.conv2d(x, k[:, None, None, :], groups=n)
    return F.conv2d(x, k[:, None, :, None], groups=n)[0]
