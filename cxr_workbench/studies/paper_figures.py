"""The paper's figures in one command (``cxr-workbench figure NAME --out DIR``), from a fresh run on
a generator: Fig. 3 (Baseline LO and LO + direction for both diseases, and the linear walk along
u), Fig. 4 (UMAP of the lung-opacity trajectories), Fig. 5 (Baseline LO against LO + direction on
one cardiomegaly edit) and Table 2 (PV of both methods over sigma, rendered as a table). Each is
written as PNG, PDF and SVG (Table 2 also as CSV) with its ``provenance.json``, as one set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cxr_workbench.assets import DEFAULT_GENERATOR, load_reader, pca_for
from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.io import output_set, write_json
from cxr_workbench.method.evaluate import method_table, summary_table
from cxr_workbench.method.optimize import METHOD_LABELS, named_config, run_method
from cxr_workbench.method.plans import plan_edit
from cxr_workbench.model.checkpoints import load_generator
from cxr_workbench.model.latents import reference_latents
from cxr_workbench.studies.figures import comparison_figure, new_figure, save_figure, umap_embedding, umap_figure
from cxr_workbench.studies.provenance import PROVENANCE, provenance

__all__ = ["FIGURES", "FORMATS", "FigureRequest", "figure_outputs", "make_figure"]

FIGURES = {"fig3": "Baseline LO and LO + direction for cardiomegaly and lung opacity, and the linear walk along u",
           "fig4": "UMAP of the latent trajectories of lung opacity, Baseline LO and LO + direction",
           "fig5": "Baseline LO against LO + direction on one cardiomegaly edit",
           "table2": "PV of Baseline LO and LO + direction over sigma, per disease (mean ± std over seeds)"}
FORMATS = (".png", ".pdf", ".svg")
# The references each figure uses unless asked otherwise: seed 3 is notebook 03's; Table 2 uses
# held-out seeds (u is picked on seeds 0-7), 20 of the paper's 50.
DEFAULT_SEEDS = {"fig3": [3], "fig4": [0, 1, 2, 3, 4, 5], "fig5": [3], "table2": list(range(100, 120))}


@dataclass
class FigureRequest:
    """Which figure, on which generator and references, with the edit's step cap and (Table 2) the
    sigmas; ``seeds`` None: ``DEFAULT_SEEDS``."""

    name: str
    checkpoint: Path = DEFAULT_GENERATOR
    seeds: list | None = None
    max_steps: int = 300
    sigmas: list = field(default_factory=lambda: [0.3, 1.0, 2.0])

    def check(self) -> list[int]:
        """The figure's name and settings checked before any model is loaded; returns the seeds."""
        if self.name not in FIGURES:
            raise ValueError(f"figure {self.name!r}; expected one of {', '.join(FIGURES)}")
        named_config("ours", max_steps=self.max_steps)
        if not self.sigmas or any(not s > 0 for s in self.sigmas):
            raise ValueError(f"sigmas={self.sigmas}; expected positive spring lengths")
        return list(DEFAULT_SEEDS[self.name] if self.seeds is None else self.seeds)


def figure_outputs(name: str) -> list[str]:
    """The files a figure's set holds besides its provenance."""
    return [name + s for s in FORMATS] + ([f"{name}.csv"] if name == "table2" else [])


def _edits(G, pca, seeds, disease: str, methods, cfg) -> tuple[dict, object]:
    """Trajectories of each method for ``seeds`` in the disease's box, and the box."""
    plan = plan_edit(G, pca, disease=disease, layers=cfg.layers)
    w_ref = reference_latents(G, seeds)
    return {m: run_method(G, m, w_ref, plan.box, u=plan.u, config=cfg, progress=False) for m in methods}, plan.box


def _figure(req: FigureRequest, seeds: list[int], G, pca, progress: bool):
    """The matplotlib figure (and Table 2's numbers) the request names."""
    cfg = named_config("ours", max_steps=req.max_steps)
    if req.name == "fig3":
        rows, boxes = {}, {}
        for disease in ("cardiomegaly", "opacity"):
            trajs, box = _edits(G, pca, seeds, disease, ("lo", "linear", "lo+dir"), cfg)
            for m in ("lo", "linear", "lo+dir") if disease == "opacity" else ("lo", "lo+dir"):
                label = f"{METHOD_LABELS[m]}, {disease}"
                rows[label], boxes[label] = trajs[m].sequence(0), box
        order = [k for m in ("lo", "linear", "lo+dir") for k in rows if k.startswith(METHOD_LABELS[m] + ",")]
        return comparison_figure({k: rows[k] for k in order}, boxes, differences=False,
                                 title=f"Fig. 3: seed {seeds[0]}"), None
    if req.name == "fig5":
        trajs, box = _edits(G, pca, seeds, "cardiomegaly", ("lo", "lo+dir"), cfg)
        return comparison_figure({METHOD_LABELS[m]: trajs[m].sequence(0) for m in ("lo", "lo+dir")}, box,
                                 title=f"Fig. 5: cardiomegaly, seed {seeds[0]}"), None
    if req.name == "fig4":
        trajs, _ = _edits(G, pca, seeds, "opacity", ("lo", "lo+dir"), cfg)
        emb = umap_embedding({METHOD_LABELS[m]: t for m, t in trajs.items()}, layers=cfg.layers, progress=progress)
        return umap_figure(emb, title="Fig. 4: UMAP of lung-opacity trajectories"), None
    df = method_table(G, pca, seeds, sigmas=tuple(req.sigmas), config=cfg, oracle=load_reader("oracle"),
                      progress=progress)
    table = summary_table(df, "PV").reset_index()
    table["method"] = table["method"].map(METHOD_LABELS)
    fig = new_figure(figsize=(1.6 + 1.6 * len(DISEASES), 0.9 + 0.3 * len(table)))
    ax = fig.subplots()
    ax.axis("off")
    ax.table(cellText=table.astype(str).values, colLabels=list(table.columns), loc="center").scale(1, 1.3)
    ax.set_title(f"Table 2: PV, mean ± std over {len(seeds)} references", fontsize=9)
    fig.tight_layout(pad=0.4)
    return fig, df


def make_figure(req: FigureRequest, out_dir, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Run the figure ``req`` names and write it (``figure_outputs``) with ``provenance.json`` into
    ``out_dir``, together or not at all; returns the paths."""
    seeds = req.check()
    names = figure_outputs(req.name) + [PROVENANCE]
    with output_set(out_dir, names, overwrite) as staging:
        G = load_generator(req.checkpoint)
        fig, df = _figure(req, seeds, G, pca_for(G), progress)
        for suffix in FORMATS:
            save_figure(fig, staging / (req.name + suffix))
        if df is not None:
            df.to_csv(staging / f"{req.name}.csv", index=False)
        write_json(staging / PROVENANCE, provenance("figure", req, checkpoint=req.checkpoint, G=G))
    return [Path(out_dir) / n for n in names]
