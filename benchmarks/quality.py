"""Recompute the shipped generator's quality figures (those in data/MODEL_CARD.md) and print them.

    python benchmarks/quality.py [--n 2000]
"""
import argparse
import json

from cxr_workbench.assets import load_default_generator, load_default_oracle
from cxr_workbench.quality import quality_figures

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    args = p.parse_args()
    q = quality_figures(load_default_generator(), load_default_oracle(), n=args.n)
    print(f"Frechet distance of oracle features to phantoms ({args.n} images per set):")
    print(f"  phantoms vs phantoms      {q['fd_phantoms_vs_phantoms']:8.2f}")
    print(f"  shipped generator         {q['fd_generated_vs_phantoms']:8.2f}")
    print(f"  generator at init         {q['fd_init_vs_phantoms']:8.2f}")
    for key in ("phantoms", "generated", "init"):
        print(f"  {key:10s} {json.dumps(q[key])}")
