"""Inversion quality and speed on the shipped generator and oracle (or those given).

1. 32 generated images of unseen seeds (10000+): PSNR and SSIM of the reconstructions, and the
   distance of the recovered latent to the true one (relative to the true latent's distance to
   w_avg), in W+ and in W.
2. 32 fresh films of the oracle's source (phantoms or DRRs; seed 777, never used for training): PSNR
   and SSIM, and the oracle's CTR and opacity burden read off each reconstruction against the film's
   exact truth.
Time per image on this machine, with all images of a set in one batch.

    python benchmarks/bench_invert.py [--n 32] [--steps 300]
                                      [--checkpoint drr]
"""
import argparse
import time

import numpy as np
import torch

from cxr_workbench.assets import generator_or_default, oracle_or_default
from cxr_workbench.imaging.datasets import TruthDataset
from cxr_workbench.method.invert import InvertConfig, invert
from cxr_workbench.model.latents import reference_latents, synthesize


def timed(G, images, cfg, oracle):
    t = time.perf_counter()
    res = invert(G, images, cfg, oracle=oracle, progress=False)
    return res, (time.perf_counter() - t) / len(images)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoint", help="a generator file or a shipped one's name (phantom, drr; default: the default)")
    p.add_argument("--oracle", help="an oracle file of the generator's films (default: the shipped one of its films)")
    args = p.parse_args()
    G = generator_or_default(args.checkpoint)
    oracle = oracle_or_default(args.oracle, G)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; generator "
          f"{args.checkpoint or 'shipped'}; {args.n} images per set, {args.steps} steps")
    w_true = reference_latents(G, range(10_000, 10_000 + args.n))
    generated = synthesize(G, w_true).clamp(-1, 1)
    for space in ("w+", "w"):
        res, per_image = timed(G, generated, InvertConfig(space=space, steps=args.steps), oracle)
        rel = ((res.ws - w_true).norm(dim=(1, 2)) / (w_true - G.w_avg).norm(dim=(1, 2))).median()
        print(f"generated, {space:2s}: PSNR {res.psnr.mean():5.1f} ± {res.psnr.std():.1f} dB, SSIM "
              f"{res.ssim.mean():.3f}, |w - w_true| / |w_true - w_avg| median {rel:.2f}; {per_image:.2f} s/image")
    data = TruthDataset(args.n, G.img_resolution, seed=777, source=oracle.source)
    res, per_image = timed(G, data.images_tensor(), InvertConfig(steps=args.steps), oracle)
    read = oracle.predict(res.images.clamp(-1, 1))
    ctr_err, burden_err = np.abs(read["ctr"] - data.ctr), np.abs(read["opacity_burden"] - data.burden)
    print(f"{oracle.source + 's':10s} w+: PSNR {res.psnr.mean():5.1f} ± {res.psnr.std():.1f} dB, "
          f"SSIM {res.ssim.mean():.3f}; "
          f"oracle on the reconstruction vs truth: CTR MAE {ctr_err.mean():.3f}, burden MAE {burden_err.mean():.3f}; "
          f"{per_image:.2f} s/image")
