"""Fréchet Radiomics Distance (FRD; Osuala et al., ``frd-score``) between two sets of films: the
Fréchet distance of normalised radiomic features (first order, texture matrices, on the original image
and filtered versions), which needs no network and no downloaded weights, unlike FID. It complements
the oracle-feature FD of ``studies.quality``: the oracle was trained on the source's films, radiomics
were not. ``frd-score`` reads image files, so each set is written to 8-bit PNGs in a temporary folder
of the workbench's own, removed afterwards.

An optional extra: ``make frd`` installs it (pyradiomics built from PyPI's sdist, see
``tools/build_pyradiomics.py``). FRD v1 (frd-score's default) is log(d_F^2) of features normalised
jointly over both sets: values of two draws of one source sit lowest (the floor), and it grows as the
sets part.
"""
from __future__ import annotations

__all__ = ["frd_available", "frechet_radiomics_distance"]

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

INSTALL = "the Fréchet Radiomics Distance needs frd-score and pyradiomics: make frd"


def frd_available() -> bool:
    """Whether frd-score and its pyradiomics import here."""
    try:
        import frd_score  # noqa: F401
        import radiomics  # noqa: F401
    except ImportError:
        return False
    return True


def _write_pngs(folder: Path, images: torch.Tensor) -> None:
    from PIL import Image
    folder.mkdir()
    pixels = ((images[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def frechet_radiomics_distance(a: torch.Tensor, b: torch.Tensor, workers: int = 1) -> float:
    """FRD v1 between films ``a`` [N, 1, H, W] and ``b`` [M, 1, H, W] in [-1, 1] (N, M >= 2), on
    ``workers`` processes. Raises ImportError naming ``make frd`` when frd-score is not installed."""
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 4 or x.shape[1] != 1 or len(x) < 2 or not torch.isfinite(x).all():
            raise ValueError(f"films {name} of shape {tuple(x.shape)}; expected [N >= 2, 1, H, W] of finite values")
    if not frd_available():
        raise ImportError(INSTALL)
    from frd_score import compute_frd
    logging.getLogger("radiomics").setLevel(logging.ERROR)  # one line per image otherwise
    with tempfile.TemporaryDirectory(prefix="cxr-frd-") as tmp:
        folders = [Path(tmp) / "a", Path(tmp) / "b"]
        for folder, images in zip(folders, (a, b)):
            _write_pngs(folder, images.detach().float().cpu())
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its result
            value = compute_frd([str(f) for f in folders], num_workers=workers, verbose=False)
    return float(np.asarray(value))
