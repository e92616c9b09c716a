"""cxr-workbench: batch runs of what the notebooks do.

Examples (defaults shown by each command's --help):

    cxr-workbench quickstart --out out/quickstart
    cxr-workbench edit --seed 0-7 --box heart --out out/heart
    cxr-workbench edit --seed 3 --box lung_lower_right --direction pc:4:-1 --method lo --out out/lo
    cxr-workbench edit --seed 3 --box my_box.json --disease opacity --sigma 1.0 --out out/mine
    cxr-workbench sample --seeds 0-15 --out out/grid.png
    cxr-workbench train --run-dir runs/mine --kimg 200
    cxr-workbench ship --run-dir runs/mine --overwrite

Every error is one line on stderr and exit status 2 (1 for an internal error); nothing a
command already wrote is replaced without --overwrite.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import fields
from pathlib import Path

MAX_SEED = 2 ** 32 - 1  # numpy RandomState seeds, as NVlabs' tools


def seed_list(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (argparse type)."""
    from .latents import parse_range
    try:
        seeds = parse_range(text, "seeds")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if max(seeds) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"seeds={text!r}; expected seeds in 0..{MAX_SEED}")
    return seeds


def _number(kind, low=None, high=None, strict_low=False):
    """An argparse type: a finite int/float within [low, high] ((low, high] when strict_low)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        bad_low = low is not None and (v <= low if strict_low else v < low)
        if not math.isfinite(v) or bad_low or (high is not None and v > high):
            lo = "-inf" if low is None else low
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected a finite number in "
                                             f"{'(' if strict_low else '['}{lo}, {high if high is not None else 'inf'}]")
        return v
    parse.__name__ = kind.__name__
    return parse


def _layers(text: str):
    from .latents import parse_range
    if text == "all":
        return None
    try:
        return tuple(parse_range(text, "layers"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_config_options(parser, config_class) -> None:
    """One option per field of a settings dataclass (``--max-steps`` for ``max_steps``), with the
    field's help and default; unset options stay None, so only what the user gave overrides."""
    defaults = config_class()
    group = parser.add_argument_group(f"{config_class.__name__} settings (defaults from the paper)")
    for f in fields(config_class):
        meta, default = f.metadata, getattr(defaults, f.name)
        kw = dict(default=None, dest=f"cfg_{f.name}", metavar=f.name.upper(), help=f"{meta['help']} (default: {default})")
        if f.name == "layers":
            kw.update(type=_layers, metavar="LIST", help=kw["help"].replace("None: all", "'all': all"))
        elif meta["choices"]:
            kw.update(choices=meta["choices"], metavar="{" + ",".join(meta["choices"]) + "}")
        else:
            kw.update(type=int if type(f.default) is int else float)  # ranges are checked by validate()
        group.add_argument("--" + f.name.replace("_", "-"), **kw)


def config_overrides(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def _check_output_file(path: Path, overwrite: bool) -> None:
    from .io import check_writable
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; expected a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite or choose another --out")
    check_writable(path.parent)


def cmd_sample(args) -> int:
    import torch
    from .assets import DEFAULT_GENERATOR
    from .checkpoints import load_generator
    from .io import save_png
    from .stylegan2 import Generator
    from .viz import sample_grid

    _check_output_file(args.out, args.overwrite)
    path = args.checkpoint or (DEFAULT_GENERATOR if DEFAULT_GENERATOR.is_file() and not args.random_init else None)
    if path is None:
        torch.manual_seed(0)
        G = Generator().eval()
        label = "RANDOM-INIT generator (untrained; no checkpoint given)"
    else:
        G = load_generator(path, format=args.format)
        label = f"generator {path}"
    save_png(args.out, sample_grid(G, args.seeds, cols=args.cols, psi=args.psi), overwrite=args.overwrite)
    print(f"{label}: {len(args.seeds)} samples -> {args.out}")
    return 0


def cmd_train(args) -> int:
    from .train import TrainConfig, train
    cfg = TrainConfig(resolution=args.resolution, kimg=args.kimg, batch=args.batch, seed=args.seed,
                      dataset_size=args.dataset_size, snapshot_kimg=args.snapshot_kimg).validate()
    amp = {"auto": None, "fp32": False, "bf16": True}[args.precision]
    path = train(cfg, args.run_dir, progress=not args.no_progress, stop_after_kimg=args.stop_after_kimg,
                 stop_after_s=None if args.stop_after_minutes is None else 60 * args.stop_after_minutes,
                 threads=args.threads, amp=amp)
    print(f"generator -> {path}")
    return 0


def cmd_edit(args) -> int:
    from .assets import DEFAULT_GENERATOR
    from .edit import EditRequest, run_edit
    req = EditRequest(checkpoint=args.checkpoint or DEFAULT_GENERATOR, seeds=[] if args.image else args.seed,
                      box=args.box, direction=args.direction, method=args.method, disease=args.disease,
                      settings=args.settings, overrides=config_overrides(args), images=args.image or [], fit=args.fit, voi=args.voi,
                      upsample=args.upsample, invert_steps=args.invert_steps, device=args.device)
    for path in run_edit(req, args.out, overwrite=args.overwrite, progress=not args.no_progress):
        print(path)
    return 0


def cmd_oracle(args) -> int:
    from .oracle import save_oracle, train_oracle
    _check_output_file(args.out, args.overwrite)
    oracle, report, wall = train_oracle(n_train=args.n_train, resolution=args.resolution, epochs=args.epochs,
                                        progress=not args.no_progress)
    save_oracle(args.out, oracle, report, wall, overwrite=args.overwrite)
    print(f"oracle -> {args.out} ({wall:.0f} s); held-out: {report.to_dict()}")
    return 0


def _client(args):
    """The Dask client the options ask for, or None for this process alone."""
    if not args.scheduler and not args.workers:
        return None
    from .distributed import connect
    client = connect(args.scheduler, workers=args.workers or 2)
    print(f"dask: {len(client.scheduler_info()['workers'])} workers, dashboard {client.dashboard_link}", file=sys.stderr)
    return client


def _latents_file(path: Path):
    """The W+ latents ("ws") of a file written by ``invert`` or ``edit``."""
    import torch
    from .checkpoints import torch_load
    data = torch_load(path, "latents file")
    ws = data.get("ws") if isinstance(data, dict) else None
    if not isinstance(ws, torch.Tensor):
        raise ValueError(f"{path} holds no 'ws' tensor; expected the latents.pt written by cxr-workbench invert")
    return ws


def cmd_augment(args) -> int:
    from .assets import DEFAULT_GENERATOR, oracle_for, pca_for
    from .augment import make_augmentation, normal_seeds, set_quality
    from .checkpoints import load_generator
    from .distributed import close
    from .masks import check_disease
    from .optimize import named_config
    check_disease(args.disease)
    config = named_config(args.settings, **config_overrides(args))
    if args.keep_last > config.n:
        raise ValueError(f"--keep-last {args.keep_last} is larger than the trajectory's n={config.n} points")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; expected a folder")
    from .devices import pick_device
    device = pick_device(args.device, dask=bool(args.workers or args.scheduler))  # before a cluster starts
    client = _client(args)  # an unreachable scheduler is refused before any work
    try:
        G = load_generator(args.checkpoint or DEFAULT_GENERATOR, device=device)
        oracle = oracle_for(G)
        latents = _latents_file(args.latents) if args.latents else None
        seeds = [] if latents is not None else \
            normal_seeds(G, oracle, -(-args.samples // args.keep_last), start=args.seed_start)
        manifest = make_augmentation(G, seeds, args.disease, args.samples, config, args.out, keep_last=args.keep_last,
                                     method=args.method, box=args.box, direction=args.direction, pca=pca_for(G),
                                     oracle=oracle, batch=args.batch, client=client, progress=not args.no_progress,
                                     latents=latents)
    finally:
        if client is not None:
            close(client)
    q = set_quality(manifest)
    print(f"{len(manifest)} {args.disease} samples -> {args.out}; oracle reads {q['intended']:.0%} as {args.disease}, "
          f"{q['plausible']:.0%} plausible")
    return 0


def cmd_classify(args) -> int:
    from dataclasses import replace
    from .classify import CPU_SCALE, ProtocolConfig, load_sets, protocol_table, run_protocol
    from .distributed import close
    from .io import atomic_write
    sizes = {k: getattr(args, k) for k in ("n_normal", "n_aug", "n_val", "n_test", "epochs") if getattr(args, k)}
    if args.n_disease:
        sizes["n_disease"] = tuple(args.n_disease)
    cfg = replace(ProtocolConfig() if args.full else CPU_SCALE, network=args.network, sigmas=tuple(args.sigmas),
                  seeds=tuple(range(args.seeds)), **sizes).validate()
    aug = load_sets(args.sets, cfg.sigmas)
    client = _client(args)
    try:
        results = run_protocol(cfg, aug, args.out, client=client, progress=not args.no_progress)
    finally:
        if client is not None:
            close(client)
    table = protocol_table(results)
    text = table[[c for c in table.columns if not c.startswith("p ")]].to_string(index=False)
    atomic_write(args.out / "table.txt", lambda f: f.write(text + "\n"), "w")
    print(text)
    print(f"test AUROC x100, mean ± std over {len(cfg.seeds)} seeds; * p < 0.05 (paired t-test against random "
          f"augmentation); runs and predictions in {args.out}")
    return 0


def cmd_invert(args) -> int:
    from .assets import DEFAULT_GENERATOR, oracle_for
    from .checkpoints import load_generator
    from .datasets import check_film_paths, load_films
    from .invert import InvertConfig, invert, reconstruction_report
    from .io import output_set, save_png, write_json
    from .viz import strip_image
    import torch
    cfg = InvertConfig(space=args.space, steps=args.steps, restarts=args.restarts).validate()
    check_film_paths(args.image)
    with output_set(args.out, ("latents.pt", "reconstruction.png", "metrics.json"), args.overwrite) as staging:
        G = load_generator(args.checkpoint or DEFAULT_GENERATOR)
        films = load_films(args.image, G.img_resolution, args.fit, args.voi, args.upsample)
        oracle = oracle_for(G)
        res = invert(G, films, cfg, oracle=oracle, progress=not args.no_progress)
        rows = reconstruction_report(films, res, oracle)
        pairs = [torch.stack([f, r, (r - f).abs() * 2 - 1]) for f, r in zip(films, res.images.clamp(-1, 1))]
        save_png(staging / "reconstruction.png", strip_image(pairs))
        torch.save(dict(ws=res.ws, images=[str(p) for p in args.image], space=args.space), staging / "latents.pt")
        write_json(staging / "metrics.json", dict(images=[str(p) for p in args.image], config=vars(cfg),
                                                  columns="film, reconstruction, |difference|", per_image=rows))
    for row, path in zip(rows, args.image):
        print(f"{path}: PSNR {row['psnr']:.1f} dB, SSIM {row['ssim']:.3f}"
              + (f", oracle finds the film {'plausible' if row['film_plausible'] else 'NOT plausible'}"
                 if "film_plausible" in row else ""))
    print(f"-> {args.out}")
    return 0


def _cluster_options(parser) -> None:
    parser.add_argument("--workers", type=_number(int, 0, 1024), default=0,
                        help="fan out over a local Dask cluster of this many processes (0: this process)")
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")


def _film_options(parser) -> None:
    from .datasets import FITS, VOI_MODES
    parser.add_argument("--fit", choices=FITS, default="crop", help="make a film square: crop or letterbox, never stretch")
    parser.add_argument("--voi", choices=VOI_MODES, default="auto", help="DICOM display window")
    parser.add_argument("--upsample", action="store_true", help="enlarge films smaller than the model's resolution")


def cmd_ship(args) -> int:
    from .assets import DATA_DIR, load_default_oracle
    from .quality import ship_generator
    for path in ship_generator(args.run_dir, args.data_dir or DATA_DIR, load_default_oracle(), n=args.n,
                               overwrite=args.overwrite, force=args.force, progress=True):
        print(path)
    return 0


def cmd_quickstart(args) -> int:
    from .notebooks import NOTEBOOK_DIR, execute_notebook
    from .io import check_writable
    if not NOTEBOOK_DIR.is_dir():
        raise FileNotFoundError(f"the notebooks folder {NOTEBOOK_DIR} is missing; quickstart runs from a checkout "
                                "(pip install -e .)")
    out = check_writable(args.out.resolve())
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


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .directions import DIRECTION_SPECS
    from .masks import DISEASES, PRESETS
    from .optimize import METHODS
    p = Parser(prog="cxr-workbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    q = sub.add_parser("quickstart", formatter_class=fmt,
                       help="run notebooks/00_quickstart headless: figures + HTML into --out")
    q.add_argument("--out", type=Path, default=Path("out/quickstart"), help="output folder")
    q.add_argument("--seed", type=_number(int, 0, MAX_SEED), default=0, help="reference seed")
    q.add_argument("--box", default="heart", choices=list(PRESETS), help="preset box")
    q.add_argument("--max-steps", type=_number(int, 1), default=300, help="optimisation step cap")
    q.add_argument("--overwrite", action="store_true", help="replace earlier results")
    q.set_defaults(func=cmd_quickstart)

    s = sub.add_parser("sample", formatter_class=fmt, help="write a grid of generated images")
    s.add_argument("--checkpoint", type=Path, help="ours, rosinality .pt or NVlabs .pkl (default: shipped)")
    s.add_argument("--format", default="auto", choices=["auto", "workbench", "rosinality", "nvlabs"])
    s.add_argument("--random-init", action="store_true", help="ignore the shipped generator")
    s.add_argument("--seeds", type=seed_list, default=seed_list("0-15"), help="e.g. 0-15 or 1,4,9-12")
    s.add_argument("--cols", type=_number(int, 1, 1024), default=8, help="grid columns")
    s.add_argument("--psi", type=_number(float, 0, 2), default=1.0, help="truncation")
    s.add_argument("--out", type=Path, default=Path("out/grid.png"), help="PNG file")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("edit", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="edit seeds inside a box: Baseline LO, LO + direction or linear",
                       description="Edit reference seeds inside a box; writes strip.png, latents.pt, metrics.json.")
    e.add_argument("--checkpoint", type=Path, help="generator (default: shipped)")
    e.add_argument("--seed", type=seed_list, default=[0], help="reference seed(s), e.g. 0 or 0-7 (default: 0)")
    e.add_argument("--box", default="heart", help=f"a preset ({', '.join(PRESETS)}) or a box .json (default: heart)")
    e.add_argument("--disease", choices=list(DISEASES), default=None,
                   help="what the box shows (default: the preset's; required for a box .json)")
    e.add_argument("--direction", default="auto", help=f"{DIRECTION_SPECS} (default: auto)")
    e.add_argument("--method", default="lo+dir", choices=list(METHODS), help="(default: lo+dir)")
    e.add_argument("--image", type=Path, nargs="+", help="films to invert and edit instead of --seed")
    e.add_argument("--invert-steps", type=_number(int, 1, 100_000), default=300, help="inversion steps per film")
    e.add_argument("--device", default="auto", help="where the generator runs: auto (CUDA when present), cpu or cuda[:N]")
    _film_options(e)
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    e.add_argument("--no-progress", action="store_true")
    from .optimize import NAMED_CONFIGS, LOConfig
    e.add_argument("--settings", choices=sorted(NAMED_CONFIGS), default="ours",
                   help="named settings the options below change: ours, or the paper's as printed (literal: "
                        "constant c, Eq. 4 literally)")
    add_config_options(e, LOConfig)
    e.set_defaults(func=cmd_edit)

    t = sub.add_parser("train", formatter_class=fmt, help="train (or resume) a StyleGAN2 on phantoms")
    t.add_argument("--run-dir", type=Path, required=True, help="resumed if it holds a snapshot")
    t.add_argument("--resolution", type=int, default=64, help="image size, a power of two >= 8")
    t.add_argument("--kimg", type=_number(float, 0, strict_low=True), default=200.0,
                   help="training length, thousands of images")
    t.add_argument("--stop-after-kimg", type=_number(float, 0, strict_low=True), default=None,
                   help="end this call early, resumable")
    t.add_argument("--stop-after-minutes", type=_number(float, 0, strict_low=True), default=None,
                   help="end this call after so many minutes of training, with a snapshot; resumable")
    t.add_argument("--batch", type=_number(int, 1, 4096), default=32)
    t.add_argument("--snapshot-kimg", type=_number(float, 0, strict_low=True), default=10.0)
    t.add_argument("--dataset-size", type=_number(int, 1), default=20000, help="phantoms rendered once")
    t.add_argument("--seed", type=_number(int, 0, MAX_SEED), default=0)
    t.add_argument("--threads", type=_number(int, 1, 256), default=None,
                   help="CPU threads (default: torch's; use 1 when another job shares a 2-core machine)")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="autocast of G and D; auto: bf16 on CUDA, fp32 on CPU (the mapping stays fp32)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("invert", formatter_class=fmt, help="bring films into the latent space (W+ or W)")
    v.add_argument("--image", type=Path, nargs="+", required=True, help="PNG/JPEG/DICOM films")
    v.add_argument("--checkpoint", type=Path, help="generator (default: shipped)")
    v.add_argument("--space", choices=["w+", "w"], default="w+")
    v.add_argument("--steps", type=_number(int, 1, 100_000), default=300)
    v.add_argument("--restarts", type=_number(int, 1, 64), default=2)
    v.add_argument("--out", type=Path, required=True, help="output folder")
    v.add_argument("--overwrite", action="store_true")
    v.add_argument("--no-progress", action="store_true")
    _film_options(v)
    v.set_defaults(func=cmd_invert)

    a = sub.add_parser("augment", formatter_class=fmt,
                       help="an augmentation set: edits of normal references, labelled with the box's disease")
    a.add_argument("--disease", required=True, help="cardiomegaly or opacity")
    a.add_argument("--samples", type=_number(int, 1, 10_000_000), required=True, help="samples in the set")
    a.add_argument("--out", type=Path, required=True, help="set folder (resumed if it holds this set)")
    a.add_argument("--keep-last", type=_number(int, 1, 1000), default=4, help="samples per reference: its last points")
    a.add_argument("--method", choices=["lo+dir", "lo", "linear"], default="lo+dir")
    a.add_argument("--box", default=None, help="preset or box JSON (default: the disease's box)")
    a.add_argument("--direction", default="auto", help=f"{DIRECTION_SPECS} (default: auto)")
    a.add_argument("--seed-start", type=_number(int, 0, MAX_SEED), default=1_000_000,
                   help="references: the seeds from here that the oracle reads as normal")
    a.add_argument("--latents", type=Path, default=None,
                   help="references: the films inverted by cxr-workbench invert (its latents.pt) instead of seeds")
    a.add_argument("--batch", type=_number(int, 1, 4096), default=8, help="references optimised together (one task)")
    a.add_argument("--checkpoint", type=Path, help="generator (default: shipped)")
    a.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU; CPU with --workers), cpu or cuda[:N]")
    _cluster_options(a)
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("--settings", choices=sorted(NAMED_CONFIGS), default="augment",
                   help="named settings the options below change")
    add_config_options(a, LOConfig)
    a.set_defaults(func=cmd_augment)

    c = sub.add_parser("classify", formatter_class=fmt,
                       help="paper Tables 3 and 4: classifiers trained with and without augmentation sets")
    c.add_argument("--sets", type=Path, nargs="+", required=True,
                   help="augmentation set folders, one per disease and sigma (cxr-workbench augment)")
    c.add_argument("--out", type=Path, required=True, help="runs, predictions and tables (resumed)")
    c.add_argument("--full", action="store_true", help="the paper's sizes (10K normal, 1K/5K disease, 5K aug); "
                   "default: the CPU scale, a fiftieth with the same ratios")
    c.add_argument("--network", choices=["small", "densenet121"], default="small")
    c.add_argument("--sigmas", type=_number(float, 0, strict_low=True), nargs="+", default=[0.3],
                   help="sigmas of the 'ours' rows (Table 4: 0.3 1.0 2.0)")
    c.add_argument("--seeds", type=_number(int, 1, 100), default=4, help="runs per cell")
    c.add_argument("--epochs", type=_number(int, 1, 1000), default=None)
    for name, helptext in (("normal", "normal training images"), ("aug", "augmented images per run"),
                           ("val", "validation images per class"), ("test", "test images per class")):
        c.add_argument(f"--n-{name}", type=_number(int, 1, 10_000_000), default=None, help=f"{helptext} (overrides the scale)")
    c.add_argument("--n-disease", type=_number(int, 1, 10_000_000), nargs="+", default=None,
                   help="disease training sizes, one table block each (overrides the scale)")
    _cluster_options(c)
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_classify)

    o = sub.add_parser("oracle", formatter_class=fmt, help="train the severity oracle on fresh phantoms")
    o.add_argument("--out", type=Path, required=True, help="oracle .pt (the shipped one is data/oracle.pt)")
    o.add_argument("--n-train", type=_number(int, 64), default=20000, help="training phantoms")
    o.add_argument("--epochs", type=_number(int, 1, 1000), default=8)
    o.add_argument("--resolution", type=int, default=64, choices=[32, 64, 128])
    o.add_argument("--overwrite", action="store_true")
    o.add_argument("--no-progress", action="store_true")
    o.set_defaults(func=cmd_oracle)

    h = sub.add_parser("ship", formatter_class=fmt,
                       help="make a run's generator the shipped default (figures, PCA, model card)")
    h.add_argument("--run-dir", type=Path, required=True)
    h.add_argument("--data-dir", type=Path, default=None, help="default: the checkout's data/")
    h.add_argument("--n", type=_number(int, 2), default=2000, help="images per set for the quality figures")
    h.add_argument("--overwrite", action="store_true")
    h.add_argument("--force", action="store_true", help="ship even when it measures worse than the shipped one")
    h.set_defaults(func=cmd_ship)
    return p


EXPECTED_ERRORS = (ValueError, KeyError, OSError, FloatingPointError)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"cxr-workbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as e:
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"cxr-workbench {args.command}: error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("CXR_WORKBENCH_DEBUG"):
            raise
        print(f"cxr-workbench {args.command}: internal error: {type(e).__name__}: {' '.join(str(e).split())} "
              "(set CXR_WORKBENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
