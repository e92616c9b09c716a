"""Acceptance figures of the method on the shipped model (paper Table 2 and the sigma ablation):
Baseline LO vs LO + direction over many reference seeds, both diseases, sigma in {0.3, 1.0, 2.0};
PV under both readings (over the pixels of each sign, and over all pixels), oracle severity trend
and leakage as mean ± std, with our settings or the paper's as printed (--settings literal).
Writes every run to --csv as it finishes and resumes from it.

    python benchmarks/method_table.py [--seeds 20] [--sigmas 0.3,1.0,2.0] [--settings ours|literal]
                                      [--direction auto|local] [--csv out/method_table.csv]
                                      [--device auto|cpu|cuda]
"""
import argparse
import time
from pathlib import Path

import pandas as pd

from cxr_workbench.assets import cache_dir, load_default_generator, load_default_oracle, pca_for
from cxr_workbench.devices import pick_device
from cxr_workbench.distributed import connect
from cxr_workbench.io import atomic_write
from cxr_workbench.method.evaluate import method_table, paired_differences, summary_table
from cxr_workbench.method.optimize import NAMED_CONFIGS, named_config

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--sigmas", default="0.3,1.0,2.0")
    p.add_argument("--methods", default="lo,lo+dir")
    p.add_argument("--settings", choices=sorted(NAMED_CONFIGS), default="ours")
    p.add_argument("--direction", default="auto", help="u: auto (the most box-local PC), local, pc:K or a file")
    p.add_argument("--csv", type=Path, default=Path("out/method_table.csv"))
    p.add_argument("--max-steps", type=int, default=None, help="step cap (default: the settings'; for smoke runs)")
    p.add_argument("--device", default="auto", help="where the generator runs (auto: CUDA when present); "
                   "with --workers/--scheduler the workers' CPUs")
    p.add_argument("--workers", type=int, default=0, help="cells on a local Dask cluster of this many processes")
    p.add_argument("--scheduler", default=None, help="cells on a running Dask scheduler (address)")
    args = p.parse_args()
    fan = bool(args.scheduler or args.workers)
    G, oracle = load_default_generator(pick_device(args.device, dask=fan)), load_default_oracle()
    seeds = list(range(100, 100 + args.seeds))  # not the seeds used to pick u
    df = pd.read_csv(args.csv) if args.csv.is_file() else pd.DataFrame()
    done = set() if df.empty else set(zip(df["disease"], df["sigma"], df["method"]))
    t0 = time.time()

    def save(frame):
        global df
        df = pd.concat([df, frame], ignore_index=True)
        atomic_write(args.csv, lambda f: df.to_csv(f, index=False), "w")
        r = frame.iloc[0]
        print(f"  {r['disease']:12s} sigma {r['sigma']:.1f} {r['method']:7s} PV {frame['PV'].mean():.3f} "
              f"(all pixels {frame['PV_all'].mean():.3f}) trend {frame['severity_trend'].mean():.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)

    config = named_config(args.settings, **({} if args.max_steps is None else dict(max_steps=args.max_steps)))
    client = connect(args.scheduler, workers=args.workers) if fan else None
    method_table(G, pca_for(G), seeds, client=client, sigmas=[float(s) for s in args.sigmas.split(",")],
                 methods=args.methods.split(","), config=config, oracle=oracle, progress=False, done=done,
                 direction=args.direction, cache_dir=cache_dir(),
                 on_run=save, on_direction=lambda d, b, desc: print(f"{d}: box {b}, u = {desc}", flush=True))
    print(f"settings: {args.settings}, direction: {args.direction}, generator on {G.w_avg.device}")
    for metric in ("PV", "PV_all", "severity_trend", "severity_change", "leakage", "monotonicity"):
        print(f"\n{metric} (mean ± std over {args.seeds} references)")
        print(summary_table(df, metric).to_string())
    for metric in ("PV", "PV_all", "severity_trend", "leakage") if {"lo", "lo+dir"} <= set(df["method"]) else ():
        print(f"\n{metric}: LO + direction minus Baseline LO on the same seed")
        print(paired_differences(df, metric).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\n{len(df)} trajectories; runs in {args.csv}")
