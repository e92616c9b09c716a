"""The direction scoreboard (issue 23): every way of choosing u, scored on references it was never
computed on. For each disease's preset box: the share of the change along u (at +-2 standard
deviations of w along u, the moving layers of LOConfig) that falls inside the box, on the search
references (seeds 0-7) and on unseen ones (seeds 100-107), and the time to compute u from nothing
(no cache), against the best PC's time measured in the same run.

    python benchmarks/directions.py [--specs auto,ganspace,sefa,local,jacobian,local+,jacobian+] [--unseen 100-107]
"""
import argparse
import tempfile

import torch

from cxr_workbench.assets import load_default_generator, pca_for
from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.imaging.masks import preset
from cxr_workbench.method.directions import score_directions
from cxr_workbench.method.optimize import LOConfig
from cxr_workbench.model.latents import parse_range, reference_latents

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--specs", default="auto,ganspace,sefa,local,jacobian,local+,jacobian+")
    p.add_argument("--unseen", default="100-107", help="references never used to compute u")
    args = p.parse_args()
    G = load_default_generator()
    pca = pca_for(G)
    layers = list(LOConfig().layers)
    seen, unseen = reference_latents(G, range(8)), reference_latents(G, parse_range(args.unseen))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; layers {layers}; unseen seeds {args.unseen}")
    print("| disease | box | u | inside share (seeds 0-7) | inside share (unseen) | time to compute | vs auto |")
    print("|---|---|---|---|---|---|---|")
    for disease, spec in DISEASES.items():
        box = preset(spec.box, G.img_resolution)
        base = None
        for name in args.specs.split(","):
            with tempfile.TemporaryDirectory() as cache:  # from nothing: no cached search
                row, = score_directions(G, pca, box, disease, [name], seen=seen, unseen=unseen, layers=layers,
                                        cache_dir=cache)
            base = base or row["seconds"]
            print(f"| {disease} | {spec.box} | {row['description'].split(' (')[0]} | {row['seen']:.0%} | "
                  f"{row['unseen']:.0%} | {row['seconds']:.1f} s | {row['seconds'] / base:.1f}x |", flush=True)
