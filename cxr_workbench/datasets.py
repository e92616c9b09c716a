"""Datasets. Each item is a dict: ``img`` [1, R, R] float32 in [-1, 1], labels, ``index``.

* ``PhantomDataset``: seeded procedural phantoms with ground truth (CTR, opacity burden).
* ``ImageFolderDataset``: PNG/JPEG (8- or 16-bit) and DICOM files in a folder.
* ``CheXpertDataset``: a CheXpert-style CSV (``Path``, ``Frontal/Lateral``, label columns).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import phantom

LABELS = ("cardiomegaly", "opacity")


def _to_model_range(img01: np.ndarray, resolution: int) -> torch.Tensor:
    """[H, W] in [0, 1] -> [1, R, R] in [-1, 1], area-resampled to the requested size."""
    t = torch.from_numpy(np.ascontiguousarray(img01, dtype=np.float32))[None, None]
    if t.shape[-1] != resolution or t.shape[-2] != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="area" if t.shape[-1] > resolution else "bilinear",
                          align_corners=None if t.shape[-1] > resolution else False)
    return (t[0] * 2 - 1).clamp(-1, 1)


class PhantomDataset(Dataset):
    """``n`` phantoms rendered once (reproducible for a seed), kinds mixed by ``weights``.

    Labels per item: ``kind`` (normal / cardiomegaly / opacity), ``ctr``, ``opacity_burden``,
    and binary ``cardiomegaly`` / ``opacity``.
    """

    labels = LABELS

    def __init__(self, n: int, resolution: int = 64, seed: int = 0,
                 weights: tuple[float, float, float] = (0.5, 0.25, 0.25), progress: bool = False):
        if n <= 0:
            raise ValueError(f"n={n}; expected a positive number of phantoms")
        self.resolution = resolution
        rng = np.random.default_rng(seed)
        kinds = rng.choice(len(phantom.KINDS), size=n, p=np.asarray(weights) / np.sum(weights))
        self.images = np.empty((n, resolution, resolution), np.float32)
        self.ctr = np.empty(n, np.float32)
        self.burden = np.empty(n, np.float32)
        for i in tqdm(range(n), disable=not progress, desc="phantoms"):
            img, truth = phantom.render(phantom.sample_params(rng, phantom.KINDS[kinds[i]]), resolution)
            self.images[i], self.ctr[i], self.burden[i] = img, truth["ctr"], truth["opacity_burden"]
        self.kind = np.asarray(phantom.KINDS)[kinds]

    def __len__(self):
        return len(self.images)

    def images_tensor(self) -> torch.Tensor:
        """All images, [N, 1, R, R] in [-1, 1]."""
        return torch.from_numpy(self.images)[:, None] * 2 - 1

    def __getitem__(self, i):
        return dict(img=torch.from_numpy(self.images[i])[None] * 2 - 1, index=i, kind=str(self.kind[i]),
                    ctr=float(self.ctr[i]), opacity_burden=float(self.burden[i]),
                    cardiomegaly=float(self.ctr[i] > phantom.CTR_THRESHOLD), opacity=float(self.burden[i] > 0))
