"""The paper's figures in one command (``cxr-workbench figure NAME --out DIR``): Fig. 3 (Baseline
LO and LO + direction for both diseases, and the linear walk along u), Fig. 4 (UMAP of the
lung-opacity trajectories), Fig. 5 (Baseline LO against LO + direction on one cardiomegaly edit)
and Table 2 (PV of both methods over sigma, rendered as a table); from a fresh run on a generator,
or from output sets made before (``--from``: edit sets, rendered again by the generator that made
them; for Table 2 also earlier table2 sets). Each is written as PNG, PDF and SVG (Table 2 also as
CSV) with its ``provenance.json``, as one set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from cxr_workbench.assets import DEFAULT_GENERATOR, load_reader, pca_for
from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.io import output_set, write_json
from cxr_workbench.method.evaluate import method_table, summary_table
from cxr_workbench.method.optimize import METHOD_LABELS, Trajectory, named_config, run_method
from cxr_workbench.method.plans import plan_edit
from cxr_workbench.model.checkpoints import load_generator
from cxr_workbench.model.latents import reference_latents, synthesize
from cxr_workbench.studies.edit import EditSet, read_edit_set
from cxr_workbench.studies.figures import comparison_figure, new_figure, save_figure, umap_embedding, umap_figure
from cxr_workbench.studies.provenance import PROVENANCE, file_sha256, provenance, read_provenance

__all__ = ["FIGURES", "FORMATS", "FigureRequest", "figure_outputs", "read_sources", "make_figure"]

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
    sigmas; ``seeds`` None: ``DEFAULT_SEEDS``. With ``sources`` (folders of output sets) the figure
    is drawn from them instead, and generator, seeds, steps and sigmas are theirs."""

    name: str
    checkpoint: Path = DEFAULT_GENERATOR
    seeds: list | None = None
    max_steps: int = 300
    sigmas: list = field(default_factory=lambda: [0.3, 1.0, 2.0])
    sources: list = field(default_factory=list)

    def check(self) -> list[int]:
        """The figure's name and settings checked before any model is loaded; returns the seeds."""
        if self.name not in FIGURES:
            raise ValueError(f"figure {self.name!r}; expected one of {', '.join(FIGURES)}")
        named_config("ours", max_steps=self.max_steps)
        if not self.sigmas or any(not s > 0 for s in self.sigmas):
            raise ValueError(f"sigmas={self.sigmas}; expected positive spring lengths")
        if self.sources and self.seeds is not None:
            raise ValueError(f"seeds={self.seeds} with sources; a figure from output sets shows their references")
        for path in self.sources:
            if not Path(path).is_dir():
                raise ValueError(f"{path}: not a folder; expected an output set (edit, or table2 for Table 2)")
        return list(DEFAULT_SEEDS[self.name] if self.seeds is None else self.seeds)


def figure_outputs(name: str) -> list[str]:
    """The files a figure's set holds besides its provenance."""
    return [name + s for s in FORMATS] + ([f"{name}.csv"] if name == "table2" else [])


def _fresh_edits(req: FigureRequest, seeds: list[int], G, pca) -> dict:
    """(disease, method) -> (Trajectory, box): the edits the figure shows, run now."""
    cfg = named_config("ours", max_steps=req.max_steps)
    wanted = {"fig3": {"cardiomegaly": ("lo", "lo+dir"), "opacity": ("lo", "linear", "lo+dir")},
              "fig4": {"opacity": ("lo", "lo+dir")}, "fig5": {"cardiomegaly": ("lo", "lo+dir")}}[req.name]
    w_ref, edits = reference_latents(G, seeds), {}
    for disease, methods in wanted.items():
        plan = plan_edit(G, pca, disease=disease, layers=cfg.layers)
        for m in methods:
            edits[disease, m] = run_method(G, m, w_ref, plan.box, u=plan.u, config=cfg, progress=False), plan.box
    return edits


def _set_edits(sets: list[EditSet], G) -> dict:
    """(disease, method) -> (Trajectory, box): the edit sets' trajectories rendered again by G."""
    edits = {}
    for es in sets:
        images = synthesize(G, torch.cat([es.w_ref[:, None], es.points], dim=1))  # [R, n + 1, C, H, W]
        edits[es.disease, es.method] = Trajectory(es.method, es.w_ref, es.points, images[:, 0], images[:, 1:],
                                                  es.config), es.box
    return edits


def _one_disease(keys, name: str) -> str:
    """The one disease of (disease, method) keys, or a one-line refusal."""
    diseases = sorted({d for d, _ in keys})
    if len(diseases) != 1:
        raise ValueError(f"{name} from edits of {' and '.join(diseases)}; expected edits of one disease")
    return diseases[0]


def read_sources(req: FigureRequest) -> list:
    """The request's output sets read and checked against the figure before anything is written: an
    edit set per method and disease (one disease for fig4 and fig5), one generator, unchanged since;
    for Table 2 also earlier table2 sets, each edit once."""
    sets = [_read_source(p, req.name) for p in req.sources]
    edit_sets = [s for s in sets if isinstance(s, EditSet)]
    if req.name == "table2":
        if sets:
            _table2_rows(sets)
    elif sets:
        first = {}
        for es in edit_sets:
            key = es.disease, es.method
            if key in first:
                raise ValueError(f"{es.path}: a second {METHOD_LABELS[es.method]} edit of {es.disease} (the first "
                                 f"is {first[key]}); expected one set per method and disease")
            first[key] = es.path
        if req.name != "fig3":
            _one_disease(first, req.name)
    if edit_sets:
        _generator_file(edit_sets)
    return sets


def _draw(name: str, edits: dict, seed: int, progress: bool):
    """Fig. 3, 4 or 5 from (disease, method) -> (Trajectory, box), methods in the paper's order;
    Fig. 3 and 5 show the first reference (``seed``)."""
    order = sorted(edits, key=lambda k: (list(METHOD_LABELS).index(k[1]), list(DISEASES).index(k[0])))
    first = next(iter(edits.values()))[0]
    seed = f"seed {seed}"
    if name == "fig3":
        rows = {f"{METHOD_LABELS[m]}, {d}": edits[d, m][0].sequence(0) for d, m in order}
        boxes = {f"{METHOD_LABELS[m]}, {d}": edits[d, m][1] for d, m in order}
        return comparison_figure(rows, boxes, differences=False, title=f"Fig. 3: {seed}")
    disease = _one_disease(edits, name)
    if name == "fig5":
        return comparison_figure({METHOD_LABELS[m]: edits[d, m][0].sequence(0) for d, m in order},
                                 edits[order[0]][1], title=f"Fig. 5: {disease}, {seed}")
    emb = umap_embedding({METHOD_LABELS[m]: edits[d, m][0] for d, m in order}, layers=first.config.layers,
                         progress=progress)
    return umap_figure(emb, title=f"Fig. 4: UMAP of {disease} trajectories")


def _table2_rows(sets: list) -> pd.DataFrame:
    """Table 2's rows (one per edit and reference) from edit sets and earlier table2 sets."""
    frames = []
    for src in sets:
        if isinstance(src, EditSet):
            frame = pd.DataFrame([dict(disease=src.disease, sigma=float(src.config.sigma), method=src.method,
                                       seed=seed, **row) for seed, row in zip(src.seeds, src.rows)])
            where = src.path / "metrics.json"
        else:
            frame, where = src
        pv = pd.to_numeric(frame["PV"] if "PV" in frame else pd.Series([None]), errors="coerce")
        if pv.isna().any():
            raise ValueError(f"{where}: PV missing or not a number in row {int(pv.isna().idxmax())}; expected each "
                             "edit's PV")
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(["disease", "sigma", "method", "seed"])
    if dup.any():
        d = df[dup].iloc[0]
        raise ValueError(f"{d['disease']}, sigma {d['sigma']:g}, {d['method']}, seed {d['seed']} is in two of the "
                         "sets; expected each edit once")
    return df


def _table_figure(df: pd.DataFrame):
    """Table 2 rendered: PV mean ± std per (sigma, method) and disease."""
    table = summary_table(df, "PV").reset_index()
    table["method"] = table["method"].map(METHOD_LABELS)
    n = df.groupby(["disease", "sigma", "method"]).size()
    fig = new_figure(figsize=(1.6 + 1.6 * df["disease"].nunique(), 0.9 + 0.3 * len(table)))
    ax = fig.subplots()
    ax.axis("off")
    ax.table(cellText=table.fillna("—").astype(str).values, colLabels=list(table.columns), loc="center").scale(1, 1.3)
    refs = f"{n.iloc[0]}" if n.nunique() == 1 else f"{n.min()}-{n.max()}"
    ax.set_title(f"Table 2: PV, mean ± std over {refs} references", fontsize=9)
    fig.tight_layout(pad=0.4)
    return fig


def _figure(req: FigureRequest, seeds: list[int], sets: list, progress: bool):
    """The matplotlib figure the request names, Table 2's numbers (or None), and the generator it
    used with its file (None, None for a table made from other tables). ``sets``: ``read_sources``."""
    if sets:
        edit_sets = [s for s in sets if isinstance(s, EditSet)]
        path = _generator_file(edit_sets) if edit_sets else None
        G = load_generator(path) if path else None
        if req.name == "table2":
            df = _table2_rows(sets)
            return _table_figure(df), df, G, path
        seed = (edit_sets[0].seeds or [0])[0]
        return _draw(req.name, _set_edits(edit_sets, G), seed, progress), None, G, path
    G = load_generator(req.checkpoint)
    pca = pca_for(G)
    if req.name != "table2":
        return _draw(req.name, _fresh_edits(req, seeds, G, pca), seeds[0], progress), None, G, req.checkpoint
    df = method_table(G, pca, seeds, sigmas=tuple(req.sigmas), config=named_config("ours", max_steps=req.max_steps),
                      oracle=load_reader("oracle", G), progress=progress)
    return _table_figure(df), df, G, req.checkpoint


def _read_source(path, name: str):
    """An edit set, or (Table 2) the numbers of an earlier table2 set and its file."""
    prov = read_provenance(path)
    if prov["kind"] == "figure" and prov["request"].get("name") == "table2" and name == "table2":
        csv = Path(path) / "table2.csv"
        try:
            df = pd.read_csv(csv)
        except (OSError, ValueError) as e:
            raise ValueError(f"{csv}: {e}") from None
        missing = [c for c in ("disease", "sigma", "method", "seed", "PV") if c not in df.columns]
        if missing:
            raise ValueError(f"{csv}: lacks the columns {missing}; expected Table 2's rows")
        return df, csv
    return read_edit_set(path)


def _generator_file(sets: list[EditSet]) -> Path:
    """The file of the one generator the edit sets were made with, checked against their records."""
    shas = {s.generator["sha256"] for s in sets}
    if len(shas) > 1:
        raise ValueError(f"the sets were made by {len(shas)} generators ({', '.join(str(s.path) for s in sets)}); "
                         "expected sets of one generator")
    gen = sets[0].generator
    path = Path(gen["path"])
    if not path.is_file() or file_sha256(path) != gen["sha256"]:
        raise ValueError(f"{sets[0].path}: its generator {path} is {'changed' if path.is_file() else 'not found'} "
                         f"(sha256 {gen['sha256'][:12]} then); expected the generator that made the set")
    return path


def make_figure(req: FigureRequest, out_dir, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Run the figure ``req`` names and write it (``figure_outputs``) with ``provenance.json`` into
    ``out_dir``, together or not at all; returns the paths."""
    seeds = req.check()
    sets = read_sources(req)
    names = figure_outputs(req.name) + [PROVENANCE]
    with output_set(out_dir, names, overwrite) as staging:
        fig, df, G, checkpoint = _figure(req, seeds, sets, progress)
        for suffix in FORMATS:
            save_figure(fig, staging / (req.name + suffix))
        if df is not None:
            df.to_csv(staging / f"{req.name}.csv", index=False)
        write_json(staging / PROVENANCE, provenance("figure", req, checkpoint=checkpoint, G=G))
    return [Path(out_dir) / n for n in names]
