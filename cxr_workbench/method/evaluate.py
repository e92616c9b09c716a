"""Measuring trajectories, and the method comparison over many references (paper Table 2):
Baseline LO vs LO + direction vs linear translation, for several spring lengths sigma, measured
with PV, its companions and the oracle severity trend.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import torch

from cxr_workbench.distributed import fan_out
from cxr_workbench.imaging.diseases import DISEASES, check_disease
from cxr_workbench.imaging.masks import Box
from cxr_workbench.method.metrics import pv_metric, trend
from cxr_workbench.method.optimize import LOConfig, Trajectory, run_method
from cxr_workbench.method.plans import plan_edit
from cxr_workbench.model.latents import reference_latents
from cxr_workbench.model.readers import as_reader

__all__ = ["METRIC_COLUMNS", "measure", "direction_alignment", "table_run", "method_table", "summary_table",
           "ablation_notes", "paired_differences"]

METRIC_COLUMNS = ("PV", "PV_all", "S", "M", "monotonicity", "leakage", "severity_trend", "severity_change",
                  "plausible_fraction")


def measure(traj: Trajectory, box: Box | list[Box], disease: str, reader=None) -> list[dict]:
    """PV, companions and (with a reader) the severity trend, one dict per reference (``box``: one,
    or one per reference).

    Sequences are the reference image followed by the n edits; the sign PV rewards is the
    disease's (``diseases.DISEASES``). ``reader``: a ``readers.Reader`` or the severity oracle; the
    trend is that of its reading of the disease (the oracle's CTR or burden, a classifier's
    probability). ``PV`` averages signed values over the pixels of that sign, ``PV_all`` over all
    pixels (the two readings of the paper, ``metrics.PV_AVERAGES``).
    """
    spec = DISEASES[check_disease(disease)]
    reader = as_reader(reader)
    reading = reader.severity(disease) if reader is not None else None
    rows = []
    for r in range(traj.images.shape[0]):
        seq = traj.sequence(r).cpu()  # the metrics run on the CPU, the generator may not
        b = box if isinstance(box, Box) else box[r]
        row = pv_metric(seq, b, spec.sign).to_dict()
        row["PV_all"] = pv_metric(seq, b, spec.sign, average="all").PV
        if reader is not None:
            pred = reader.predict(seq)
            values = pred[reading]
            row.update(severity=reading, severity_trend=trend(values),
                       severity_change=float(values[-1] - values[0]),
                       plausible_fraction=float(reader.plausible(pred).mean()) if reader.plausibility else math.nan)
        rows.append(row)
    return rows


def direction_alignment(traj: Trajectory, u: torch.Tensor, layers=None) -> torch.Tensor:
    """How straight along u a trajectory moves (paper Fig. 4's observation, as a number): the mean
    cosine between each step (reference to first point, then point to point) and u, on ``layers``
    (default: all), per reference. 1: every step along u; near 0: steps wander across it.

    u: [w_dim] (the same on every layer) or [num_ws, w_dim]. Returns [R]."""
    sel = slice(None) if layers is None else list(layers)
    path = torch.cat([traj.w_ref[:, None], traj.points], dim=1)[:, :, sel]   # [R, n + 1, L, w_dim]
    steps = (path[:, 1:] - path[:, :-1]).flatten(2)                          # [R, n, L * w_dim]
    u = u.to(steps)
    along = (u.expand(traj.w_ref.shape[1:]) if u.ndim == 1 else u)[sel].flatten()
    return torch.nn.functional.cosine_similarity(steps, along.expand_as(steps), dim=-1).mean(dim=1)


def table_run(G, *, seeds, box: Box, u: torch.Tensor, disease: str, sigma: float, method: str,
              config: LOConfig, oracle=None, progress: bool = False) -> pd.DataFrame:
    """One cell of Table 2: ``method`` at spring length ``sigma`` on all ``seeds`` as one batch;
    one row per seed (measure's figures, steps, wall time per reference)."""
    traj = run_method(G, method, reference_latents(G, seeds), box, u=u, config=replace(config, sigma=float(sigma)),
                      progress=progress)
    return pd.DataFrame([dict(disease=disease, sigma=float(sigma), method=method, seed=int(seed), steps=traj.steps,
                              wall_time=traj.wall_time / len(seeds), **m)
                         for seed, m in zip(seeds, measure(traj, box, disease, oracle))])


def method_table(G, pca, seeds, *, boxes: dict | None = None, sigmas=(0.3, 1.0, 2.0), methods=("lo", "lo+dir"),
                 config: LOConfig | None = None, oracle=None, progress: bool = True, done=(),
                 on_run=None, on_direction=None, client=None, direction: str = "auto",
                 cache_dir=None) -> pd.DataFrame:
    """Table 2: each method and sigma for each disease in its box (default: the disease's box,
    ``diseases.DISEASES``), u the PC most local to the box (``direction``: any spec of
    ``choose_direction``, e.g. ``local``), sigma-major so the paper's default sigma finishes first.

    ``done``: (disease, sigma, method) triples already measured (skipped); ``on_run(frame)`` is
    called with the rows of each finished cell, so a long sweep can be saved as it goes;
    ``on_direction(disease, box_name, description)`` reports each u chosen. With a Dask
    ``client`` the cells run on its workers (``distributed.fan_out``).
    """
    config = config or LOConfig()
    boxes = {d: spec.box for d, spec in DISEASES.items()} if boxes is None else dict(boxes)
    directions = {}
    for disease, box_name in boxes.items():
        plan = plan_edit(G, pca, box=box_name, disease=disease, direction=direction, layers=config.layers,
                         cache_dir=cache_dir)
        directions[disease] = (plan.box, plan.u)
        if on_direction is not None:
            on_direction(disease, box_name, plan.u_source)
    done = {(d, float(s), m) for d, s, m in done}
    tasks = [dict(box=box, u=u, disease=disease, sigma=float(sigma), method=method)
             for sigma in sigmas for disease, (box, u) in directions.items() for method in methods
             if (disease, float(sigma), method) not in done]
    shared = dict(G=G, seeds=list(seeds), config=config, oracle=oracle)
    frames = []
    for _, frame in fan_out(table_run, tasks, shared, client, progress, desc="Table 2 cells"):
        if on_run is not None:
            on_run(frame)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary_table(df: pd.DataFrame, metric: str = "PV") -> pd.DataFrame:
    """Paper Table 2 layout: rows (sigma, method), one column per disease, 'mean ± std'."""
    if metric not in df.columns:
        raise ValueError(f"metric={metric!r}; expected one of {[c for c in METRIC_COLUMNS if c in df.columns]}")
    g = df.groupby(["sigma", "method", "disease"])[metric].agg(["mean", "std"]).reset_index()
    g["value"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(g["mean"], g["std"].fillna(0.0))]
    return g.pivot(index=["sigma", "method"], columns="disease", values="value")


def ablation_notes(df: pd.DataFrame, method: str = "lo+dir", baseline: str = "lo") -> list[str]:
    """What to notice in a sigma ablation, one sentence per disease, from the numbers: the two
    methods' PV at the smallest sigma, and how PV and leakage move as sigma grows."""
    notes = []
    means = df.groupby(["disease", "method", "sigma"])[["PV", "leakage"]].mean()
    for disease in sorted(df["disease"].unique()):
        if (disease, method) not in means.index.droplevel("sigma"):
            continue
        ours = means.loc[(disease, method)]
        lo, hi = ours.index.min(), ours.index.max()
        text = f"{disease}: LO + direction has PV {ours.loc[lo, 'PV']:.2f} at sigma {lo:g}"
        if (disease, baseline) in means.index.droplevel("sigma"):
            text += f" (Baseline LO {means.loc[(disease, baseline, lo), 'PV']:.2f})"
        if hi != lo:
            text += (f"; from sigma {lo:g} to {hi:g} its PV goes {ours.loc[lo, 'PV']:.2f} -> {ours.loc[hi, 'PV']:.2f}"
                     f" and its leakage {ours.loc[lo, 'leakage']:.2f} -> {ours.loc[hi, 'leakage']:.2f}")
        notes.append(text + ".")
    return notes


def paired_differences(df: pd.DataFrame, metric: str = "PV", method: str = "lo+dir",
                       baseline: str = "lo") -> pd.DataFrame:
    """``metric(method) - metric(baseline)`` on the same reference seed, per (sigma, disease):
    mean, std, the fraction of seeds where it is positive, the number of seeds and the two-sided
    Wilcoxon signed-rank p-value (NaN below 2 seeds)."""
    from scipy.stats import wilcoxon
    for m in (method, baseline):
        if m not in set(df["method"]):
            raise ValueError(f"method {m!r} is not in the table; it has {sorted(set(df['method']))}")
    wide = df.pivot_table(index=["sigma", "disease", "seed"], columns="method", values=metric)
    diff = (wide[method] - wide[baseline]).dropna()
    rows = []
    for (sigma, disease), d in diff.groupby(level=["sigma", "disease"]):
        p = float(wilcoxon(d).pvalue) if len(d) >= 2 and (d != 0).any() else float("nan")
        rows.append(dict(sigma=sigma, disease=disease, mean=float(d.mean()), std=float(d.std()),
                         positive=float((d > 0).mean()), seeds=len(d), p=p))
    return pd.DataFrame(rows)
