"""DRR rendering speed: films per second of the shipped CT at 64 px (and 128 px), batched, against
the phantom renderer measured in the same run (the reference), and against one film per call.

    python benchmarks/bench_drr.py [--n 1024] [--threads 2]
"""
import argparse
import time

import numpy as np
import torch

from cxr_workbench.imaging import drr, phantom
from cxr_workbench.imaging.diseases import KINDS


def rate(fn, n):
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def batched(module, params, size, batch):
    return [module.render_batch(params[i:i + batch], size) for i in range(0, len(params), batch)]


def measure(films, phantoms, size, n):
    t = time.perf_counter()
    drr.render_batch(films[:8], size)  # the CT reduced once (cached on disk after the first run)
    print(f"{size} px: slab model ready in {time.perf_counter() - t:.1f} s")
    ref = rate(lambda: batched(phantom, phantoms[:n], size, 64), n)
    one = rate(lambda: [drr.render(q, size) for q in films[:64]], 64)
    print(f"{size} px: phantoms, render_batch 64: {ref:7.0f} /s (reference)")
    print(f"{size} px: DRR, one per call:         {one:7.0f} /s ({one / ref:.2f}x the phantoms)")
    for batch in (32, 64, 128):
        r = rate(lambda b=batch: batched(drr, films[:n], size, b), n)
        target = "; target 300 /s" if size == 64 else ""
        print(f"{size} px: DRR, render_batch {batch:4d}:   {r:7.0f} /s ({r / ref:.2f}x the phantoms{target})")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    films = [drr.sample_params(rng, KINDS[i % 3]) for i in range(args.n)]
    phantoms = [phantom.sample_params(rng, KINDS[i % 3]) for i in range(args.n)]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.n} films of each kind mix")
    for size in (64, 128):
        measure(films, phantoms[:len(films)], size, args.n if size == 64 else args.n // 4)
