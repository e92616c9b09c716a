"""Augmentation sets: edited images labelled with the disease of their box (paper Sec. 3.2).

Each reference image gets a trajectory (LO + direction by default; Baseline LO and linear
translation for comparison), and the last ``keep_last`` points are kept as samples of the
disease, "as the monotonicity is maintained" (paper). A set is a folder::

    set.json      what the set is: generator fingerprint, disease, box, method, u and its source,
                  settings and their hash (written first; a resume must match it)
    manifest.csv  one row per sample: file, label, disease, reference (its seed, or its row in the
                  latents given), point_index, box,
                  u_source, sigma, method, config_hash, generator, ctr, opacity_burden, plausible,
                  and the PV and oracle severity trend of the sample's whole trajectory
    images/       16-bit PNGs (the model's [-1, 1] range mapped to 0..65535)

Batches of references are written as they finish (images first, then the manifest that names
them), so a killed run resumes where it stopped without duplicates, and a sample is never named
in the manifest before its image is complete.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .assets import cache_dir
from .directions import choose_direction, generator_key
from .distributed import fan_out
from .evaluate import TABLE2_BOXES, measure
from .io import atomic_write, check_writable, save_png, writer_lock, write_json
from .latents import reference_latents
from .masks import Box, check_disease, load_box
from .optimize import METHODS, LOConfig, named_config, run_method
from .phantom import CTR_THRESHOLD, OPACITY_THRESHOLD

MANIFEST_COLUMNS = ("file", "label", "disease", "reference", "point_index", "box", "u_source", "sigma",
                    "method", "config_hash", "generator", "ctr", "opacity_burden", "plausible", "trajectory_pv",
                    "trajectory_trend")


def to_uint16(images: torch.Tensor) -> np.ndarray:
    """[..., H, W] in [-1, 1] -> uint16 (65535 levels: a 64 px film edit needs more than 8 bits)."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 32767.5).round().to(torch.int32).numpy().astype(np.uint16)


def read_set_images(set_dir, manifest: pd.DataFrame | None = None) -> torch.Tensor:
    """The images of a set, in manifest order: [N, 1, H, W] in [-1, 1]."""
    from PIL import Image
    set_dir = Path(set_dir)
    manifest = read_manifest(set_dir) if manifest is None else manifest
    arrays = [np.asarray(Image.open(set_dir / f), dtype=np.float32) for f in manifest["file"]]
    return torch.from_numpy(np.stack(arrays))[:, None] / 32767.5 - 1


def read_manifest(set_dir) -> pd.DataFrame:
    path = Path(set_dir) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected an augmentation set made by make_augmentation")
    return pd.read_csv(path)


def set_quality(manifest: pd.DataFrame) -> dict:
    """How the oracle reads a set: the share read as the intended disease (CTR above 0.5 for
    cardiomegaly, burden above the phantom threshold for opacity), plausible, and both."""
    if manifest.empty:
        raise ValueError("an empty manifest; expected at least one sample")
    disease = check_disease(str(manifest["disease"].iloc[0]))
    intended = (manifest["ctr"] > CTR_THRESHOLD) if disease == "cardiomegaly" else \
        (manifest["opacity_burden"] > OPACITY_THRESHOLD)
    plausible = manifest["plausible"].astype(bool)
    return dict(disease=disease, n=len(manifest), intended=float(intended.mean()), plausible=float(plausible.mean()),
                intended_and_plausible=float((intended & plausible).mean()))


def edit_references(G, seeds: list[int], box: Box, u, config: LOConfig, method: str, keep: list[int],
                    disease: str, oracle=None, ws: torch.Tensor | None = None) -> dict:
    """One batch: trajectories for ``seeds`` (or for the W+ latents ``ws`` [B, num_ws, w_dim],
    ``seeds`` then naming them), the last ``keep[r]`` points of reference r.

    Returns per kept sample (reference-major): seed, point index (1..n), uint16 image [H, W], the
    oracle readings (NaN / False without an oracle), and its trajectory's PV and severity trend.
    """
    w_ref = reference_latents(G, seeds) if ws is None else ws
    traj = run_method(G, method, w_ref, box, u=u, config=config, progress=False)
    if not torch.isfinite(traj.images).all():
        raise FloatingPointError(f"the {method} run for seeds {seeds} went non-finite ({traj.message}); "
                                 "try a smaller lr, sigma or c")
    n = traj.images.shape[1]
    picks = [(r, i) for r, k in enumerate(keep) for i in range(n - k, n)]
    measured = measure(traj, box, disease, oracle)
    images = torch.stack([traj.images[r, i] for r, i in picks])  # [S, C, H, W]
    out = dict(seed=[int(seeds[r]) for r, _ in picks], point=[i + 1 for _, i in picks], images=to_uint16(images[:, 0]),
               ctr=[math.nan] * len(picks), opacity_burden=[math.nan] * len(picks), plausible=[False] * len(picks),
               trajectory_pv=[measured[r]["PV"] for r, _ in picks],
               trajectory_trend=[measured[r].get("severity_trend", math.nan) for r, _ in picks])
    if oracle is not None:
        pred = oracle.predict(images)
        out.update(ctr=pred["ctr"].tolist(), opacity_burden=pred["opacity_burden"].tolist(),
                   plausible=pred["plausible"].tolist())
    return out


def _header(G, disease, box_name, box, method, keep_last, config, u, u_source) -> dict:
    settings = dict(disease=disease, box=box.to_dict(), method=method, keep_last=keep_last, config=asdict(config),
                    u=None if u is None else [round(float(v), 7) for v in u.flatten()], u_source=u_source)
    settings = json.loads(json.dumps(settings))  # as it will read back (tuples become lists)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return dict(generator=generator_key(G), box_name=box_name, config_hash=digest, **settings)


def _check_resume(path: Path, header: dict) -> None:
    old = json.loads(path.read_text())
    if old.get("generator") != header["generator"]:
        raise ValueError(f"{path} was made by generator {old.get('generator')}, not by this one "
                         f"({header['generator']}); resume with the same generator or choose another folder")
    flat = lambda h: {**{k: v for k, v in h.items() if k not in ("config", "config_hash")}, **h.get("config", {})}
    a, b = flat(old), flat(header)
    diff = {k: (a.get(k), b[k]) for k in b if a.get(k) != b[k] and k != "u"}
    if diff or a.get("u") != b["u"]:
        raise ValueError(f"{path} holds a set made with other settings (set, requested): "
                         f"{diff or {'u': 'another direction'}}; resume with the same settings or choose another folder")


def make_augmentation(G, seeds, disease: str, n_samples: int, config: LOConfig | None = None, out_dir=None,
                      keep_last: int = 4, method: str = "lo+dir", box: str | None = None, direction: str = "auto",
                      pca=None, oracle=None, batch: int = 8, client=None, progress: bool = True,
                      latents: torch.Tensor | None = None) -> pd.DataFrame:
    """Write (or finish) an augmentation set of ``n_samples`` images of ``disease`` into ``out_dir``.

    ``seeds``: reference seeds, used in order, ``keep_last`` samples each (the last reference may
    give fewer); at least ceil(n_samples / keep_last) are needed. ``latents`` [R, num_ws, w_dim]
    (inverted films, say) are references instead of seeds, named by their row. ``box``: a preset name or JSON
    file (default: the disease's Table 2 box). ``direction``: "auto" (the most box-local PC), "pc:K"
    or a file; needs ``pca`` for auto/pc. ``batch`` references are optimised together, one task
    each; with a Dask ``client`` the tasks run on its workers. Returns the manifest.
    """
    config = (config or named_config("augment")).validate()
    disease = check_disease(disease)
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}; expected a positive integer")
    if not isinstance(keep_last, int) or not 1 <= keep_last <= config.n:
        raise ValueError(f"keep_last={keep_last!r} is larger than the trajectory's n={config.n} points (or below 1); "
                         f"expected 1..{config.n}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r}; expected a positive integer")
    if latents is not None:
        if latents.ndim != 3 or latents.shape[1:] != (G.num_ws, G.w_dim):
            raise ValueError(f"latents of shape {tuple(latents.shape)}; expected [R, {G.num_ws}, {G.w_dim}]")
        seeds = range(len(latents))
    seeds = [int(s) for s in seeds]
    needed = math.ceil(n_samples / keep_last)
    if len(seeds) < needed:
        raise ValueError(f"{len(seeds)} reference seeds for {n_samples} samples at keep_last={keep_last}; "
                         f"expected at least {needed}")
    if out_dir is None:
        raise ValueError("out_dir=None; expected a folder for the set")
    out_dir = check_writable(out_dir)
    box_name = box or TABLE2_BOXES[disease]
    box_obj = load_box(box_name, G.img_resolution)
    if method == "lo":
        u, u_source = None, "none (Baseline LO)"
    else:
        u, u_source = choose_direction(G, pca, box_obj, direction, disease, layers=config.layers,
                                         cache_dir=cache_dir())
    header = _header(G, disease, str(box_name), box_obj, method, keep_last, config, u, u_source)
    header["references"] = "seeds" if latents is None else \
        "latents " + hashlib.sha256(latents.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]

    with writer_lock(out_dir):
        if (out_dir / "set.json").is_file():
            _check_resume(out_dir / "set.json", header)
        else:
            write_json(out_dir / "set.json", header)
        (out_dir / "images").mkdir(exist_ok=True)
        manifest_path = out_dir / "manifest.csv"
        rows = read_manifest(out_dir).to_dict("records") if manifest_path.is_file() else []
        done = {int(r["reference"]) for r in rows}
        plan = [(s, min(keep_last, n_samples - i * keep_last)) for i, s in enumerate(seeds[:needed])]
        todo = [(s, k) for s, k in plan if s not in done]
        tasks = [dict(seeds=[s for s, _ in todo[i:i + batch]], keep=[k for _, k in todo[i:i + batch]])
                 for i in range(0, len(todo), batch)]
        if latents is not None:
            for t in tasks:
                t["ws"] = latents[t["seeds"]].detach().float()
        shared = dict(G=G, box=box_obj, u=u, config=config, method=method, disease=disease, oracle=oracle)
        for _, res in fan_out(edit_references, tasks, shared, client, progress, desc=f"{disease} set"):
            for j, (seed, point) in enumerate(zip(res["seed"], res["point"])):
                name = f"images/{seed:07d}_{point:03d}.png"
                save_png(out_dir / name, res["images"][j])
                rows.append(dict(file=name, label=disease, disease=disease, reference=seed, point_index=point,
                                 box=json.dumps(box_obj.to_dict()), u_source=u_source, sigma=config.sigma,
                                 method=method, config_hash=header["config_hash"], generator=header["generator"],
                                 ctr=res["ctr"][j], opacity_burden=res["opacity_burden"][j],
                                 plausible=bool(res["plausible"][j]), trajectory_pv=res["trajectory_pv"][j],
                                 trajectory_trend=res["trajectory_trend"][j]))
            _write_manifest(manifest_path, rows)
        return _write_manifest(manifest_path, rows)


def _write_manifest(path: Path, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).sort_values(["reference", "point_index"])
    frame = frame.reset_index(drop=True)
    atomic_write(path, lambda f: frame.to_csv(f, index=False), "w")
    return frame


def normal_seeds(G, oracle, count: int, start: int = 0, chunk: int = 256) -> list[int]:
    """The first ``count`` seeds from ``start`` whose images the oracle reads as normal (CTR at
    most 0.5, no opacity): the paper edits normal films."""
    out, s = [], start
    while len(out) < count:
        seeds = list(range(s, s + chunk))
        with torch.no_grad():
            pred = oracle.predict(G.synthesis(reference_latents(G, seeds)))
        ok = (pred["ctr"] <= CTR_THRESHOLD) & (pred["opacity_burden"] <= OPACITY_THRESHOLD)
        out += [seed for seed, good in zip(seeds, ok) if good]
        s += chunk
    return out[:count]

