"""Throughput of augmentation sets (samples/hour) on the shipped model, and what each speed-up
costs in quality, measured in one run on this machine against the default set settings:

1. ours with c = 0.3 (max 300 steps, lr 0.01, plateau rule), serial, torch's threads;
2. fewer steps: a step cap of 100 with a 3x larger lr (the "augment" settings until issue 23);
3. a better start: the points start a spring length apart along u instead of half of one, and
   50 steps at 2x the lr suffice (the "augment" settings since);
4. 3 with the generator compiled (``devices.compile_synthesis``; the minutes it compiles count);
5. bf16 autocast around 1 (CPU: fast only where the CPU has bf16 instructions);
6. 1 on a local Dask cluster of 2 one-thread workers.

Quality per variant, on the same references (from the manifests): the share of samples the
oracle reads as the disease (set_quality), and the PV and oracle severity trend of the
trajectories. Both diseases, ``--refs`` references each.

    python benchmarks/bench_augment.py [--refs 4] [--keep-last 4] [--variants 1,2,3,4,5,6]
"""
import argparse
import contextlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cxr_workbench.assets import load_default_generator, oracle_for, pca_for
from cxr_workbench.devices import compile_synthesis
from cxr_workbench.distributed import close, connect
from cxr_workbench.method.optimize import named_config
from cxr_workbench.studies.augment import make_augmentation, normal_seeds, set_quality

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--refs", type=int, default=4)
    p.add_argument("--keep-last", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=None, help="cap every variant (smoke runs)")
    p.add_argument("--variants", default="1,2,3,4,5,6", help="which of the variants above (the first is the reference)")
    args = p.parse_args()
    G = load_default_generator()
    oracle, pca = oracle_for(G), pca_for(G)
    seeds = normal_seeds(G, oracle, args.refs, start=2_000_000)
    fast = named_config("augment")
    base = named_config("ours", c=fast.c)
    def cap(c):
        return c if args.max_steps is None else replace(c, max_steps=min(c.max_steps, args.max_steps))
    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    same = contextlib.nullcontext
    variants = [("300 steps, serial", cap(base), same, 0, False),
                ("100 steps, lr x3", cap(replace(base, max_steps=100, lr=base.lr * 3)), same, 0, False),
                ("50 steps, lr x2, from a spring length", cap(fast), same, 0, False),
                ("50 steps, compiled", cap(fast), same, 0, True),
                ("bf16 autocast", cap(base), bf16, 0, False),
                ("300 steps, 2 Dask workers", cap(base), same, 2, False)]
    variants = [variants[int(k) - 1] for k in args.variants.split(",")]
    n = args.refs * args.keep_last
    print(f"{args.refs} references x {args.keep_last} samples per disease; torch threads {torch.get_num_threads()}")
    ref_rate = None
    for name, cfg, autocast, workers, compiled in variants:
        client = connect(workers=workers) if workers else None
        t0, figures = time.perf_counter(), []
        gen = compile_synthesis(load_default_generator()) if compiled else G  # its compiling counts
        with tempfile.TemporaryDirectory() as tmp, autocast():
            for disease in ("cardiomegaly", "opacity"):
                m = make_augmentation(gen, seeds, disease, n, cfg, Path(tmp) / disease, keep_last=args.keep_last,
                                      pca=pca, reader=oracle, batch=max(1, args.refs // 2), client=client,
                                      progress=False)
                figures.append((set_quality(m)["intended"], m["trajectory_pv"].mean(), m["trajectory_trend"].mean()))
        rate = 2 * n / (time.perf_counter() - t0) * 3600
        if client is not None:
            close(client)
        ref_rate = ref_rate or rate
        (c_share, c_pv, c_trend), (o_share, o_pv, o_trend) = figures
        print(f"{name:34s} {rate:7.0f} samples/h ({rate / ref_rate:4.2f}x)  read as the disease: C {c_share:.0%} "
              f"O {o_share:.0%}  PV C {c_pv:.2f} O {o_pv:.2f}  trend C {c_trend:.2f} O {o_trend:.2f}", flush=True)
