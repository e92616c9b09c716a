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
from functools import partial
from pathlib import Path

from cxr_workbench.io import reason
from cxr_workbench.model.stylegan2 import MAX_SEED

__all__ = ["seed_list", "HelpFormatter", "add_settings_options", "settings_overrides", "COMMANDS",
           "Parser", "build_parser", "EXPECTED_ERRORS", "main"]


def seed_list(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (argparse type)."""
    from cxr_workbench.model.latents import parse_range
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
                                             f"{'(' if strict_low else '['}{lo}, "
                                             f"{high if high is not None else 'inf'}]")
        return v
    parse.__name__ = kind.__name__
    return parse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, once: options that say their own default are left as they are."""

    def _get_help_string(self, action):
        return action.help if "(default:" in (action.help or "") else super()._get_help_string(action)


def add_settings_options(parser, config_class, *, defaults=None, title: str | None = None) -> None:
    """One option per field of a settings dataclass (``--max-steps`` for ``max_steps``), from the
    field's definition (``settings.setting``): its help, default (of ``defaults`` when given),
    choices or range, checked as the option is read. Unset options stay None, so only what the
    user gave overrides (``settings_overrides``)."""
    from cxr_workbench.settings import check_value, item_kind
    defaults = defaults or config_class()
    group = parser.add_argument_group(title or f"{config_class.__name__} settings")
    for f in fields(config_class):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default, kind = getattr(defaults, f.name), item_kind(f)
        shown = "all" if default is None else " ".join(map(str, default)) if isinstance(default, tuple) else default
        kw = dict(default=None, dest=f"{config_class.__name__}.{f.name}", metavar=f.name.upper(),
                  help=f"{meta['help']} (default: {shown})".replace("%", "%%"))
        # a tuple's items are read one at a time: the rule of the whole tuple waits for validate()
        items = isinstance(f.default, tuple) and meta["parse"] is None
        check = partial(check_value, f.name, meta=dict(meta, rule=None) if items else meta, kind=kind)
        if meta["parse"] is not None:
            kw["type"] = _option_type(f.name, meta["parse"], check)
        elif meta["choices"] is not None:
            kw.update(choices=meta["choices"], metavar="{" + ",".join(map(str, meta["choices"])) + "}",
                      type=kind if kind is not str else None)
        else:
            kw["type"] = _option_type(f.name, kind, check)
            if items:
                kw["nargs"] = "+"
        group.add_argument("--" + f.name.replace("_", "-"), **kw)


def _option_type(name: str, parse, check):
    """An argparse type: ``parse`` the text, then ``check`` the value; errors name the setting."""
    def read(text: str):
        try:
            value = parse(text)
            check(value)
        except ValueError as e:
            msg = str(e) if name in str(e) else f"{name}={text!r}; {e}"
            raise argparse.ArgumentTypeError(msg) from None
        return value
    read.__name__ = name
    return read


def settings_overrides(args, config_class) -> dict:
    """The settings the user gave on the command line, by field name (lists become tuples)."""
    prefix = config_class.__name__ + "."
    return {k[len(prefix):]: tuple(v) if isinstance(v, list) else v
            for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _check_output_file(path: Path, overwrite: bool) -> None:
    from cxr_workbench.io import check_writable
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; expected a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite or choose another --out")
    check_writable(path.parent)


def _common(parser, *, out_help: str | None = None, out_default=None, overwrite: bool = True,
            progress: bool = True) -> None:
    """The options most commands share: --out, --overwrite, --no-progress."""
    if out_help is not None:
        parser.add_argument("--out", type=Path, required=out_default is None, default=out_default, help=out_help)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace earlier results")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _generator_file(text: str) -> Path:
    from cxr_workbench.assets import shipped_generator
    try:
        return shipped_generator(text)
    except OSError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _checkpoint_option(parser) -> None:
    from cxr_workbench.assets import DEFAULT_FILMS, SHIPPED
    parser.add_argument("--checkpoint", type=_generator_file,
                        help=f"a shipped generator by the films it learned ({', '.join(SHIPPED)}) or a file: ours, "
                             f"rosinality .pt or NVlabs .pkl (default: {DEFAULT_FILMS})")


def _class_option(parser) -> None:
    parser.add_argument("--class", dest="label", type=_number(int, 0, 1_000_000), default=0,
                        help="class of the references, for a conditional generator (default: 0)")


def _reader_option(parser) -> None:
    from cxr_workbench.model.readers import READER_SPECS
    parser.add_argument("--reader", default="oracle", help=f"what reads the disease: {READER_SPECS} (default: oracle)")


def _cluster_options(parser) -> None:
    parser.add_argument("--workers", type=_number(int, 0, 1024), default=0,
                        help="fan out over a local Dask cluster of this many processes (0: this process)")
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")


def _tune_option(parser, when: str) -> None:
    parser.add_argument("--tune", type=_number(int, 0, 100_000), default=0, metavar="STEPS",
                        help=f"pivotal tuning: fine-tune the generator's synthesis on the films for STEPS steps {when} "
                             "(0: none; 100 is a good start)")


def _film_options(parser) -> None:
    from cxr_workbench.imaging.datasets import FITS, VOI_MODES
    parser.add_argument("--fit", choices=FITS, default="crop",
                        help="make a film square: crop or letterbox, never stretch")
    parser.add_argument("--voi", choices=VOI_MODES, default="auto", help="DICOM display window")
    parser.add_argument("--upsample", action="store_true", help="enlarge films smaller than the model's resolution")


def _lo_options(parser, default_settings: str) -> None:
    from cxr_workbench.method.optimize import NAMED_CONFIGS, LOConfig
    parser.add_argument("--settings", choices=sorted(NAMED_CONFIGS), default=default_settings,
                        help="named settings the options below change: ours, the paper's as printed (literal: "
                             "constant c, Eq. 4 literally), augment (ours with c 0.3, 50 steps at 2x the lr) or "
                             "interactive (the editor's: 4 of 12 points optimised, 120 steps at 3x the lr)")
    add_settings_options(parser, LOConfig, defaults=NAMED_CONFIGS[default_settings],
                         title=f"LOConfig settings (defaults: --settings {default_settings})")


# --------------------------------------------------------------------------------------------
# The commands: each add_x declares its options, beside the cmd_x that runs it.
# --------------------------------------------------------------------------------------------

def add_quickstart(sub) -> None:
    from cxr_workbench.imaging.masks import PRESETS
    q = sub.add_parser("quickstart", formatter_class=HelpFormatter,
                       help="run notebooks/00_quickstart headless: figures + HTML into --out")
    _common(q, out_help="output folder", out_default=Path("out/quickstart"), progress=False)
    q.add_argument("--seed", type=_number(int, 0, MAX_SEED), default=0, help="reference seed")
    q.add_argument("--box", default="heart", choices=list(PRESETS), help="preset box")
    q.add_argument("--max-steps", type=_number(int, 1), default=300, help="optimisation step cap")
    q.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args) -> int:
    from cxr_workbench.io import check_writable
    from cxr_workbench.ui.notebooks import NOTEBOOK_DIR, execute_notebook
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


def add_sample(sub) -> None:
    from cxr_workbench.model.checkpoints import FORMATS
    s = sub.add_parser("sample", formatter_class=HelpFormatter,
                       help="write a grid of generated images")
    _checkpoint_option(s)
    s.add_argument("--format", default="auto", choices=FORMATS, help="checkpoint format (auto: by content)")
    s.add_argument("--random-init", action="store_true", help="ignore the shipped generator")
    s.add_argument("--seeds", type=seed_list, default=seed_list("0-15"), help="e.g. 0-15 or 1,4,9-12")
    s.add_argument("--cols", type=_number(int, 1, 1024), default=8, help="grid columns")
    s.add_argument("--psi", type=_number(float, 0, 2), default=1.0, help="truncation")
    _class_option(s)
    _common(s, out_help="PNG file", out_default=Path("out/grid.png"), progress=False)
    s.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    import torch

    from cxr_workbench.assets import DEFAULT_GENERATOR
    from cxr_workbench.io import save_png
    from cxr_workbench.model.checkpoints import load_generator
    from cxr_workbench.model.latents import sample_grid
    from cxr_workbench.model.stylegan2 import Generator

    _check_output_file(args.out, args.overwrite)
    path = args.checkpoint or (DEFAULT_GENERATOR if DEFAULT_GENERATOR.is_file() and not args.random_init else None)
    if path is None:
        torch.manual_seed(0)
        G = Generator().eval()
        label = "RANDOM-INIT generator (untrained; no checkpoint given)"
    else:
        G = load_generator(path, format=args.format)
        label = f"generator {path}"
    grid = sample_grid(G, args.seeds, cols=args.cols, psi=args.psi, label=args.label)
    save_png(args.out, grid, overwrite=args.overwrite)
    grey = f" ({G.img_channels} channels averaged to grey)" if G.img_channels > 1 else ""
    print(f"{label}: {len(args.seeds)} samples{grey} -> {args.out}")
    return 0


def add_edit(sub) -> None:
    from cxr_workbench.imaging.diseases import DISEASES
    from cxr_workbench.imaging.masks import PRESETS
    from cxr_workbench.method.directions import DIRECTION_SPECS
    from cxr_workbench.method.optimize import METHODS
    e = sub.add_parser("edit", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="edit seeds inside a box: Baseline LO, LO + direction or linear",
                       description="Edit reference seeds inside a box; writes strip.png, latents.pt, metrics.json.")
    _checkpoint_option(e)
    e.add_argument("--seed", type=seed_list, default=[0], help="reference seed(s), e.g. 0 or 0-7 (default: 0)")
    e.add_argument("--box", default="heart", help=f"a preset ({', '.join(PRESETS)}) or a box .json (default: heart)")
    e.add_argument("--disease", choices=list(DISEASES), default=None,
                   help="what the box shows (default: the preset's; required for a box .json)")
    e.add_argument("--direction", default="auto", help=f"{DIRECTION_SPECS} (default: auto)")
    e.add_argument("--method", default="lo+dir", choices=list(METHODS), help="(default: lo+dir)")
    _class_option(e)
    _reader_option(e)
    e.add_argument("--image", type=Path, nargs="+", help="films to invert and edit instead of --seed")
    e.add_argument("--invert-steps", type=_number(int, 1, 100_000), default=300, help="inversion steps per film")
    e.add_argument("--latents", type=Path, default=None,
                   help="edit the films of an invert set (its latents.pt; tuned there or not) instead of --seed")
    _tune_option(e, "after inverting --image")
    e.add_argument("--keep-film", action="store_true",
                   help="film-preserving edits: the film plus the edit's change inside a soft-edged box, every "
                        "pixel outside the box the film's (needs --image or --latents)")
    e.add_argument("--device", default="auto",
                   help="where the generator runs: auto (CUDA when present), cpu or cuda[:N]")
    _film_options(e)
    _common(e, out_help="output folder")
    _lo_options(e, "ours")
    e.set_defaults(func=cmd_edit)


def cmd_edit(args) -> int:
    from cxr_workbench.assets import DEFAULT_GENERATOR
    from cxr_workbench.method.optimize import LOConfig
    from cxr_workbench.studies.edit import EditRequest, run_edit
    req = EditRequest(checkpoint=args.checkpoint or DEFAULT_GENERATOR,
                      seeds=[] if args.image or args.latents else args.seed, latents=args.latents, tune=args.tune,
                      keep_film=args.keep_film,
                      box=args.box, direction=args.direction, method=args.method, disease=args.disease,
                      settings=args.settings, overrides=settings_overrides(args, LOConfig), images=args.image or [],
                      fit=args.fit, voi=args.voi, upsample=args.upsample, invert_steps=args.invert_steps,
                      device=args.device, reader=args.reader, label=args.label)
    for path in run_edit(req, args.out, overwrite=args.overwrite, progress=not args.no_progress):
        print(path)
    return 0


def add_train(sub) -> None:
    from cxr_workbench.model.train import TrainConfig
    t = sub.add_parser("train", formatter_class=HelpFormatter,
                       help="train (or resume) a StyleGAN2 on phantoms or DRRs (--source)")
    t.add_argument("--run-dir", type=Path, required=True, help="resumed if it holds a snapshot")
    t.add_argument("--stop-after-kimg", type=_number(float, 0, strict_low=True), default=None,
                   help="end this call early, resumable")
    t.add_argument("--stop-after-minutes", type=_number(float, 0, strict_low=True), default=None,
                   help="end this call after so many minutes of training, with a snapshot; resumable")
    t.add_argument("--threads", type=_number(int, 1, 256), default=None,
                   help="CPU threads (default: torch's; use 1 when another job shares a 2-core machine)")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="autocast of G and D; auto: bf16 on CUDA, fp32 on CPU (the mapping stays fp32)")
    _common(t, overwrite=False)
    add_settings_options(t, TrainConfig)
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from cxr_workbench.assets import SHIPPED, shipped_generator
    from cxr_workbench.model.train import TrainConfig, train
    settings = settings_overrides(args, TrainConfig)
    if settings.get("init") in SHIPPED:  # --init drr: the shipped generator of DRRs, its file in the card
        settings["init"] = str(shipped_generator(settings["init"]))
    cfg = TrainConfig(**settings).validate()
    amp = {"auto": None, "fp32": False, "bf16": True}[args.precision]
    path = train(cfg, args.run_dir, progress=not args.no_progress, stop_after_kimg=args.stop_after_kimg,
                 stop_after_s=None if args.stop_after_minutes is None else 60 * args.stop_after_minutes,
                 threads=args.threads, amp=amp)
    print(f"generator -> {path}")
    return 0


def add_invert(sub) -> None:
    from cxr_workbench.method.invert import InvertConfig
    v = sub.add_parser("invert", formatter_class=HelpFormatter,
                       help="bring films into the latent space (W+ or W)")
    v.add_argument("--image", type=Path, nargs="+", required=True, help="PNG/JPEG/DICOM films")
    _tune_option(v, "after the inversion; tuned.pt joins the set")
    _checkpoint_option(v)
    _common(v, out_help="output folder")
    _film_options(v)
    add_settings_options(v, InvertConfig)
    v.set_defaults(func=cmd_invert)


def cmd_invert(args) -> int:
    from cxr_workbench.assets import DEFAULT_GENERATOR
    from cxr_workbench.method.invert import InvertConfig
    from cxr_workbench.studies.films import InvertRequest, run_invert
    req = InvertRequest(args.image, checkpoint=args.checkpoint or DEFAULT_GENERATOR,
                        overrides=settings_overrides(args, InvertConfig), tune=args.tune, fit=args.fit, voi=args.voi,
                        upsample=args.upsample)
    rows = run_invert(req, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    for row, path in zip(rows, args.image, strict=True):
        tuned = f" ({row['psnr_tuned']:.1f} dB tuned)" if "psnr_tuned" in row else ""
        print(f"{path}: PSNR {row['psnr']:.1f} dB{tuned}, SSIM {row['ssim']:.3f}"
              + (f", oracle finds the film {'plausible' if row['film_plausible'] else 'NOT plausible'}"
                 if "film_plausible" in row else ""))
    print(f"-> {args.out}")
    return 0


def add_augment(sub) -> None:
    from cxr_workbench.imaging.diseases import DISEASES
    from cxr_workbench.method.directions import DIRECTION_SPECS
    from cxr_workbench.method.optimize import METHODS
    from cxr_workbench.studies.augment import POINTS, REFERENCE_SEED_START
    a = sub.add_parser("augment", formatter_class=HelpFormatter,
                       help="an augmentation set: edits of normal references, labelled with the box's disease")
    a.add_argument("--disease", required=True, help=" or ".join(DISEASES))
    a.add_argument("--samples", type=_number(int, 1, 10_000_000), required=True, help="samples in the set")
    a.add_argument("--out", type=Path, required=True, help="set folder (resumed if it holds this set)")
    a.add_argument("--keep-last", type=_number(int, 1, 1000), default=4, help="samples per reference: its last points")
    a.add_argument("--points", choices=POINTS, default="last",
                   help="which points of each trajectory: the last, or spread over its second half")
    a.add_argument("--vary-box", action="store_true",
                   help="a box per reference: a zone where the disease occurs, jittered (u chosen per zone)")
    a.add_argument("--verify", action="store_true",
                   help="only samples the reader reads as the disease (and plausible) enter the set")
    a.add_argument("--method", choices=METHODS, default="lo+dir")
    a.add_argument("--box", default=None, help="preset or box JSON (default: the disease's box)")
    a.add_argument("--direction", default="auto", help=f"{DIRECTION_SPECS} (default: auto)")
    a.add_argument("--seed-start", type=_number(int, 0, MAX_SEED), default=REFERENCE_SEED_START,
                   help="references: the seeds from here that the reader reads as normal")
    a.add_argument("--latents", type=Path, default=None,
                   help="references: the films inverted by cxr-workbench invert (its latents.pt) instead of seeds")
    a.add_argument("--batch", type=_number(int, 1, 4096), default=8, help="references optimised together (one task)")
    _class_option(a)
    _reader_option(a)
    _checkpoint_option(a)
    a.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else CPU; CPU with --workers), cpu or cuda[:N]")
    a.add_argument("--compile", action="store_true",
                   help="compile the generator (torch.compile): ~1.5x per step after a minute or two of compiling; "
                        "for sets of a few hundred samples or more (CPU: needs g++)")
    _cluster_options(a)
    _common(a, overwrite=False)
    _lo_options(a, "augment")
    a.set_defaults(func=cmd_augment)


def cmd_augment(args) -> int:
    from cxr_workbench.assets import DEFAULT_GENERATOR, load_reader
    from cxr_workbench.method.optimize import LOConfig
    from cxr_workbench.studies.augment import AugmentRequest, run_augment, set_summary
    req = AugmentRequest(disease=args.disease, samples=args.samples, out=args.out,
                         checkpoint=args.checkpoint or DEFAULT_GENERATOR, settings=args.settings,
                         overrides=settings_overrides(args, LOConfig), keep_last=args.keep_last, points=args.points,
                         method=args.method, box=args.box, vary_box=args.vary_box, direction=args.direction,
                         reader=args.reader, verify=args.verify, latents=args.latents, seed_start=args.seed_start,
                         label=args.label, batch=args.batch, device=args.device, compile=args.compile,
                         workers=args.workers, scheduler=args.scheduler)
    manifest = run_augment(req, progress=not args.no_progress)
    print(set_summary(manifest, args.out, load_reader(args.reader), args.verify))
    return 0


def add_figure(sub) -> None:
    from cxr_workbench.studies.paper_figures import FIGURES
    f = sub.add_parser("figure", formatter_class=HelpFormatter,
                       help="a figure of the paper from a fresh run or from output sets: PNG, PDF and SVG with "
                            "its provenance")
    f.add_argument("name", choices=list(FIGURES), help="; ".join(f"{k}: {v}" for k, v in FIGURES.items()))
    _checkpoint_option(f)
    f.add_argument("--seed", type=seed_list, default=None,
                   help="references (default: seed 3 for fig3 and fig5, 0-5 for fig4, 100-119 for table2)")
    f.add_argument("--max-steps", type=_number(int, 1, 100_000), default=300, help="the edits' step cap")
    f.add_argument("--sigma", type=_number(float, 0, strict_low=True), nargs="+", default=[0.3, 1.0, 2.0],
                   help="table2: the spring lengths")
    f.add_argument("--from", dest="sources", type=Path, nargs="+", default=[], metavar="SET",
                   help="draw from these output sets instead of a fresh run: edit sets of seeds (fig3: one per "
                        "method and disease; fig4, fig5: one disease), for table2 also earlier table2 sets; "
                        "their generator, references and settings are used")
    _common(f, out_help="output folder")
    f.set_defaults(func=cmd_figure)


def cmd_figure(args) -> int:
    from cxr_workbench.assets import DEFAULT_GENERATOR
    from cxr_workbench.studies.paper_figures import FigureRequest, make_figure
    if args.sources and args.checkpoint:
        raise ValueError(f"--checkpoint {args.checkpoint} with --from; a figure from output sets uses the generator "
                         "that made them")
    req = FigureRequest(args.name, checkpoint=args.checkpoint or DEFAULT_GENERATOR, seeds=args.seed,
                        max_steps=args.max_steps, sigmas=args.sigma, sources=args.sources)
    for path in make_figure(req, args.out, overwrite=args.overwrite, progress=not args.no_progress):
        print(path)
    return 0


def add_replay(sub) -> None:
    r = sub.add_parser("replay", formatter_class=HelpFormatter,
                       help="make an output set of edit, invert, augment or classify again from its "
                            "provenance.json; exit 2 when it does not match")
    r.add_argument("out", type=Path, help="the output set's folder")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_replay)


def cmd_replay(args) -> int:
    from cxr_workbench.studies.replay import replay, replay_line
    prov, differences = replay(args.out, progress=not args.no_progress)
    print(replay_line(args.out, prov, differences))
    return 2 if differences else 0


def add_classify(sub) -> None:
    from cxr_workbench.studies.classify import CPU_SCALE, ProtocolConfig
    c = sub.add_parser("classify", formatter_class=HelpFormatter,
                       help="paper Tables 3 and 4: classifiers trained with and without augmentation sets")
    c.add_argument("--sets", type=Path, nargs="+", required=True,
                   help="augmentation set folders, one per disease and sigma (cxr-workbench augment)")
    c.add_argument("--out", type=Path, required=True, help="runs, predictions and tables (resumed)")
    c.add_argument("--full", action="store_true", help="the paper's sizes (10K normal, 1K/5K disease, 5K aug); "
                   "default: the CPU scale, a fiftieth with the same ratios")
    c.add_argument("--save-models", action="store_true",
                   help="also write each run's classifier as models/<run>.pt (usable as --reader)")
    _cluster_options(c)
    _common(c, overwrite=False)
    add_settings_options(c, ProtocolConfig, defaults=CPU_SCALE,
                         title="ProtocolConfig settings (defaults: the CPU scale; --full: the paper's sizes)")
    c.set_defaults(func=cmd_classify)


def cmd_classify(args) -> int:
    from cxr_workbench.studies.classify import ClassifyRequest, ProtocolConfig, run_classify
    req = ClassifyRequest(args.sets, args.out, full=args.full, overrides=settings_overrides(args, ProtocolConfig),
                          save_models=args.save_models, workers=args.workers, scheduler=args.scheduler)
    results, text = run_classify(req, progress=not args.no_progress)
    print(text)
    chosen = "; '(val)': the sigma with the best validation AUROC" if "(val)" in text else ""
    print(f"test AUROC x100, mean ± std over {results['seed'].nunique()} seeds; * p < 0.05 (paired t-test against "
          f"random augmentation){chosen}; runs and predictions in {args.out}")
    return 0


def add_oracle(sub) -> None:
    from cxr_workbench.model.oracle import OracleConfig
    o = sub.add_parser("oracle", formatter_class=HelpFormatter,
                       help="train the severity oracle on fresh phantoms or DRRs (--source)")
    _common(o, out_help="oracle .pt (the shipped one is data/oracle.pt)")
    add_settings_options(o, OracleConfig)
    o.set_defaults(func=cmd_oracle)


def cmd_oracle(args) -> int:
    from cxr_workbench.model.oracle import OracleConfig, save_oracle, train_oracle
    _check_output_file(args.out, args.overwrite)
    cfg = OracleConfig(**settings_overrides(args, OracleConfig)).validate()
    oracle, report, wall = train_oracle(cfg, progress=not args.no_progress)
    save_oracle(args.out, oracle, report, wall, overwrite=args.overwrite, source=cfg.source, ct=cfg.ct or None)
    print(f"oracle -> {args.out} ({wall:.0f} s); held-out: {report.to_dict()}")
    return 0


def add_ship(sub) -> None:
    h = sub.add_parser("ship", formatter_class=HelpFormatter,
                       help="ship a run's generator in place of the shipped one of its films (figures, PCA, card)")
    h.add_argument("--run-dir", type=Path, required=True)
    h.add_argument("--data-dir", type=Path, default=None,
                   help="default: the checkout's folder of the films the run learned (data/drr/ or data/)")
    h.add_argument("--n", type=_number(int, 2), default=2000, help="images per set for the quality figures")
    h.add_argument("--frd", type=_number(int, 0), default=500,
                   help="images per set for the Frechet Radiomics Distance (make frd installs it); 0: none")
    h.add_argument("--force", action="store_true", help="ship even when it measures worse than the shipped one")
    h.add_argument("--oracle", type=Path, default=None,
                   help="an oracle of the films the run learned (cxr-workbench oracle --source ...), shipped with it; "
                        "default: the shipped oracle of those films")
    _common(h, progress=False)
    h.set_defaults(func=cmd_ship)


def cmd_ship(args) -> int:
    from cxr_workbench.assets import SHIPPED, shipped_oracle
    from cxr_workbench.model.oracle import load_oracle
    from cxr_workbench.studies.quality import run_films, ship_generator
    films = run_films(args.run_dir)  # the shipped folder and oracle of the films the run learned
    oracle = load_oracle(args.oracle) if args.oracle else shipped_oracle(films=films)
    for path in ship_generator(args.run_dir, args.data_dir or SHIPPED[films], oracle, oracle_file=args.oracle, n=args.n,
                               frd=args.frd, overwrite=args.overwrite, force=args.force, progress=True):
        print(path)
    return 0


def add_quiz(sub) -> None:
    q = sub.add_parser("quiz", formatter_class=HelpFormatter,
                       help="a severity quiz for a class: make one from trajectories, or export its scores as CSV")
    q.add_argument("action", choices=["make", "scores"], help="make: films and questions into --db; scores: "
                   "students.csv, questions.csv and answers.csv")
    q.add_argument("--db", type=Path, required=True, help="the study database (SQLite; made if new)")
    q.add_argument("--name", required=True, help="the quiz's name in the database")
    _checkpoint_option(q)
    q.add_argument("--order", type=_number(int, 0, 1000), default=4, help="make: 'order these films' questions")
    q.add_argument("--region", type=_number(int, 0, 1000), default=4, help="make: 'which region changed' questions")
    q.add_argument("--films", type=_number(int, 2, 26), default=4, help="make: films per order question")
    q.add_argument("--seed", type=_number(int, 0), default=0, help="make: the edits' seeds and the questions' order")
    _common(q, out_help="make: where the films go; scores: where the CSV files go")
    q.set_defaults(func=cmd_quiz)


def cmd_quiz(args) -> int:
    from cxr_workbench.studies import quiz as qz
    from cxr_workbench.studies.reader_study import open_study_db
    if args.action == "scores":
        db = open_study_db(args.db, readonly=True)
        for path in qz.export_scores(db, args.name, args.out, overwrite=args.overwrite):
            print(path)
        return 0
    from cxr_workbench.assets import DEFAULT_GENERATOR
    from cxr_workbench.model.checkpoints import load_generator
    req = qz.QuizRequest(args.db, args.name, args.out, n_order=args.order, n_region=args.region, films=args.films,
                         seed=args.seed, overwrite=args.overwrite).check()
    questions = qz.run_quiz(req, load_generator(args.checkpoint or DEFAULT_GENERATOR), progress=not args.no_progress)
    print(f"quiz {args.name!r}: {len(questions)} questions in {args.db}, films in {args.out}; serve it with "
          f"cxr-workbench app quiz --db {args.db} --quiz {args.name}")
    return 0


def add_app(sub) -> None:
    from cxr_workbench.ui.apps import APPS
    a = sub.add_parser("app", formatter_class=HelpFormatter,
                       help="serve the editor, PC browser, reader study or quiz as a web app (Voila): no code")
    a.add_argument("name", choices=list(APPS), help="the app")
    a.add_argument("--port", type=_number(int, 1, 65535), default=8866, help="the port")
    a.add_argument("--host", default="127.0.0.1", help="the address to bind (no authentication: localhost "
                   "unless --allow-remote)")
    a.add_argument("--allow-remote", action="store_true", help="allow a --host other than localhost")
    _checkpoint_option(a)
    a.add_argument("--seed", type=_number(int, 0), default=0, help="editor, pc-browser: the film's seed")
    a.add_argument("--box", default="heart", help="editor, pc-browser: the first box (a preset or box JSON)")
    a.add_argument("--no-compile", action="store_true", help="editor: do not compile the generator")
    a.add_argument("--db", type=Path, help="reader, quiz: the study database")
    a.add_argument("--study", help="reader: the study's name")
    a.add_argument("--quiz", help="quiz: the quiz's name")
    a.add_argument("--teacher", action="store_true", help="quiz: the class's answers and scores, not the questions")
    a.add_argument("--out", type=Path, default=Path("quiz_scores"), help="quiz --teacher: where CSV exports go")
    a.set_defaults(func=cmd_app)


def cmd_app(args) -> int:
    from cxr_workbench.imaging.masks import check_box
    from cxr_workbench.ui.apps import check_host, serve
    check_host(args.host, args.allow_remote)
    checkpoint = None if args.checkpoint is None else str(args.checkpoint.resolve())
    if args.name in ("editor", "pc-browser"):
        check_box(args.box)  # a box that cannot be read is named before the server starts
        params = dict(generator=checkpoint, seed=args.seed,
                      box=str(Path(args.box).resolve()) if Path(args.box).is_file() else args.box)
        if args.name == "editor":
            params["compile"] = not args.no_compile
    else:
        from cxr_workbench.studies.reader_study import open_study_db
        what = "study" if args.name == "reader" else "quiz"
        if args.db is None or getattr(args, what) is None:
            raise ValueError(f"app {args.name} needs --db and --{what}")
        db = open_study_db(args.db, readonly=True)
        if args.name == "reader":
            from cxr_workbench.studies.reader_study import study_id
            study_id(db, args.study)
            params = dict(db=str(args.db.resolve()), study=args.study)
        else:
            from cxr_workbench.studies.quiz import quiz_id
            quiz_id(db, args.quiz)
            params = dict(db=str(args.db.resolve()), quiz=args.quiz, teacher=args.teacher,
                          out_dir=str(args.out.resolve()))
    return serve(args.name, params, port=args.port, host=args.host, allow_remote=args.allow_remote)


COMMANDS = (add_quickstart, add_sample, add_edit, add_train, add_invert, add_augment, add_classify, add_figure,
            add_replay, add_oracle, add_ship, add_quiz, add_app)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per study, each from its ``add_x``."""
    p = Parser(prog="cxr-workbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


EXPECTED_ERRORS = (ValueError, KeyError, OSError, FloatingPointError)


def main(argv=None) -> int:
    """Run one command; every expected error is one line on stderr with exit status 2."""
    import warnings
    args = build_parser().parse_args(argv)

    def one_line(message, category, *_, **__):  # a note for the user, not Python's two lines of source
        print(f"cxr-workbench {args.command}: note: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
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
        print(f"cxr-workbench {args.command}: internal error: {type(e).__name__}: {reason(e)} "
              "(set CXR_WORKBENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
