"""Command line: ``cxr-workbench {quickstart, sample, edit, train, ship} ...`` (batch runs of what the notebooks do)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            lo, hi = int(a), int(b) if b else int(a)
            if hi < lo:
                raise ValueError
            seeds.extend(range(lo, hi + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds={text!r}; expected a list like '0-15' or '1,4,9-12'") from None
    return seeds


def cmd_sample(args) -> int:
    import torch
    from .checkpoints import load_generator
    from .io import save_png
    from .stylegan2 import Generator
    from .train import sample_grid
    from . import DEFAULT_GENERATOR

    path = args.checkpoint or (DEFAULT_GENERATOR if DEFAULT_GENERATOR.is_file() and not args.random_init else None)
    if path is None:
        torch.manual_seed(0)
        G = Generator().eval()
        label = "RANDOM-INIT generator (untrained; no checkpoint given)"
    else:
        G = load_generator(path, format=args.format)
        label = f"generator {path}"
    grid = sample_grid(G, args.seeds, cols=args.cols, psi=args.psi)
    save_png(args.out, grid, overwrite=args.overwrite)
    print(f"{label}: {len(args.seeds)} samples -> {args.out}")
    return 0


def cmd_train(args) -> int:
    from .train import TrainConfig, train
    cfg = TrainConfig(resolution=args.resolution, kimg=args.kimg, batch=args.batch, seed=args.seed,
                      dataset_size=args.dataset_size, snapshot_kimg=args.snapshot_kimg)
    path = train(cfg, args.run_dir, progress=not args.no_progress, stop_after_kimg=args.stop_after_kimg)
    print(f"generator -> {path}")
    return 0


def cmd_edit(args) -> int:
    from . import DEFAULT_GENERATOR
    from .edit import EditRequest, run_edit
    req = EditRequest(checkpoint=args.checkpoint or DEFAULT_GENERATOR, seeds=args.seed, box=args.box,
                      direction=args.direction, method=args.method, sigma=args.sigma, layers=args.layers,
                      c=args.c, max_steps=args.max_steps)
    written = run_edit(req, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    for path in written:
        print(path)
    return 0


def cmd_ship(args) -> int:
    from . import DATA_DIR, load_default_oracle
    from .quality import ship_generator
    for path in ship_generator(args.run_dir, args.data_dir or DATA_DIR, load_default_oracle(), n=args.n,
                               overwrite=args.overwrite):
        print(path)
    return 0


def cmd_quickstart(args) -> int:
    from .notebooks import NOTEBOOK_DIR, execute_notebook
    out = args.out.resolve()
    html = out / "00_quickstart.html"
    if html.exists() and not args.overwrite:
        raise FileExistsError(f"{html} exists; pass --overwrite or choose another --out")
    execute_notebook(NOTEBOOK_DIR / "00_quickstart.ipynb",
                     dict(OUT_DIR=str(out), SEED=args.seed, BOX=args.box, MAX_STEPS=args.max_steps), html_out=html)
    for p in sorted(out.iterdir()):
        print(p)
    print(f"\nOpen the executed notebook: {html}\n"
          f"Explore interactively:     .venv/bin/jupyter lab {NOTEBOOK_DIR}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxr-workbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="run notebooks/00_quickstart headless: figures + HTML into --out")
    q.add_argument("--out", type=Path, default=Path("out/quickstart"))
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--box", default="heart")
    q.add_argument("--max-steps", type=int, default=300)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_quickstart)

    s = sub.add_parser("sample", help="write a grid of generated images")
    s.add_argument("--checkpoint", type=Path, help="ours, rosinality .pt or NVlabs .pkl (default: shipped)")
    s.add_argument("--format", default="auto", choices=["auto", "workbench", "rosinality", "nvlabs"])
    s.add_argument("--random-init", action="store_true", help="ignore the shipped generator")
    s.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-15"))
    s.add_argument("--cols", type=int, default=8)
    s.add_argument("--psi", type=float, default=1.0, help="truncation")
    s.add_argument("--out", type=Path, default=Path("out/grid.png"))
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("edit", help="edit seeds inside a box: Baseline LO, LO + direction or linear")
    e.add_argument("--checkpoint", type=Path, help="generator (default: shipped)")
    e.add_argument("--seed", type=parse_seeds, default=[0], help="reference seed(s), e.g. 0 or 0-7")
    e.add_argument("--box", default="heart", help="preset name or a box .json")
    e.add_argument("--direction", default="auto",
                   help="auto (most box-local PC), pc:K, pc:K:-1, or a .pt/.npy direction file")
    e.add_argument("--method", default="lo+dir", choices=["lo", "lo+dir", "linear"])
    e.add_argument("--sigma", type=float, default=None, help="spring rest length (default 0.3)")
    e.add_argument("--c", type=float, default=None, help="in-box target change of the last point")
    e.add_argument("--layers", default=None, help="W+ layers that move, e.g. 0-5")
    e.add_argument("--max-steps", type=int, default=None)
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--overwrite", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_edit)

    t = sub.add_parser("train", help="train (or resume) a StyleGAN2 on phantoms")
    t.add_argument("--run-dir", type=Path, required=True)
    t.add_argument("--resolution", type=int, default=64)
    t.add_argument("--kimg", type=float, default=200.0)
    t.add_argument("--stop-after-kimg", type=float, default=None, help="end this call early, resumable")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--snapshot-kimg", type=float, default=10.0)
    t.add_argument("--dataset-size", type=int, default=20000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)
    h = sub.add_parser("ship", help="make a run's generator the shipped default (figures, PCA, model card)")
    h.add_argument("--run-dir", type=Path, required=True)
    h.add_argument("--data-dir", type=Path, default=None, help="default: the package's data/")
    h.add_argument("--n", type=int, default=2000, help="images per set for the quality figures")
    h.add_argument("--overwrite", action="store_true")
    h.set_defaults(func=cmd_ship)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        print(f"cxr-workbench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
