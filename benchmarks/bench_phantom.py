"""Phantom rendering speed: phantoms per second at 64 px, batched (render_batch, several batch
sizes) against one phantom per call (render), measured in the same run.

    python benchmarks/bench_phantom.py [--n 2000] [--threads 2]
"""
import argparse
import time

import numpy as np
import torch

from cxr_workbench.imaging import phantom


def rate(fn, n):
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    params = [phantom.sample_params(rng, phantom.KINDS[i % 3]) for i in range(args.n)]
    phantom.render_batch(params[:64], args.size)  # warm-up
    one = rate(lambda: [phantom.render(q, args.size) for q in params[:200]], 200)
    sampling = rate(lambda: [phantom.sample_params(rng, "opacity") for _ in range(args.n)], args.n)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.size} px, {args.n} phantoms")
    print(f"sampling parameters: {sampling:8.0f} /s")
    print(f"render, one per call: {one:8.0f} /s (reference)")
    for batch in (16, 64, 256):
        r = rate(lambda b=batch: [phantom.render_batch(params[i:i + b], args.size) for i in range(0, args.n, b)],
                 args.n)
        print(f"render_batch {batch:4d}:   {r:8.0f} /s ({r / one:.1f}x one per call; target 2000 /s)")
