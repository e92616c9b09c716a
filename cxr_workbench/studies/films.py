"""Films into the latent space, end to end, as the CLI runs it: load the generator and the films,
invert them (``method.invert``), and write the latents, a reconstruction strip and a metrics JSON
as one set (see ``io.output_set``).
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from cxr_workbench.assets import DEFAULT_GENERATOR, oracle_for
from cxr_workbench.imaging.datasets import check_film_paths, load_films
from cxr_workbench.imaging.strips import strip_image
from cxr_workbench.io import output_set, save_png, write_json
from cxr_workbench.method.invert import InvertConfig, invert, reconstruction_report
from cxr_workbench.model.checkpoints import load_generator

__all__ = ["INVERT_OUTPUTS", "run_invert"]

INVERT_OUTPUTS = ("latents.pt", "reconstruction.png", "metrics.json")


def run_invert(images, out_dir, *, config: InvertConfig | None = None, checkpoint=DEFAULT_GENERATOR,
               fit: str = "crop", voi: str = "auto", upsample: bool = False, overwrite: bool = False,
               progress: bool = True) -> list[dict]:
    """Invert the films ``images`` (paths) and write ``latents.pt`` (``ws`` [N, num_ws, w_dim], the
    input of ``edit`` and ``augment --latents``), ``reconstruction.png`` (per film: the film, its
    reconstruction, |difference|) and ``metrics.json``, together or not at all.

    Returns one row per film: PSNR, SSIM and, with the shipped oracle, whether it finds the film
    plausible (a film far from the model's domain says so).
    """
    cfg = (config or InvertConfig()).validate()
    check_film_paths(images)
    names = [str(p) for p in images]
    with output_set(out_dir, INVERT_OUTPUTS, overwrite) as staging:
        G = load_generator(checkpoint)
        films = load_films(images, G.img_resolution, fit, voi, upsample)
        oracle = oracle_for(G)
        res = invert(G, films, cfg, oracle=oracle, progress=progress)
        rows = reconstruction_report(films, res, oracle)
        pairs = [torch.stack([f, r, (r - f).abs() * 2 - 1]) for f, r in zip(films, res.images.clamp(-1, 1))]
        save_png(staging / "reconstruction.png", strip_image(pairs))
        torch.save(dict(ws=res.ws, images=names, space=cfg.space), staging / "latents.pt")
        write_json(staging / "metrics.json", dict(images=names, config=asdict(cfg),
                                                  columns="film, reconstruction, |difference|", per_image=rows))
    return rows

