"""How soon the editor shows a full strip, and what the fast setting gives up (issue 35, item 2).

On the shipped model, in one run on this machine, for each reference seed and disease box:
1. the full setting (``--settings ours``, what the CLI and notebooks use) from "run" to the strip
   of the last points drawn, with PV, PV over all pixels, the oracle severity trend and leakage;
2. the editor's fast setting (``interactive``: 4 of the 12 points optimised, the rest on straight
   lines between them) the same way, eager and with the generator compiled
   (``devices.compile_synthesis``; the compile, done once when an app starts, timed apart).
Prints each run and the fast setting's means as ratios to the full setting's.

    python benchmarks/bench_interactive.py [--seeds 0,1,2] [--diseases cardiomegaly,opacity] [--no-compile]
"""
import argparse
import shutil
import statistics
import time

import torch

from cxr_workbench.assets import load_default_generator, oracle_for, pca_for
from cxr_workbench.devices import compile_synthesis
from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.imaging.masks import preset
from cxr_workbench.imaging.strips import strip_image
from cxr_workbench.method.evaluate import measure
from cxr_workbench.method.optimize import named_config, run_method
from cxr_workbench.method.pca import suggest_direction
from cxr_workbench.model.latents import reference_latents

METRICS = ("PV", "PV_all", "severity_trend", "leakage")


def first_strip(G, w, box, u, cfg):
    """Seconds from "run" to the strip's image, and the trajectory."""
    t = time.perf_counter()
    traj = run_method(G, "lo+dir", w, box, u=u, config=cfg, progress=False)
    strip_image([traj.sequence(0)], box, scale=2)
    return time.perf_counter() - t, traj


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--diseases", default="cardiomegaly,opacity")
    p.add_argument("--max-steps", type=int, default=None, help="cap both settings' steps (a quick check only)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled run (no C++ compiler, or in a hurry)")
    args = p.parse_args()
    G, seeds = load_default_generator(), [int(s) for s in args.seeds.split(",")]
    reader = oracle_for(G)
    caps = {} if args.max_steps is None else dict(max_steps=args.max_steps, min_steps=min(30, args.max_steps))
    settings = {"full": named_config("ours", **caps), "fast": named_config("interactive", **caps)}
    compiled = not args.no_compile and shutil.which("g++") is not None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shipped {G.img_resolution}px generator; "
          f"seeds {seeds}; compiled run: {'yes' if compiled else 'no'}")
    cases = []
    for disease in args.diseases.split(","):
        box = preset(DISEASES[disease].box, G.img_resolution)
        u, best, _ = suggest_direction(G, pca_for(G), box, disease, layers=settings["full"].layers)
        cases.append((disease, box, u))
    runs = {name: [] for name in ("full", "fast", "fast, compiled")}
    def run(name, cfg):
        for disease, box, u in cases:
            for s in seeds:
                dt, traj = first_strip(G, reference_latents(G, [s]), box, u, cfg)
                row = measure(traj, box, disease, reader)[0]
                runs[name].append(dict(seconds=dt, disease=disease, **{m: row[m] for m in METRICS}))
                print(f"  {name:15s} {disease:12s} seed {s}: {dt:5.2f} s, {traj.steps:3d} steps, "
                      + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS), flush=True)
    run("full", settings["full"])
    run("fast", settings["fast"])
    if compiled:
        t = time.perf_counter()
        compile_synthesis(G)
        first_strip(G, reference_latents(G, [seeds[0]]), cases[0][1], cases[0][2], settings["fast"])  # compiles
        print(f"  compiling the generator (once per app): {time.perf_counter() - t:.0f} s", flush=True)
        run("fast, compiled", settings["fast"])
    median = {name: statistics.median(r["seconds"] for r in rows) for name, rows in runs.items() if rows}
    for name in median:
        print(f"{name}: median {median[name]:.2f} s from run to the strip"
              + ("" if name == "full" else f" (target <= 3 s; {median['full'] / median[name]:.1f}x sooner)"))
    # The readings per disease, the fast setting's as ratios to the full one's (PV over all pixels,
    # often negative, as a difference).
    for disease, _, _ in cases:
        mean = {name: {m: statistics.mean(r[m] for r in rows if r["disease"] == disease) for m in METRICS}
                for name, rows in runs.items() if rows}
        for name in mean:
            print(f"  {disease:12s} {name:15s} " + ", ".join(
                f"{m} {mean[name][m]:.3f}" + ("" if name == "full" else
                                              f" ({mean[name][m] - mean['full'][m]:+.3f})" if m == "PV_all" else
                                              f" ({mean[name][m] / mean['full'][m]:.2f}x)") for m in METRICS))

if __name__ == "__main__":
    main()
