"""Recompute the shipped generator's quality figures (those in data/MODEL_CARD.md) and print them,
with the targets a shipped default must meet (quality.SHIP_TARGETS).

    python benchmarks/quality.py [--n 2000]
"""
import argparse

from cxr_workbench.assets import load_default_generator, load_default_oracle, pca_for
from cxr_workbench.studies.quality import quality_figures, shipping_verdict

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    args = p.parse_args()
    G = load_default_generator()
    q = quality_figures(G, load_default_oracle(), n=args.n, pca=pca_for(G))
    print(f"Oracle features and readings, {args.n} images per set, against phantoms:")
    print(f"{'set':12s} {'FD':>8s} {'precision':>9s} {'recall':>7s} {'KS CTR':>7s} {'KS burden':>9s} "
          f"{'CTR mean/std':>13s} {'burden mean/std':>15s}")
    for key, fd in (("films", "fd_films_vs_films"), ("generated", "fd_generated_vs_films"),
                    ("init", "fd_init_vs_films")):
        d = q[key]
        print(f"{key:12s} {q[fd]:8.2f} {d['precision']:9.3f} {d['recall']:7.3f} {d['ks']['ctr']:7.3f} "
              f"{d['ks']['opacity_burden']:9.3f} {d['ctr_mean']:6.3f}/{d['ctr_std']:.3f} "
              f"{d['burden_mean']:7.3f}/{d['burden_std']:.3f}")
    print("PC most local to each preset box:", {b: (r["pc"], round(r["inside_share"], 3))
                                                for b, r in q["pc_locality"].items()})
    print("most local combination of the first 30 PCs (--direction local), held-out references:",
          {b: round(r["local_inside_share"], 3) for b, r in q["pc_locality"].items()})
    print("the same with a combination of all PCs per W+ layer (--direction local+), held-out references:",
          {b: round(r["local_plus_inside_share"], 3) for b, r in q["pc_locality"].items()})
    print("targets:")
    for name, (value, target, met) in shipping_verdict(q).items():
        print(f"  {name:32s} {value:8.3f}  target {target}  {'met' if met else 'MISSED'}")
