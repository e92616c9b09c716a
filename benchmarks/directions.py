"""The direction scoreboard (issue 23): every way of choosing u, scored on references it was never
computed on. For each disease's preset box: the share of the change along u (at +-2 standard
deviations of w along u, the moving layers of LOConfig) that falls inside the box, on the search
references (seeds 0-7) and on unseen ones (seeds 100-107), the time to compute u from nothing
(no cache), against the best PC's time measured in the same run, and what a straight walk along u
does to the disease on the unseen references (the shipped oracle's mean reading at 0, 4, 8 and 12
along u, and the share read as the disease and plausible at 12). For our kind-conditional generators
the class direction toward the disease's kind (``kind``) joins the specs.

    python benchmarks/directions.py [--specs auto,ganspace,sefa,local,jacobian,local+,jacobian+] [--unseen 100-107]
                                    [--diseases cardiomegaly,opacity]
"""
import argparse
import tempfile

import torch

from cxr_workbench.assets import load_default_generator, load_reader, pca_for
from cxr_workbench.imaging.diseases import DISEASES, check_disease
from cxr_workbench.imaging.masks import preset
from cxr_workbench.method.directions import WALK_AMOUNTS, knows_kinds, score_directions
from cxr_workbench.method.optimize import LOConfig
from cxr_workbench.model.latents import parse_range, reference_latents

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--specs", default="auto,ganspace,sefa,local,jacobian,local+,jacobian+")
    p.add_argument("--unseen", default="100-107", help="references never used to compute u")
    p.add_argument("--diseases", default=",".join(DISEASES), help="the diseases (boxes) to score")
    args = p.parse_args()
    G = load_default_generator()
    pca = pca_for(G)
    layers = list(LOConfig().layers)
    seen, unseen = reference_latents(G, range(8)), reference_latents(G, parse_range(args.unseen))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; layers {layers}; unseen seeds {args.unseen}")
    reader = load_reader("oracle", G)
    amounts = "/".join(f"{a:g}" for a in WALK_AMOUNTS)
    print(f"| disease | box | u | inside share (seeds 0-7) | inside share (unseen) | time to compute | vs auto "
          f"| reading at {amounts} along u | read as the disease at {WALK_AMOUNTS[-1]:g} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for disease in args.diseases.split(","):
        spec = DISEASES[check_disease(disease)]
        box = preset(spec.box, G.img_resolution)
        base = None
        specs = args.specs.split(",")
        specs += ["kind"] if knows_kinds(G) and "kind" not in specs else []
        for name in specs:
            with tempfile.TemporaryDirectory() as cache:  # from nothing: no cached search
                row, = score_directions(G, pca, box, disease, [name], seen=seen, unseen=unseen, layers=layers,
                                        cache_dir=cache, reader=reader)
            base = base or row["seconds"]
            walk = row["walk"]
            print(f"| {disease} | {spec.box} | {row['description'].split(' (')[0]} | {row['seen']:.0%} | "
                  f"{row['unseen']:.0%} | {row['seconds']:.1f} s | {row['seconds'] / base:.1f}x | "
                  f"{' / '.join(f'{v:.3f}' for v in walk['reading'])} | {walk['reads_as']:.0%} |", flush=True)
