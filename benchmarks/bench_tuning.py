"""Pivotal tuning on films the shipped generator never saw (issue 36), and the inversion's default loss.

Films, each loaded as a user's file would be (``load_films``): phantom demo films (PNG), one flipped,
one windowed (gamma 0.6), one as a MONOCHROME1 DICOM and one as a JPEG; DRRs of the shipped CT, one
plain, one with 10x fewer photons, one with a line, an ECG lead and a tube, one at 1 m source distance.

1. The inversion's loss: PSNR with the oracle-feature term (weight 0.5) and without it, on these
   films and on 8 generated images (seeds 10000+).
2. Pivotal tuning of each film on its own (TuneConfig defaults): PSNR before and after, seconds per
   film for inversion + tuning.
3. An edit of each film (LO + direction, the heart box, the "ours" settings) on the untuned and on the
   tuned generator: the oracle's severity trend and the leakage outside the box.

    python benchmarks/bench_tuning.py [--steps 300] [--tune 100] [--max-steps 300] [--skip-loss]
        [--checkpoint RUN/generator.pt|drr]   # a run's or a shipped generator, read by its films' oracle
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr_workbench.assets import generator_or_default, oracle_or_default, pca_for
from cxr_workbench.imaging import drr, sources
from cxr_workbench.imaging.datasets import load_films, save_dicom
from cxr_workbench.method.evaluate import measure
from cxr_workbench.method.invert import InvertConfig, invert
from cxr_workbench.method.optimize import named_config, run_method
from cxr_workbench.method.plans import plan_edit
from cxr_workbench.method.tune import TuneConfig, tune_generator
from cxr_workbench.model.latents import reference_latents, synthesize
from cxr_workbench.model.readers import OracleReader


def write_films(folder: Path) -> dict:
    """name -> file of each test film."""
    files = {}

    def png(name, img):
        files[name] = folder / f"{name}.png"
        Image.fromarray((np.clip(img, 0, 1) * 65535).astype(np.uint16)).save(files[name])
    for s in (1, 2, 3):
        png(f"phantom {s}", sources.demo_film("phantom", s, size=128))
    png("phantom flipped", sources.demo_film("phantom", 4, size=128)[:, ::-1])
    png("phantom windowed", sources.demo_film("phantom", 5, size=128) ** 0.6)
    files["phantom DICOM"] = save_dicom(folder / "film.dcm", sources.demo_film("phantom", 6, size=128),
                                        photometric="MONOCHROME1")
    files["phantom JPEG"] = folder / "film.jpg"
    jpeg = (sources.demo_film("phantom", 7, size=128) * 255).astype(np.uint8)
    Image.fromarray(jpeg).save(files["phantom JPEG"], quality=90)
    base = drr.sample_params(np.random.default_rng(11), "normal")
    variants = {"DRR": {}, "DRR low dose": dict(photons=base.photons / 10),
                "DRR devices": dict(devices=drr.DEVICES), "DRR 1 m": dict(sid=1000.0)}
    for name, change in variants.items():
        png(name, drr.render(drr.DRRParams(**{**base.__dict__, **change}), 128)[0])
    return files


def edit_measures(G, ws, plan, cfg, oracle) -> list[dict]:
    traj = run_method(G, "lo+dir", ws, plan.box, u=plan.u, config=cfg, progress=False)
    return measure(traj, plan.box, plan.disease, oracle)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300, help="inversion steps")
    p.add_argument("--tune", type=int, default=100, help="tuning steps")
    p.add_argument("--max-steps", type=int, default=300, help="the edit's step cap")
    p.add_argument("--skip-loss", action="store_true", help="skip part 1 (the inversion's loss)")
    p.add_argument("--checkpoint", help="a generator file or a shipped one's name (phantom, drr; default: the default)")
    p.add_argument("--oracle", help="an oracle file of the generator's films (default: the shipped one of its films)")
    args = p.parse_args()
    G = generator_or_default(args.checkpoint)
    oracle = OracleReader(oracle_or_default(args.oracle, G))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; generator {args.checkpoint or 'shipped'} "
          f"({G.img_resolution} px); inversion {args.steps} steps, tuning {args.tune} steps")
    with tempfile.TemporaryDirectory() as tmp:
        files = write_films(Path(tmp))
        films = load_films(list(files.values()), G.img_resolution)
    names = list(files)
    generated = synthesize(G, reference_latents(G, range(10_000, 10_008))).clamp(-1, 1)

    print("\n1. inversion loss: PSNR dB (mean over the set) with the oracle-feature term 0.5 | without it")
    for label, images in () if args.skip_loss else (("films", films), ("generated", generated)):
        row = []
        for weight in (0.5, 0.0):
            res = invert(G, images, InvertConfig(steps=args.steps, feature_weight=weight), oracle=oracle,
                         progress=False)
            row.append(f"{res.psnr.mean():.1f}")
        print(f"   {label:9s}: {row[0]} | {row[1]}")
    print(f"\n2. tuning each film (inversion feature weight {InvertConfig().feature_weight}), and 3. its edit "
          "untuned -> tuned")
    cfg = named_config("ours", max_steps=args.max_steps)
    plan = plan_edit(G, pca_for(G), box="heart", layers=cfg.layers)
    rows = []
    for i, name in enumerate(names):
        t = time.perf_counter()
        res = invert(G, films[i:i + 1], InvertConfig(steps=args.steps), oracle=oracle, progress=False)
        tuned = tune_generator(G, films[i:i + 1], res.ws, TuneConfig(steps=args.tune), progress=False)
        seconds = time.perf_counter() - t
        before, after = (edit_measures(g, res.ws, plan, cfg, oracle)[0] for g in (G, tuned.G))
        rows.append(dict(psnr=float(tuned.psnr_before[0]), tuned=float(tuned.psnr[0]), s=seconds,
                         trend=(before["severity_trend"], after["severity_trend"]),
                         leak=(before["leakage"], after["leakage"])))
        r = rows[-1]
        print(f"   {name:17s} PSNR {r['psnr']:5.1f} -> {r['tuned']:5.1f} dB, {seconds:5.1f} s; severity trend "
              f"{r['trend'][0]:+.2f} -> {r['trend'][1]:+.2f}, leakage {r['leak'][0]:.3f} -> {r['leak'][1]:.3f}")
    mean = {k: np.mean([r[k] for r in rows], 0) for k in ("psnr", "tuned", "s", "trend", "leak")}
    print(f"   mean              PSNR {mean['psnr']:5.1f} -> {mean['tuned']:5.1f} dB, {mean['s']:5.1f} s; severity "
          f"trend {mean['trend'][0]:+.2f} -> {mean['trend'][1]:+.2f}, leakage {mean['leak'][0]:.3f} -> "
          f"{mean['leak'][1]:.3f} (tuned / untuned {mean['leak'][1] / mean['leak'][0]:.2f})")
