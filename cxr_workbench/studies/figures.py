"""Figures: comparisons with difference maps (paper Fig. 3/5), losses, UMAP of trajectories (Fig. 4),
severity histograms and augmentation examples."""
from __future__ import annotations

import numpy as np
import torch

from cxr_workbench.imaging.masks import Box
from cxr_workbench.imaging.strips import BOX_COLOUR

__all__ = ["new_figure", "comparison_figure", "residual_figure", "loss_figure", "sigma_ablation_figure",
           "umap_embedding", "umap_figure", "umap_plotly", "severity_histograms", "save_figure",
           "augmentation_examples", "films_side_by_side"]


def new_figure(**kw):
    """A matplotlib Figure outside pyplot's state: a notebook shows it once (as the cell's value),
    not a second time when pyplot flushes its open figures at the end of the cell."""
    from matplotlib.figure import Figure
    return Figure(**kw)


def _draw_box(ax, box: Box | None, scale: float = 1.0):
    import matplotlib.patches as patches
    if box is not None:
        s = scale
        ax.add_patch(patches.Rectangle((box.x0 * s - 0.5, box.y0 * s - 0.5), box.width * s, box.height * s,
                                       fill=False, edgecolor=np.array(BOX_COLOUR) / 255, linewidth=1.2))


def comparison_figure(rows: dict, box: Box | dict | None = None, differences: bool = True, title: str | None = None):
    """Paper Fig. 3/5 layout: one row of images per method (label -> sequence [n, C, H, W], each
    starting with the reference), each followed by its difference maps x_i - x_1 when asked.
    ``box``: one for every row, or label -> box. Returns a matplotlib Figure."""
    labels = list(rows)
    n = max(len(v) for v in rows.values())
    n_rows = len(labels) * (2 if differences else 1)
    fig = new_figure(figsize=(1.1 * n, 1.3 * n_rows + (0.4 if title else 0)))
    axes = fig.subplots(n_rows, n, squeeze=False)
    lim = max(float((v[1:] - v[:1]).abs().max()) for v in rows.values()) or 1.0
    boxes = box if isinstance(box, dict) else dict.fromkeys(labels, box)
    for i, label in enumerate(labels):
        seq = rows[label].detach().float().cpu().mean(1).numpy()  # [n, H, W]
        r = i * (2 if differences else 1)
        for j in range(n):
            for rr in ([r, r + 1] if differences else [r]):
                axes[rr, j].axis("off")
            if j >= len(seq):
                continue
            axes[r, j].imshow(seq[j], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            _draw_box(axes[r, j], boxes[label])
            if differences:
                axes[r + 1, j].imshow(seq[j] - seq[0], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
                _draw_box(axes[r + 1, j], boxes[label])
        axes[r, 0].set_title(label, loc="left", fontsize=8)
        if differences:
            axes[r + 1, 0].set_title("difference to reference", loc="left", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    return fig


def residual_figure(names, films: torch.Tensor, reconstructions: dict, box: Box | None = None):
    """What the generator did not draw: per film (a row: ``names``, ``films`` [N, C, H, W]) the film,
    then for each reconstruction (label -> [N, C, H, W], e.g. "untuned", "tuned") the reconstruction
    and its residual, film minus reconstruction (red: the film is brighter; one colour scale for
    all). Returns a matplotlib Figure."""
    films = films.detach().float().cpu().mean(1)
    recons = {k: v.detach().float().cpu().clamp(-1, 1).mean(1) for k, v in reconstructions.items()}
    lim = max(float((films - r).abs().max()) for r in recons.values()) or 1.0
    cols = 1 + 2 * len(recons)
    fig = new_figure(figsize=(1.3 * cols, 1.4 * len(films)))
    axes = fig.subplots(len(films), cols, squeeze=False)
    for i, name in enumerate(names):
        panels = [("film", films[i], "gray", 1.0)]
        for label, r in recons.items():
            panels += [(f"{label}", r[i], "gray", 1.0), (f"residual ({label})", films[i] - r[i], "RdBu_r", lim)]
        for j, (title, img, cmap, v) in enumerate(panels):
            axes[i, j].imshow(img.numpy(), cmap=cmap, vmin=-v, vmax=v, interpolation="nearest")
            axes[i, j].axis("off")
            _draw_box(axes[i, j], box)
            axes[i, j].set_title(f"{name}: {title}" if j == 0 else title, loc="left", fontsize=7)
    fig.tight_layout(pad=0.2)
    return fig


def loss_figure(history: dict, title: str = "loss"):
    """Loss terms against the step (log scale)."""
    fig = new_figure(figsize=(4, 2.4))
    ax = fig.subplots()
    for k, v in history.items():
        if len(v) and max(v) > 0:
            ax.plot(v, label=k, lw=1.5 if k == "total" else 1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def sigma_ablation_figure(df, metrics=("PV", "severity_trend", "leakage")):
    """The sigma ablation of a Table 2 sweep (``evaluate.method_table`` rows): each metric against
    sigma, one panel per metric (columns) and disease (rows), one line per method with its mean and
    a band of one standard deviation over references."""
    from cxr_workbench.method.optimize import METHOD_LABELS
    diseases = sorted(df["disease"].unique())
    fig = new_figure(figsize=(3.3 * len(metrics), 2.6 * len(diseases)))
    axes = np.atleast_2d(fig.subplots(len(diseases), len(metrics), squeeze=False))
    stats = df.groupby(["disease", "method", "sigma"])[list(metrics)].agg(["mean", "std"])
    for r, disease in enumerate(diseases):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            for method in sorted(df["method"].unique()):
                if (disease, method) not in stats.index.droplevel("sigma"):
                    continue
                rows = stats.loc[(disease, method)]
                mean, std = rows[(metric, "mean")], rows[(metric, "std")].fillna(0.0)
                ax.plot(mean.index, mean.values, "o-", label=METHOD_LABELS.get(method, method))
                ax.fill_between(mean.index, mean - std, mean + std, alpha=0.15)
            ax.set_xticks(sorted(df["sigma"].unique()))
            ax.set_title(f"{disease}: {metric}", fontsize=9)
            ax.set_xlabel("σ (spring rest length)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def umap_embedding(trajectories: dict, layers=None, seed: int = 0, n_neighbors: int = 15, progress: bool = False):
    """2-d UMAP of latent trajectories (paper Fig. 4).

    trajectories: label -> Trajectory, all on the same references (the methods compared). Every
    point of every method and each reference (once) are embedded together, on the given W+
    layers (default: all). ``progress`` prints what is being embedded and UMAP's own steps.
    Returns a DataFrame with x, y, method ("reference" for the
    references), reference, step (0 is the reference).
    """
    import pandas as pd
    import umap
    sel = slice(None) if layers is None else list(layers)
    refs, pts, meta = {}, [], []
    for label, traj in trajectories.items():
        R, n = traj.points.shape[:2]
        for r in range(R):
            w = traj.w_ref[r, sel].flatten()
            if r not in refs:
                refs[r] = w
                pts.append(w[None])
                meta.append(("reference", r, 0))
            elif not torch.equal(refs[r], w):
                raise ValueError(f"trajectory {label!r} has a different reference {r} from the others; "
                                 "expected methods run on the same references (embed other sets separately)")
            pts.append(traj.points[r, :, sel].reshape(n, -1))
            meta += [(label, r, i + 1) for i in range(n)]
    X = torch.cat(pts).cpu().numpy()
    if progress:  # the first call compiles UMAP's numba code: say so, or it looks stuck
        print(f"UMAP of {len(X)} points in {X.shape[1]} dimensions (the first call also compiles UMAP, "
              "about a minute) ...", flush=True)
    emb = umap.UMAP(n_neighbors=min(n_neighbors, len(X) - 1), random_state=seed, n_jobs=1,
                    verbose=progress).fit_transform(X)
    df = pd.DataFrame(meta, columns=["method", "reference", "step"])
    df["x"], df["y"] = emb[:, 0], emb[:, 1]
    return df


def _with_reference_rows(df):
    """Each method's rows preceded by the row of its reference, so every trajectory line starts at it."""
    import pandas as pd
    refs = df[df["method"] == "reference"]
    parts = [pd.concat([refs.assign(method=m), df[df["method"] == m]])
             for m in df["method"].unique() if m != "reference"]
    return pd.concat(parts).sort_values(["method", "reference", "step"])


def umap_figure(df, title: str = "UMAP of latent trajectories"):
    """Matplotlib: one line per (method, reference), colour by method, each reference a star."""
    import matplotlib
    fig = new_figure(figsize=(5, 4))
    ax = fig.subplots()
    lines = _with_reference_rows(df)
    colours = dict(zip(lines["method"].unique(), matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (method, ref), g in lines.groupby(["method", "reference"], sort=False):
        first = ref == lines[lines["method"] == method]["reference"].min()
        ax.plot(g["x"], g["y"], "-o", ms=2.5, lw=1, color=colours[method], alpha=0.8,
                label=method if first else None)
    refs = df[df["method"] == "reference"]
    ax.plot(refs["x"], refs["y"], "*", ms=9, color="k", ls="none", label="reference")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def umap_plotly(df, title: str = "UMAP of latent trajectories"):
    """Interactive plotly version of ``umap_figure`` (hover shows method, reference and step)."""
    import plotly.express as px
    d = _with_reference_rows(df)
    d = d.assign(trajectory=d["method"] + " / ref " + d["reference"].astype(str))
    import matplotlib
    import matplotlib.colors
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]  # the same colours as umap_figure
    colours = dict(zip(d["method"].unique(), map(matplotlib.colors.to_hex, palette)))
    fig = px.line(d, x="x", y="y", color="method", line_group="trajectory", markers=True,
                  hover_data=["reference", "step"], title=title, color_discrete_map=colours, height=520)
    refs = df[df["method"] == "reference"]
    fig.add_scatter(x=refs["x"], y=refs["y"], mode="markers", name="reference",
                    marker=dict(symbol="star", size=14, color="black"),
                    hovertext=[f"reference {r}" for r in refs["reference"]])
    return fig


def severity_histograms(predictions: dict, keys=("ctr", "opacity_burden")):
    """Overlaid histograms of oracle readings, one panel per reading; ``predictions``: label ->
    ``oracle.predict`` output. Returns a matplotlib Figure."""
    fig = new_figure(figsize=(4 * len(keys), 3))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = np.concatenate([np.asarray(pred[key], float) for pred in predictions.values()])
        bins = np.linspace(values.min(), values.max() + 1e-6, 31)  # shared bins; a constant set still plots
        for label, pred in predictions.items():
            ax.hist(pred[key], bins=bins, alpha=0.6, label=label, density=True)
        ax.set_title(f"oracle {key}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path, overwrite: bool = True):
    """Save a matplotlib figure (PNG/PDF/SVG) or a plotly figure (HTML, self-contained for offline use) atomically."""
    from pathlib import Path

    from cxr_workbench.io import atomic_write
    path = Path(path)
    suffix = path.suffix.lower()
    if hasattr(fig, "to_html"):
        if suffix != ".html":
            raise ValueError(f"{path}: plotly figures are saved as .html here (no image export engine)")
        return atomic_write(path, lambda f: f.write(fig.to_html(include_plotlyjs=True)), "w", overwrite)
    if suffix not in (".png", ".pdf", ".svg"):
        raise ValueError(f"{path}: expected .png, .pdf or .svg for a matplotlib figure")
    return atomic_write(path, lambda f: fig.savefig(f, format=suffix[1:], dpi=150), "wb", overwrite)


def augmentation_examples(sets: dict, per_set: int = 8):
    """The first ``per_set`` samples of each augmentation set, one row per set, titled with the
    reference seed, the point and the reader's reading of the set's disease, the sample's box
    drawn in red. ``sets``: row label -> set folder. Returns a matplotlib Figure."""
    import json

    from matplotlib.patches import Rectangle

    from cxr_workbench.imaging.diseases import DISEASES
    from cxr_workbench.studies.augment import in_set, read_manifest, read_set_images
    fig = new_figure(figsize=(1.2 * per_set, 1.45 * len(sets)))
    axes = fig.subplots(len(sets), per_set, squeeze=False)
    for row, (label, folder) in zip(axes, sets.items()):
        m = in_set(read_manifest(folder)).iloc[:per_set]
        images = read_set_images(folder, m)
        reading = "severity" if "severity" in m else DISEASES[m["disease"].iloc[0]].reading
        for ax, img, (_, r) in zip(row, images, m.iterrows()):
            ax.imshow(img[0].numpy(), cmap="gray", vmin=-1, vmax=1)
            b = json.loads(r["box"])
            ax.add_patch(Rectangle((b["x0"] - 0.5, b["y0"] - 0.5), b["x1"] - b["x0"], b["y1"] - b["y0"], fill=False,
                                   edgecolor="red", linewidth=0.6))
            ax.set_title(f"{r['reference']}·{r['point_index']} {r[reading]:.2f}", fontsize=6)
        for ax in row:
            ax.axis("off")
        row[0].text(-0.1, 0.5, label, transform=row[0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def films_side_by_side(panels: dict, cols: int = 4, inches: float = 0.9):
    """Sets of films side by side, one titled panel each (``panels``: title -> images [N, 1, H, W] or
    [N, H, W] in [-1, 1]), ``cols`` films a row in each panel, each film ``inches`` wide. Returns a
    matplotlib Figure."""
    from cxr_workbench.imaging.strips import tile, to_uint8
    # a white line between films
    grids = [tile(to_uint8(torch.as_tensor(images)), cols, gap=1, fill=255) for images in panels.values()]
    rows = max(g.shape[0] for g in grids) / max(g.shape[1] for g in grids) * cols
    fig = new_figure(figsize=(inches * cols * len(panels), inches * rows + 0.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, _), grid in zip(axes, panels.items(), grids):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig
