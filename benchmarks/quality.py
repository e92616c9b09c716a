"""Recompute a generator's quality figures (those in data/MODEL_CARD.md) and print them, with the
targets a shipped default must meet (quality.SHIP_TARGETS). By default the shipped generator; with
``--checkpoint`` a run's generator in training (or a shipped one by name), measured against the films of
its own source with the shipped oracle of that source (or ``--oracle``), without the PC locality unless ``--pca``.

    python benchmarks/quality.py [--n 2000]
    python benchmarks/quality.py --checkpoint drr --frd 500
"""
import argparse

from cxr_workbench.assets import films_of, generator_or_default, oracle_or_default, pca_for
from cxr_workbench.studies.quality import FILMS, fd_by_kind_text, quality_figures, shipping_verdict

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--checkpoint", help="a generator file or a shipped one's name (phantom, drr; default: the default)")
    p.add_argument("--oracle", help="an oracle file of the generator's films (default: the shipped one of its films)")
    p.add_argument("--pca", action="store_true", help="with --checkpoint: the PC locality too (minutes)")
    p.add_argument("--frd", type=int, default=0, help="images a set for the Frechet Radiomics Distance (make frd)")
    args = p.parse_args()
    G = generator_or_default(args.checkpoint)
    oracle = oracle_or_default(args.oracle, G)
    source = films_of(G)
    if oracle.source != source:
        p.error(f"the generator learned {FILMS[source]}, the oracle {FILMS[oracle.source]}; give --oracle of "
                f"{FILMS[source]}")
    pca = pca_for(G) if args.checkpoint is None or args.pca else None
    q = quality_figures(G, oracle, n=args.n, pca=pca, source=source, frd=args.frd, progress=args.frd > 0)
    print(f"Oracle features and readings, {args.n} images per set, against {FILMS[source]}:")
    print(f"{'set':12s} {'FD':>8s} {'precision':>9s} {'recall':>7s} {'KS CTR':>7s} {'KS burden':>9s} "
          f"{'CTR mean/std':>13s} {'burden mean/std':>15s}")
    for key, fd in (("films", "fd_films_vs_films"), ("generated", "fd_generated_vs_films"),
                    ("init", "fd_init_vs_films")):
        d = q[key]
        print(f"{key:12s} {q[fd]:8.2f} {d['precision']:9.3f} {d['recall']:7.3f} {d['ks']['ctr']:7.3f} "
              f"{d['ks']['opacity_burden']:9.3f} {d['ctr_mean']:6.3f}/{d['ctr_std']:.3f} "
              f"{d['burden_mean']:7.3f}/{d['burden_std']:.3f}")
    print("FD within each kind the oracle reads:", fd_by_kind_text(q))
    if "frd" in q:
        print(f"Frechet Radiomics Distance, {args.frd} images a set:", {k: round(v, 3) for k, v in q["frd"].items()
                                                                        if k != "n"})
    if pca is not None:
        print("PC most local to each preset box:", {b: (r["pc"], round(r["inside_share"], 3))
                                                    for b, r in q["pc_locality"].items()})
        print("most local combination of the first 30 PCs (--direction local), held-out references:",
              {b: round(r["local_inside_share"], 3) for b, r in q["pc_locality"].items()})
        print("the same with a combination of all PCs per W+ layer (--direction local+), held-out references:",
              {b: round(r["local_plus_inside_share"], 3) for b, r in q["pc_locality"].items()})
    print("targets:")
    for name, (value, target, met) in shipping_verdict(q).items():
        print(f"  {name:32s} {value:8.3f}  target {target}  {'met' if met else 'MISSED'}")
