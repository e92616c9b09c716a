"""Augmentation sets: edited images labelled with the disease of their box (paper Sec. 3.2).

Each reference image gets a trajectory (LO + direction by default; Baseline LO and linear
translation for comparison), and the last ``keep_last`` points are kept as samples of the
disease, "as the monotonicity is maintained" (paper). A set is a folder::

    set.json      what the set is: generator fingerprint, disease, box, method, u and its source,
                  settings and their hash, the requested size and the references (a hash of the
                  seeds or latents); written first, a resume must match it
    manifest.csv  one row per sample: file, label, disease, reference (its seed, or its row in the
                  latents given), point_index, box,
                  u_source, sigma, method, config_hash, generator, ctr, opacity_burden, plausible,
                  the PV and severity trend of the sample's whole trajectory, the sha256 of the
                  sample's PNG, and the reader's name, its reading of the disease (severity) and
                  whether it reads the sample as the disease (read_as). The reader is the phantom
                  oracle unless another is given (``readers``); ctr and opacity_burden are the
                  oracle's readings (empty with another reader); and whether the sample is in the set
                  (``in_set``: all are, unless the set is verified)
    images/       16-bit PNGs (the model's [-1, 1] range mapped to 0..65535)

A set may carry variety and checked labels (docs/method.md, "Sets worth training on"): points
spread over each trajectory, a box per reference drawn from the zones where the disease occurs,
and a label check by the reader that keeps only the samples it reads as the disease.

Batches of references are written as they finish (images first, then the manifest that names
them), so a killed run resumes where it stopped without duplicates, and a sample is never named
in the manifest before its image is complete. A resume checks what is there: a reference whose
samples are missing, altered, duplicated or miscounted is made again (said in one line), and an
image the manifest does not name is removed. A set that has no sample yet takes new settings, so
a run that failed does not block its corrected retry.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_workbench.assets import DEFAULT_GENERATOR, cache_dir, films_of, load_reader, pca_for
from cxr_workbench.devices import compile_synthesis, pick_device
from cxr_workbench.distributed import cluster, fan_out
from cxr_workbench.imaging.diseases import DISEASES, check_disease, reads_as
from cxr_workbench.imaging.masks import box_masks, reference_box
from cxr_workbench.io import atomic_write, check_writable, write_json, writer_lock
from cxr_workbench.method.evaluate import measure
from cxr_workbench.method.metrics import box_leakage, feature_spread
from cxr_workbench.method.optimize import METHODS, LOConfig, named_config, run_method
from cxr_workbench.method.plans import plan_edit
from cxr_workbench.model.checkpoints import generator_key, load_generator
from cxr_workbench.model.latents import check_class, check_latents, reference_latents
from cxr_workbench.model.readers import as_reader
from cxr_workbench.studies.films import read_inverted
from cxr_workbench.studies.provenance import PROVENANCE, provenance

__all__ = ["MANIFEST_COLUMNS", "READER_COLUMNS", "SET_COLUMNS", "LEAKAGE_COLUMNS", "SAMPLE_NAME", "to_uint16", "in_set",
           "read_set_images", "read_manifest", "set_quality", "kept_points", "edit_references", "POINTS",
           "AugmentRequest", "check_set_options", "SetPlan", "plan_set", "write_set", "make_augmentation",
           "run_augment", "set_summary", "set_diversity", "REFERENCE_SEED_START", "normal_seeds"]

MANIFEST_COLUMNS = ("file", "label", "disease", "reference", "point_index", "box", "u_source", "sigma",
                    "method", "config_hash", "generator", "ctr", "opacity_burden", "plausible", "trajectory_pv",
                    "trajectory_trend", "sha256")
READER_COLUMNS = ("reader", "severity", "read_as")  # manifests written before readers were plug-ins lack them
SET_COLUMNS = ("in_set",)  # ... and before sets were verified
LEAKAGE_COLUMNS = ("leakage",)  # ... and before each sample's change outside its box was recorded
SAMPLE_NAME = re.compile(r"(\d{7})_(\d{3})\.png")  # images/<reference>_<point>.png


def to_uint16(images: torch.Tensor) -> np.ndarray:
    """[..., H, W] in [-1, 1] -> uint16 (65535 levels: a 64 px film edit needs more than 8 bits)."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 32767.5
    return x.round().to(torch.int32).numpy().astype(np.uint16)


def in_set(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows of the set's samples (a verified set's folder also holds the edits that failed its
    label check; manifests from before verification have no ``in_set`` column: all are in)."""
    return manifest[manifest["in_set"].astype(bool)] if "in_set" in manifest else manifest


def read_set_images(set_dir, manifest: pd.DataFrame | None = None) -> torch.Tensor:
    """The images of a set's samples (``manifest``: these rows instead), in manifest order:
    [N, 1, H, W] in [-1, 1]."""
    from PIL import Image
    set_dir = Path(set_dir)
    manifest = in_set(read_manifest(set_dir)) if manifest is None else manifest
    if manifest.empty:
        raise ValueError(f"{set_dir}: the set's manifest lists no sample; expected at least one")
    for f in manifest["file"]:
        name = str(f)
        if not (name.startswith("images/") and SAMPLE_NAME.fullmatch(name[len("images/"):])):
            raise ValueError(f"{set_dir / 'manifest.csv'} names the file {name!r}; expected images/<reference>_"
                             "<point>.png inside the set")
    arrays = []
    for f in manifest["file"]:
        with Image.open(set_dir / f) as im:
            if im.mode not in ("I;16", "I;16B", "I;16L"):  # 8 bits read as 16 would be near-black films
                raise ValueError(f"{set_dir / f} is a {im.mode} image; expected the 16-bit greyscale PNG "
                                 "make_augmentation writes")
            if arrays and im.size[::-1] != arrays[0].shape:
                first = set_dir / manifest["file"].iloc[0]
                raise ValueError(f"{set_dir / f} is {im.width}x{im.height} px; expected {arrays[0].shape[1]}x"
                                 f"{arrays[0].shape[0]} px as the set's first sample {first}")
            arrays.append(np.asarray(im, dtype=np.float32))
    return torch.from_numpy(np.stack(arrays))[:, None] / 32767.5 - 1


def read_manifest(set_dir) -> pd.DataFrame:
    """A set's ``manifest.csv``, its columns and integer fields checked (errors name the row and column)."""
    path = Path(set_dir) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected an augmentation set made by make_augmentation")
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a manifest ({e})") from None
    missing = [c for c in MANIFEST_COLUMNS if c != "sha256" and c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected a manifest written by make_augmentation")
    for col in ("reference", "point_index"):  # whole numbers, or the error names where it is not one
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = frame.index[values.isna() | (values != values.round()) | (values < 0)]
        if len(bad):
            raise ValueError(f"{path}, row {bad[0] + 2}, column {col!r}: {frame[col][bad[0]]!r}; expected a "
                             "non-negative integer")
        frame[col] = values.astype(int)
    return frame


def set_quality(manifest: pd.DataFrame) -> dict:
    """How the set's reader read its samples: the share read as the intended disease (for the
    oracle: CTR above 0.5 for cardiomegaly, burden above the phantom threshold for opacity),
    plausible, and both; and of all the edits made for it (``edited``; more than ``n`` in a
    verified set) the share that passed that check (``edits_passed``); with each sample's leakage
    recorded (sets made since it was), the median over the set (``leakage``)."""
    if manifest.empty:
        raise ValueError("an empty manifest; expected at least one sample")
    disease = check_disease(str(manifest["disease"].iloc[0]))
    if "read_as" in manifest and manifest["read_as"].notna().all():
        intended = manifest["read_as"].astype(bool)
    else:  # a manifest from before readers were plug-ins: the oracle's readings
        intended = pd.Series(reads_as(manifest, disease), index=manifest.index)
    plausible = manifest["plausible"].astype(bool)
    chosen = in_set(manifest).index
    i, p = intended[chosen], plausible[chosen]
    leakage = {"leakage": float(manifest.loc[chosen, "leakage"].median())} if "leakage" in manifest else {}
    return dict(disease=disease, n=len(chosen), intended=float(i.mean()), plausible=float(p.mean()),
                intended_and_plausible=float((i & p).mean()), edited=len(manifest),
                edits_passed=float((intended & plausible).mean()), **leakage)


def kept_points(n: int, k: int, points: str = "last") -> list[int]:
    """Which of a trajectory's n points (0-based) a set keeps, k of them: the ``last`` k, or k
    ``spread`` evenly from the middle of the sequence to its end (the last always kept)."""
    if points not in POINTS:
        raise ValueError(f"points={points!r}; expected one of {POINTS}")
    if points == "last" or k == 1:
        return list(range(n - k, n))
    if k > n - n // 2:
        raise ValueError(f"keep={k} points spread over the second half of n={n}; expected at most {n - n // 2}")
    return sorted({int(round(v)) for v in np.linspace(n // 2, n - 1, k)})


def edit_references(G, *, seeds: list[int], box, u, config: LOConfig, method: str, keep: list[int],
                    disease: str, reader=None, ws: torch.Tensor | None = None, label: int = 0,
                    points: str = "last") -> dict:
    """One batch: trajectories for ``seeds`` of class ``label`` (or for the W+ latents ``ws``
    [B, num_ws, w_dim], ``seeds`` then naming them), ``keep[r]`` points of reference r (``kept_points``).
    ``box`` and ``u``: one for all references, or a list of one per reference. ``reader``: a
    ``readers.Reader`` or the severity oracle (None: no readings).

    Returns per kept sample (reference-major): seed, point index (1..n), uint16 image [H, W], its
    leakage (``metrics.box_leakage`` of its change from the reference: a label check reads the disease,
    not where it is), the reader's readings (the oracle's ctr and burden, NaN / False without them),
    its reading of the disease and verdict, and its trajectory's PV and severity trend.
    """
    reader = as_reader(reader)
    w_ref = reference_latents(G, seeds, label=label) if ws is None else ws
    traj = run_method(G, method, w_ref, box, u=u, config=config, progress=False)
    if not torch.isfinite(traj.images).all():
        raise FloatingPointError(f"the {method} run for seeds {seeds} went non-finite ({traj.message}); "
                                 "try a smaller lr, sigma or c")
    n = traj.images.shape[1]
    picks = [(r, i) for r, k in enumerate(keep) for i in kept_points(n, k, points)]
    measured = measure(traj, box, disease, reader)
    images = torch.stack([traj.images[r, i] for r, i in picks])  # [S, C, H, W]
    inside = box_masks(box, len(seeds), G.img_resolution, images.device).bool().expand(len(seeds), -1, -1, -1)
    refs = traj.reference_images[:, 0].clamp(-1, 1)  # the reference and the samples as the PNGs hold them
    leakage = [box_leakage(x - refs[r], inside[r, 0]) for (r, _), x in zip(picks, images[:, 0].clamp(-1, 1))]
    nan = [math.nan] * len(picks)
    out = dict(seed=[int(seeds[r]) for r, _ in picks], point=[i + 1 for _, i in picks], images=to_uint16(images[:, 0]),
               leakage=leakage, ctr=nan, opacity_burden=nan, plausible=[False] * len(picks), severity=nan,
               read_as=nan,
               trajectory_pv=[measured[r]["PV"] for r, _ in picks],
               trajectory_trend=[measured[r].get("severity_trend", math.nan) for r, _ in picks])
    if reader is not None:
        pred = reader.predict(images)
        out.update({k: pred[k].tolist() for k in ("ctr", "opacity_burden") if k in pred},
                   plausible=reader.plausible(pred).tolist(), severity=pred[reader.severity(disease)].tolist(),
                   read_as=reader.reads_as(pred, disease).tolist())
    return out


def _header(G, *, disease, box_name, box, method, keep_last, config, u, u_source, extra: dict) -> dict:
    """What the set is. ``box`` and ``u``: the box and direction, or (varied boxes) descriptions of
    them; ``extra``: settings that differ from the defaults (absent otherwise, so older sets resume)."""
    settings = dict(disease=disease, box=box, method=method, keep_last=keep_last, config=asdict(config),
                    u=u, u_source=u_source, **extra)
    settings = json.loads(json.dumps(settings))  # as it will read back (tuples become lists)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return dict(generator=generator_key(G), box_name=box_name, config_hash=digest, **settings)


def _u_list(u) -> list | None:
    return None if u is None else [round(float(v), 7) for v in u.flatten()]


def _check_resume(path: Path, header: dict) -> None:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a set description ({e}); choose another folder") from None
    if not isinstance(old, dict):
        raise ValueError(f"{path} holds {type(old).__name__}, not a set description; choose another folder")
    if old.get("generator") != header["generator"]:
        raise ValueError(f"{path} was made by generator {old.get('generator')}, not by this one "
                         f"({header['generator']}); resume with the same generator or choose another folder")
    def flat(h):
        return {**{k: v for k, v in h.items() if k not in ("config", "config_hash")}, **h.get("config", {})}
    a, b = flat(old), flat(header)
    keys = set(a) | set(b)
    diff = {k: (a.get(k), b.get(k)) for k in sorted(keys) if a.get(k) != b.get(k) and k not in ("u", "batch")}
    if diff or a.get("u") != b["u"]:
        raise ValueError(f"{path} holds a set made with other settings (set, requested): "
                         f"{diff or {'u': 'another direction'}}; resume with the same settings or choose another "
                         "folder")


POINTS = ("last", "spread")
# Augmentation references start here: far from the seeds the notebooks, Table 2 and the reader study use.
REFERENCE_SEED_START = 1_000_000


@dataclass
class AugmentRequest:
    """An augmentation set as ``cxr-workbench augment`` and notebook 06 ask for it: names, paths and
    numbers (``run_augment`` resolves them). ``overrides``: LOConfig fields that differ from the
    named ``settings``; the references are the first seeds from ``seed_start`` that the reader reads
    as normal, or the films of an ``invert`` latents file (``latents``). ``workers`` > 0 or a
    ``scheduler``: the batches run on a Dask cluster (``distributed.connect``)."""

    disease: str
    samples: int
    out: Path
    checkpoint: Path = DEFAULT_GENERATOR
    settings: str = "augment"
    overrides: dict = field(default_factory=dict)
    keep_last: int = 4              # samples per reference
    points: str = "last"            # which of a trajectory's points (POINTS, kept_points)
    method: str = "lo+dir"
    box: str | None = None          # None: the disease's box
    vary_box: bool = False          # a box per reference from the disease's zones
    direction: str = "auto"
    reader: str = "oracle"          # readers.READER_SPECS
    verify: bool = False            # only samples the reader reads as the disease enter the set
    latents: Path | None = None
    seed_start: int = REFERENCE_SEED_START
    label: int = 0                  # the references' class, for a conditional generator
    batch: int = 8                  # references optimised together (one task)
    device: str = "auto"
    compile: bool = False           # devices.compile_synthesis
    workers: int = 0
    scheduler: str | None = None

    @property
    def distributed(self) -> bool:
        return bool(self.workers or self.scheduler)

    def references_needed(self) -> int:
        """Reference seeds to find: one per ``keep_last`` samples; a verified set drops what fails its
        check, so room for 3 references in 4 to fail."""
        return math.ceil(self.samples / self.keep_last) * (4 if self.verify else 1)

    def check(self) -> tuple[LOConfig, str, torch.device]:
        """Everything that can be checked before loading a model or starting a cluster; returns the
        validated config, the disease and the device."""
        device = pick_device(self.device, dask=self.distributed)
        if self.compile and self.distributed:
            raise ValueError("compile=True with Dask workers: it compiles this process's generator, and the "
                             "workers run their own; use one or the other")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"out={self.out} is a file; expected a folder")
        config, disease = check_set_options(
            self.disease, self.samples, named_config(self.settings, **self.overrides), keep_last=self.keep_last,
            points=self.points, method=self.method, batch=self.batch, verify=self.verify, reader=self.reader,
            box=self.box, vary_box=self.vary_box)
        return config, disease, device


def check_set_options(disease: str, n_samples: int, config: LOConfig, *, keep_last: int, points: str, method: str,
                      batch: int, verify: bool, reader, box, vary_box: bool) -> tuple[LOConfig, str]:
    """The checks of a set's options that need no model; returns the validated config and disease."""
    disease = check_disease(disease)
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}; expected a positive integer")
    if not isinstance(keep_last, int) or not 1 <= keep_last <= config.n:
        raise ValueError(f"keep_last={keep_last!r} is larger than the trajectory's n={config.n} points (or below 1); "
                         f"expected 1..{config.n}")
    kept_points(config.n, keep_last, points)  # a spread that does not fit is refused here
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r}; expected a positive integer")
    if verify and reader is None:
        raise ValueError("verify=True needs a reader to check each sample's label; give one (the oracle, say)")
    if vary_box and box is not None:
        raise ValueError(f"box={box!r} with vary_box=True; the boxes of a varied set are drawn from the disease's "
                         "zones: give one or the other")
    return config, disease


@dataclass
class SetPlan:
    """A set resolved for ``write_set``: the generator, reader and every reference's box and direction,
    nothing left to look up or check."""

    G: object
    config: LOConfig
    disease: str
    n_samples: int
    method: str
    keep_last: int
    points: str
    verify: bool
    reader: object | None           # a readers.Reader, or None: no readings
    label: int
    batch: int
    planned: list                   # (reference, samples to keep), in order
    latents: torch.Tensor | None    # [R, num_ws, w_dim], the references' latents (rows); None: seeds
    edits: dict                     # reference -> (Box, u [w_dim] or None, u's source)
    header: dict                    # set.json


def plan_set(G, seeds, disease: str, n_samples: int, config: LOConfig, *, keep_last: int, method: str, box,
             direction: str, pca, reader, batch: int, latents: torch.Tensor | None, label: int, points: str,
             vary_box: bool, verify: bool, renderer=None) -> SetPlan:
    """Resolve a set whose options ``check_set_options`` passed: the references (``seeds``, or the rows
    of ``latents``), their boxes and directions (``plan_edit`` on G, once per zone with ``vary_box``),
    and the set's description. ``renderer``: the generator that renders the edits when it is not G
    (G tuned on the films of ``latents``: the directions stay those found on G)."""
    label = check_class(G, label)
    if latents is not None:
        latents = check_latents(latents, G)
        seeds = range(len(latents))
    seeds = [int(s) for s in seeds]
    needed = math.ceil(n_samples / keep_last)
    if len(seeds) < needed:
        raise ValueError(f"{len(seeds)} reference seeds for {n_samples} samples at keep_last={keep_last}; "
                         f"expected at least {needed}")
    if not verify:
        seeds = seeds[:needed]
    extra = {k: v for k, v in dict(points=points, vary_box=vary_box, verify=verify).items()
             if v != dict(points="last", vary_box=False, verify=False)[k]}

    def planned_for(b):
        return plan_edit(G, pca, box=b, disease=disease, direction=direction, method=method, layers=config.layers,
                         cache_dir=cache_dir())
    if vary_box:  # one plan per zone, the box jittered per reference
        zones = {z: planned_for(z) for z, _ in DISEASES[disease].zones}
        picks = {s: reference_box(disease, s, G.img_resolution) for s in seeds}
        edits = {s: (b, zones[z].u, f"{z}: {zones[z].u_source}") for s, (z, b) in picks.items()}
        box_name = "zones"
        box_desc = dict(zones=[list(z) for z in DISEASES[disease].zones], jitter=list(DISEASES[disease].jitter))
        u_desc = {z: _u_list(p.u) for z, p in zones.items()}
        u_source = "; ".join(f"{z}: {p.u_source}" for z, p in zones.items())
    else:
        plan = planned_for(box)
        edits = {s: (plan.box, plan.u, plan.u_source) for s in seeds}
        box_name, box_desc, u_desc, u_source = plan.box_name, plan.box.to_dict(), _u_list(plan.u), plan.u_source
    renderer = G if renderer is None else renderer
    header = _header(renderer, disease=disease, box_name=box_name, box=box_desc, method=method, keep_last=keep_last,
                     config=config, u=u_desc, u_source=u_source, extra=extra)
    header["n_samples"] = n_samples
    header["batch"] = batch  # recorded, not compared: another batch size still resumes (see _verified)
    header["references"] = _references_key(seeds, latents)
    if films_of(G) != "phantom":  # the real films the classifier protocol sets beside these samples
        header["films"] = films_of(G)
    # Only what differs from the defaults, so sets made before these existed still resume.
    if renderer is not G:
        header["tuned_from"] = generator_key(G)
    if label:
        header["class"] = label
    if (reader.name if reader is not None else "none") != "oracle":
        header["reader"] = reader.name if reader is not None else "none"
    planned = [(s, keep_last) for s in seeds] if verify else \
        [(s, min(keep_last, n_samples - i * keep_last)) for i, s in enumerate(seeds)]
    return SetPlan(renderer, config, disease, n_samples, method, keep_last, points, verify, reader, label, batch,
                   planned, latents, edits, header)


def write_set(plan: SetPlan, out_dir, client=None, progress: bool = True, record: dict | None = None
              ) -> pd.DataFrame:
    """Write (or finish) the set ``plan`` describes into ``out_dir``; returns the manifest. Batches of
    references are written as they finish; a verified set edits references in waves until enough
    samples pass its label check. ``record``: the provenance written last (``provenance.json``)."""
    out_dir = check_writable(out_dir)
    with writer_lock(out_dir):
        manifest_path = out_dir / "manifest.csv"
        rows = read_manifest(out_dir).to_dict("records") if manifest_path.is_file() else []
        if (out_dir / "set.json").is_file() and rows:
            _check_resume(out_dir / "set.json", plan.header)
        else:  # a new set, or one whose earlier run wrote no sample: these settings are the set's
            write_json(out_dir / "set.json", plan.header)
        (out_dir / "images").mkdir(exist_ok=True)
        batches = [plan.planned[i:i + plan.batch] for i in range(0, len(plan.planned), plan.batch)]
        rows = _verified(out_dir, rows, batches, kept_points_of=lambda k: kept_points(plan.config.n, k, plan.points))
        order = {s: i for i, (s, _) in enumerate(plan.planned)}
        shared = dict(G=plan.G, config=plan.config, method=plan.method, disease=plan.disease, reader=plan.reader,
                      label=plan.label, points=plan.points)
        while (wave := _next_wave(plan, rows, batches)):
            tasks = [dict(seeds=[s for s, _ in b], keep=[k for _, k in b], box=[plan.edits[s][0] for s, _ in b],
                          u=None if plan.edits[b[0][0]][1] is None else [plan.edits[s][1] for s, _ in b])
                     for b in wave]
            if plan.latents is not None:
                for t in tasks:
                    t["ws"] = plan.latents[t["seeds"]].detach().float()
            for _, result in fan_out(edit_references, tasks, shared, client, progress, desc=f"{plan.disease} set"):
                rows += _sample_rows(plan, result, out_dir)
                _write_manifest(manifest_path, rows, plan.n_samples if plan.verify else None, order)
        manifest = _write_manifest(manifest_path, rows, plan.n_samples if plan.verify else None, order)
        if record is not None:
            write_json(out_dir / PROVENANCE, record)
    size = int(manifest["in_set"].sum())
    if size != plan.n_samples:  # every step above should make this impossible; never report a short set
        raise RuntimeError(f"{out_dir} holds {size} samples after the run; expected {plan.n_samples}")
    return manifest


def _next_wave(plan: SetPlan, rows: list[dict], batches: list) -> list:
    """The batches to edit next: all that are not done; for a verified set, enough of them for the
    samples still missing at the pass rate so far (none once the set is full)."""
    done = {int(r["reference"]) for r in rows}
    todo = [b for b in batches if not all(s in done for s, _ in b)]
    if not plan.verify:
        return todo
    passed = sum(map(_passed, rows))
    if passed >= plan.n_samples:
        return []
    rate = max(passed / len(rows), 0.05) if rows else 1.0
    want, wave = math.ceil((plan.n_samples - passed) / (plan.keep_last * rate)), []
    while todo and sum(map(len, wave)) < want:
        wave.append(todo.pop(0))
    if not wave:
        raise ValueError(f"{passed} of {len(rows)} samples from {len(done)} references pass the label check "
                         f"({plan.reader.name} reads them as {plan.disease}, plausible); expected {plan.n_samples}: "
                         "give more references, or a more local direction or a larger sigma")
    return wave


def _sample_rows(plan: SetPlan, result: dict, out_dir: Path) -> list[dict]:
    """Write one batch's images (``edit_references``' ``result``) and return their manifest rows."""
    rows, h = [], plan.header
    for j, (seed, point) in enumerate(zip(result["seed"], result["point"])):
        name = f"images/{seed:07d}_{point:03d}.png"
        png = _png_bytes(result["images"][j])
        atomic_write(out_dir / name, lambda f, b=png: f.write(b))
        box, _, source = plan.edits[seed]
        rows.append(dict(file=name, label=plan.disease, disease=plan.disease, reference=seed, point_index=point,
                         box=json.dumps(box.to_dict()), u_source=source, sigma=plan.config.sigma, method=plan.method,
                         config_hash=h["config_hash"], generator=h["generator"], ctr=result["ctr"][j],
                         opacity_burden=result["opacity_burden"][j], plausible=bool(result["plausible"][j]),
                         trajectory_pv=result["trajectory_pv"][j], trajectory_trend=result["trajectory_trend"][j],
                         sha256=hashlib.sha256(png).hexdigest(),
                         reader=plan.reader.name if plan.reader is not None else "none",
                         severity=result["severity"][j], read_as=result["read_as"][j],
                         leakage=result["leakage"][j]))
    return rows


def make_augmentation(G, seeds, disease: str, n_samples: int, config: LOConfig | None = None, out_dir=None, *,
                      keep_last: int = 4, method: str = "lo+dir", box: str | None = None, direction: str = "auto",
                      pca=None, reader=None, batch: int = 8, client=None, progress: bool = True,
                      latents: torch.Tensor | None = None, label: int = 0, points: str = "last",
                      vary_box: bool = False, verify: bool = False) -> pd.DataFrame:
    """Write (or finish) an augmentation set of ``n_samples`` images of ``disease`` into ``out_dir``
    with a generator in hand (``run_augment`` does the same from an ``AugmentRequest``).

    ``seeds``: reference seeds, used in order, ``keep_last`` samples each (the last reference may
    give fewer); at least ceil(n_samples / keep_last) are needed. ``latents`` [R, num_ws, w_dim]
    (inverted films, say) are references instead of seeds, named by their row. ``box``: a preset name or JSON
    file (default: the disease's Table 2 box). ``direction``: "auto" (the most box-local PC), "pc:K"
    or a file; needs ``pca`` for auto/pc. ``reader`` (a ``readers.Reader`` or the severity oracle)
    reads every sample; ``label``: the references' class for a conditional generator. ``batch``
    references are optimised together, one task each; with a Dask ``client`` the tasks run on its
    workers.

    Variety and labels: ``points="spread"`` keeps points spread over the second half of each
    trajectory instead of the last ones (``kept_points``). ``vary_box`` gives each reference its own
    box, a zone where the disease occurs drawn with its weight and jittered (``masks.reference_box``),
    edited along the direction ``direction`` gives for that zone. ``verify`` lets a sample into the
    set only when the reader reads it as the disease (and as plausible, where it judges that):
    references are edited in order until ``n_samples`` pass; the samples that did not, and any
    beyond the set's size, stay in the folder with ``in_set`` False (``set_quality`` reports the
    share). ``seeds`` then needs room for the dropped ones. Returns the manifest.
    """
    reader = as_reader(reader)
    config, disease = check_set_options(disease, n_samples, config or named_config("augment"), keep_last=keep_last,
                                        points=points, method=method, batch=batch, verify=verify, reader=reader,
                                        box=box, vary_box=vary_box)
    if reader is not None:
        reader.severity(disease)  # a reader that cannot read the disease is refused before any work
    if out_dir is None:
        raise ValueError("out_dir=None; expected a folder for the set")
    plan = plan_set(G, seeds, disease, n_samples, config, keep_last=keep_last, method=method, box=box,
                    direction=direction, pca=pca, reader=reader, batch=batch, latents=latents, label=label,
                    points=points, vary_box=vary_box, verify=verify)
    return write_set(plan, out_dir, client, progress)


def run_augment(req: AugmentRequest, client=None, progress: bool = True) -> pd.DataFrame:
    """Make the set ``req`` asks for: check it, load the generator (on its device) and reader, find
    normal references (or read the latents file), plan and write, then ``provenance.json``; returns
    the manifest. With ``client`` the batches run on that Dask cluster; else on the one ``req`` asks
    for (``distributed.cluster``: started here, and closed), or in this process."""
    config, disease, device = req.check()
    with cluster(client, req.scheduler, req.workers) as client:
        G = load_generator(req.checkpoint, device=device)
        reader = load_reader(req.reader, G)
        reader.severity(disease)  # a reader that cannot read the disease is refused before any work
        films = read_inverted(req.latents, G) if req.latents is not None else None
        latents = None if films is None else films.ws
        seeds = [] if films is not None else normal_seeds(G, reader, req.references_needed(), start=req.seed_start,
                                                          label=req.label)
        if req.compile:  # after the references are found: their one-off batches need no compiling
            compile_synthesis(G)
        plan = plan_set(G, seeds, disease, req.samples, config, keep_last=req.keep_last, method=req.method,
                        box=req.box, direction=req.direction, pca=pca_for(G), reader=reader, batch=req.batch,
                        latents=latents, label=req.label, points=req.points, vary_box=req.vary_box,
                        verify=req.verify, renderer=None if films is None else films.G)
        record = provenance("augment", req, checkpoint=req.checkpoint, G=G, u=plan.header["u"],
                            u_source=plan.header["u_source"], device=device)
        return write_set(plan, req.out, client, progress, record)


def set_summary(manifest: pd.DataFrame, out_dir, reader, verify: bool) -> str:
    """One line on the finished set in ``out_dir``: its size and how its ``reader`` (a
    ``readers.Reader``) read it."""
    q = set_quality(manifest)
    plausible = f", {q['plausible']:.0%} plausible" if reader.plausibility else ""
    dropped = f" ({q['edits_passed']:.0%} of {q['edited']} edits passed the check)" if verify else ""
    leakage = f"; change outside the box over inside: median {q['leakage']:.2f}" if "leakage" in q else ""
    return (f"{q['n']} {q['disease']} samples -> {out_dir}; {reader.name} reads {q['intended']:.0%} as "
            f"{q['disease']}{plausible}{dropped}{leakage}")


def set_diversity(images: torch.Tensor, real: torch.Tensor, oracle) -> dict:
    """How much variety a set carries, against real images of its disease, in the oracle's
    features of the set's ``images`` and of ``real`` [N, 1, H, W] (``metrics.feature_spread``):
    ``spread``, the mean pairwise distance, and ``nearest``, the mean distance to the nearest
    other sample, each over the same for ``real`` (1: as varied as real films of the disease; a
    ``nearest`` ratio near 0: samples that are near-copies of each other)."""
    (s_set, n_set), (s_real, n_real) = (feature_spread(oracle.predict(x)["features"]) for x in (images, real))
    return dict(spread=s_set / s_real, nearest=n_set / n_real, set_spread=s_set, real_spread=s_real,
                set_nearest=n_set, real_nearest=n_real)


def _passed(row: dict) -> bool:
    """A sample's label check: read as the set's disease and plausible (a reader that does not
    judge plausibility calls every image plausible)."""
    return bool(row["read_as"]) and bool(row["plausible"])  # verify needs a reader: read_as is never NaN


def _references_key(seeds: list[int], latents: torch.Tensor | None) -> str:
    """What a set's references are: a hash of the seeds used, or of the latents given."""
    if latents is None:
        return "seeds " + hashlib.sha256(json.dumps(seeds).encode()).hexdigest()[:16]
    return "latents " + hashlib.sha256(latents.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _verified(out_dir: Path, rows: list[dict], batches: list[list[tuple[int, int]]], *, kept_points_of) -> list[dict]:
    """The manifest rows of batches whose references are all complete and intact: each has exactly
    its planned points, once each, every image present with its recorded hash. The other rows and
    their images are dropped and their batches made again whole: the references of a batch share one
    optimisation loop, so with the same batch size the set equals an uninterrupted run's. Images the
    manifest does not name are removed; one line on stderr says what was repaired."""
    if rows and "sha256" not in rows[0]:
        raise ValueError(f"{out_dir / 'manifest.csv'} has no sha256 column (a set made before samples were "
                         "hashed); its samples cannot be verified: choose another folder")
    planned = {s: k for b in batches for s, k in b}
    by_ref: dict[int, list[dict]] = {}
    for r in rows:
        by_ref.setdefault(int(r["reference"]), []).append(r)

    def intact(ref: int) -> bool:
        if ref not in by_ref:
            return False
        group, k = by_ref[ref], planned[ref]
        expected = [f"images/{ref:07d}_{p + 1:03d}.png" for p in kept_points_of(k)]
        return sorted(str(r["file"]) for r in group) == expected and all(
            (out_dir / r["file"]).is_file()
            and hashlib.sha256((out_dir / r["file"]).read_bytes()).hexdigest() == r["sha256"] for r in group)

    good = [r for b in batches if all(intact(s) for s, _ in b) for s, _ in b for r in by_ref[s]]
    keep = {str(r["file"]) for r in good}
    redo = sorted(set(by_ref) - {int(r["reference"]) for r in good})
    removed = 0
    for f in (out_dir / "images").glob("*.png"):
        if SAMPLE_NAME.fullmatch(f.name) and f"images/{f.name}" not in keep:
            f.unlink()
            removed += 1
    if redo or removed:
        print(f"{out_dir}: repaired: references {redo} had missing, altered, duplicated or miscounted samples, or "
              f"share a batch with one that had; {removed} images removed; they are made again", file=sys.stderr)
    return good


def _write_manifest(path: Path, rows: list[dict], verify_size: int | None = None, order: dict | None = None
                    ) -> pd.DataFrame:
    """The manifest of ``rows``, written atomically. Every row is in the set, or with
    ``verify_size`` the first that many that pass the label check, in the references' ``order``."""
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS + READER_COLUMNS + LEAKAGE_COLUMNS))
    frame["in_set"] = True
    if verify_size is not None:
        frame = frame.assign(_o=frame["reference"].map(order)).sort_values(["_o", "point_index"]).drop(columns="_o")
        passed = np.array([_passed(r) for r in frame.to_dict("records")], bool)
        frame["in_set"] = passed & (np.cumsum(passed) <= verify_size)
    frame = frame.sort_values(["reference", "point_index"]).reset_index(drop=True)
    atomic_write(path, lambda f: frame.to_csv(f, index=False), "w")
    return frame


def normal_seeds(G, reader, count: int, *, start: int = REFERENCE_SEED_START, chunk: int = 256,
                 label: int = 0, scan: int | None = None) -> list[int]:
    """The first ``count`` seeds from ``start`` (of class ``label``) whose images the reader
    (a ``readers.Reader`` or the severity oracle) reads as normal, no disease it reads: the paper
    edits normal films. At most ``scan`` seeds are read (default: 100 per seed asked, at least
    10,000); a reader that finds too few is an error, not an endless search."""
    reader = as_reader(reader)
    scan = max(10_000, 100 * count) if scan is None else scan
    out, s = [], start
    while len(out) < count:
        if s - start >= scan:
            raise ValueError(f"{reader.name} reads {len(out)} of the {s - start} seeds from {start} as normal; "
                             f"expected {count}: a reader that sees disease everywhere cannot pick normal "
                             "references (use another reader, or references from --latents)")
        seeds = list(range(s, s + chunk))
        with torch.no_grad():
            pred = reader.predict(G.synthesis(reference_latents(G, seeds, label=label)))
        ok = reader.reads_normal(pred)
        out += [seed for seed, good in zip(seeds, ok) if good]
        s += chunk
    return out[:count]

