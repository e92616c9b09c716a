"""One edit, end to end, as the CLI runs it: load the generator, the box and the direction;
optimise; measure (PV and companions, oracle severity trend); write the strip PNG, the latents
and a metrics JSON as one set (see ``io.output_set``).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from cxr_workbench.assets import DEFAULT_GENERATOR, cache_dir, load_reader, oracle_for, pca_for
from cxr_workbench.devices import pick_device
from cxr_workbench.imaging.datasets import check_film_paths, load_films
from cxr_workbench.imaging.diseases import check_disease
from cxr_workbench.imaging.masks import Box, BoxChoice, choose_box
from cxr_workbench.imaging.strips import strip_image
from cxr_workbench.io import output_set, save_png, torch_load, write_json
from cxr_workbench.method.evaluate import measure
from cxr_workbench.method.film_edits import keep_film, residual_in_box, residual_warnings
from cxr_workbench.method.invert import InvertConfig
from cxr_workbench.method.optimize import METHODS, LOConfig, named_config, run_method
from cxr_workbench.method.plans import plan_edit
from cxr_workbench.method.tune import TuneConfig
from cxr_workbench.model.checkpoints import load_generator
from cxr_workbench.model.latents import check_latents, reference_latents
from cxr_workbench.studies.films import Inverted, invert_films, read_inverted
from cxr_workbench.studies.provenance import PROVENANCE, provenance, read_provenance

__all__ = ["EDIT_OUTPUTS", "EditRequest", "run_edit", "EditSet", "read_edit_set"]

EDIT_OUTPUTS = ("strip.png", "latents.pt", "metrics.json", PROVENANCE)


@dataclass
class EditRequest:
    """What to edit and how; ``overrides`` are LOConfig fields that differ from the named
    ``settings`` (``optimize.NAMED_CONFIGS``: "ours" or the paper's "literal")."""

    checkpoint: Path = DEFAULT_GENERATOR
    seeds: list = field(default_factory=lambda: [0])
    box: str = "heart"
    direction: str = "auto"
    method: str = "lo+dir"
    disease: str | None = None      # None: the box preset's disease
    settings: str = "ours"
    overrides: dict = field(default_factory=dict)
    images: list = field(default_factory=list)  # films to invert and edit instead of seeds
    latents: Path | None = None     # or the latents.pt of an invert set (tuned there or not)
    tune: int = 0                   # pivotal tuning steps after inverting ``images`` (0: none)
    keep_film: bool = False         # film-preserving edits: only the edit's change enters the box
    fit: str = "crop"               # how a film becomes square (datasets.FITS)
    voi: str = "auto"               # DICOM display window (datasets.VOI_MODES)
    upsample: bool = False          # enlarge films smaller than the model's resolution
    invert_steps: int = 300
    device: str = "auto"            # where the generator runs (devices.pick_device)
    reader: str = "oracle"          # what reads the severity (readers.READER_SPECS)
    label: int = 0                  # the class of the seeds, for a conditional generator

    def config(self) -> LOConfig:
        return named_config(self.settings, **self.overrides)

    def check(self) -> tuple[LOConfig, BoxChoice]:
        """Everything that can be checked before loading a model (settings, method, seeds or films,
        box and disease); returns the validated config and the box read with its disease."""
        pick_device(self.device)
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; expected one of {METHODS}")
        if not self.seeds and not self.images and self.latents is None:
            raise ValueError("seeds=[]; expected at least one reference seed or film")
        if self.images and self.latents is not None:
            raise ValueError(f"images and latents={self.latents}: give films to invert or the latents of inverted "
                             "ones, not both")
        if self.tune and not self.images:
            raise ValueError(f"tune={self.tune} without images; tuning fits the generator to films (invert --tune "
                             "tunes for --latents)")
        if self.keep_film and not self.images and self.latents is None:
            raise ValueError("keep_film=True with seeds; a film-preserving edit needs films (images or latents)")
        check_film_paths(self.images)
        return self.config(), choose_box(self.box, self.disease)


def run_edit(req: EditRequest, out_dir, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Run one request and write ``strip.png``, ``latents.pt``, ``metrics.json`` and
    ``provenance.json`` (``studies.provenance``) into out_dir.

    With ``req.images`` the films are inverted first (``invert``, and tuned with ``req.tune``) and
    edited from their latents; with ``req.latents``, the latents (and tuning) of an ``invert`` set
    are. The direction is found on the generator as given; a tuned one renders the edits. The
    metrics then also say how well each film was reproduced, whether the oracle finds it plausible,
    and how much the reconstruction differs from the film inside the box (a warning when it is
    large). ``req.keep_film``: each film plus the edit's change inside a soft-edged box
    (``film_edits.keep_film``). The files are written together or not at all: a second writer
    into the same folder is refused, and a run that fails (or goes non-finite) leaves no file under a
    final name.
    """
    cfg, box_choice = req.check()
    disease = box_choice.disease
    G0 = load_generator(req.checkpoint, device=pick_device(req.device))
    reader = load_reader(req.reader, G0)
    reader.severity(disease)  # one that cannot read the disease is refused before any work
    with output_set(out_dir, EDIT_OUTPUTS, overwrite=overwrite) as staging:
        plan = plan_edit(G0, None if req.method == "lo" else pca_for(G0), box=box_choice,
                         direction=req.direction, method=req.method, layers=cfg.layers, cache_dir=cache_dir())
        box, u = plan.box, plan.u
        refs = _references(req, G0, reader.oracle if req.reader == "oracle" else None, progress)
        traj = run_method(refs.G, req.method, refs.ws, box, u=u, config=cfg, progress=progress)
        rows = measure(traj, box, disease, reader)
        if not (torch.isfinite(traj.images).all() and all(math.isfinite(r["PV"]) for r in rows)):
            raise FloatingPointError(f"the {req.method} run went non-finite ({traj.message or 'NaN images'}); "
                                     "nothing was written. Try a smaller lr, sigma or c")
        seqs = [traj.sequence(r).cpu() for r in range(len(refs.ws))]
        films, notes, inside = refs.films if len(refs.films) else None, [], None
        if films is not None:
            names = [str(p) for p in req.images] or [f"film {i}" for i in range(len(films))]
            inside = residual_in_box(films, traj.images[:, 0].cpu(), box).tolist()
            notes = residual_warnings(names, inside)
            for line in notes:
                print(f"warning: {line}", file=sys.stderr)
            if req.keep_film:
                seqs = list(keep_film(films, torch.stack(seqs), box))
            else:  # each row starts with the film itself, then its reconstruction and the edits
                seqs = [torch.cat([films[r:r + 1], s]) for r, s in enumerate(seqs)]
        save_png(staging / "strip.png", strip_image(seqs, box))
        torch.save(dict(points=traj.points.cpu(), w_ref=traj.w_ref.cpu(), seeds=list(req.seeds) if films is None
                        and req.latents is None else [], images=[str(p) for p in req.images], method=req.method),
                   staging / "latents.pt")
        write_json(staging / "metrics.json",
                   dict(request=json.loads(json.dumps(asdict(req), default=str)),
                        direction=plan.u_source, box=box.to_dict(), disease=disease, reader=reader.name,
                        sequence=_sequence_note(films is not None, req.keep_film, refs.tuned),
                        inversion=refs.rows, residual_in_box=inside, warnings=notes, trajectory=traj.summary(),
                        per_reference=rows))
        write_json(staging / PROVENANCE, provenance("edit", req, checkpoint=req.checkpoint, G=G0, u=u,
                                                    u_source=plan.u_source, device=G0.w_avg.device))
    return [Path(out_dir) / n for n in EDIT_OUTPUTS]


def _references(req: EditRequest, G, shipped_oracle, progress: bool) -> Inverted:
    """The request's references: seeds, films inverted (and tuned) here, or an invert set's latents.
    ``shipped_oracle``: the shipped oracle of G's films if already loaded (it checks the inversions)."""
    if req.images:
        films = load_films(req.images, G.img_resolution, req.fit, req.voi, req.upsample)
        tune = TuneConfig(steps=req.tune) if req.tune else None
        return invert_films(G, films, InvertConfig(steps=req.invert_steps), tune, oracle_for(G, shipped_oracle),
                            progress)
    if req.latents is not None:
        return read_inverted(req.latents, G)
    return Inverted(reference_latents(G, req.seeds, label=req.label), G, torch.empty(0), [])


def _sequence_note(films: bool, kept: bool, tuned: bool) -> str:
    note = "reference image followed by the n edits"
    if kept:
        note = "the film followed by the n edits, each the film plus the edit's change inside the box"
    elif films:
        note += "; the strip starts each row with the film"
    return note + ("; rendered by the generator tuned on the films" if tuned else "")


@dataclass
class EditSet:
    """An ``edit`` output set of seeds, read back (what a figure or table made from it needs)."""

    path: Path
    method: str
    disease: str
    box: Box
    config: LOConfig
    seeds: list
    w_ref: torch.Tensor     # [R, num_ws, w_dim]
    points: torch.Tensor    # [R, n, num_ws, w_dim]
    rows: list              # per reference: measure's figures
    generator: dict         # provenance's record of the generator: path, name, sha256, weights


def read_edit_set(path) -> EditSet:
    """The edit output set in folder ``path``, checked: its files, the request's method and disease,
    the box, the settings, latents of one shape and finite, a row of figures per reference. Sets of
    films are refused (their strips hold the films, which the latents alone do not make again).
    Every error is one line naming the file and the field."""
    path = Path(path)
    prov = read_provenance(path)
    if prov["kind"] != "edit" or not prov.get("generator"):
        raise ValueError(f"{path}: a {prov['kind']} set; expected the output set of an edit")
    req = prov["request"]
    if req.get("images") or req.get("latents"):
        raise ValueError(f"{path}: an edit of films; expected an edit of seeds (a film's edit cannot be rendered "
                         "again from its latents alone)")
    metrics = path / "metrics.json"
    try:
        m = json.loads(metrics.read_text())
        method, disease, rows = m["request"]["method"], m["disease"], m["per_reference"]
        settings = m["trajectory"]["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{metrics}: not an edit's metrics ({type(e).__name__}: {e})") from None
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{metrics}: request.method={method!r}; expected one of {METHODS}")
    box = Box.from_dict(m.get("box"), source=f"{metrics} box")
    try:
        check_disease(disease)
    except ValueError as e:
        raise ValueError(f"{metrics}: {e}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{metrics}: trajectory.config={settings!r:.60}; expected the run's settings")
    try:
        config = replace(LOConfig(), **{k: tuple(v) if k == "layers" and v is not None else v
                                        for k, v in settings.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{metrics}: trajectory.config: {e}") from None
    file = path / "latents.pt"
    latents = torch_load(file, "edit latents")
    w_ref, points = (latents.get(k) if isinstance(latents, dict) else None for k in ("w_ref", "points"))
    w_ref = check_latents(w_ref, source=f"{file}: w_ref")
    points = check_latents(points, source=f"{file}: points", batch_dims=2)
    if points.shape[0] != w_ref.shape[0] or points.shape[2:] != w_ref.shape[1:]:
        raise ValueError(f"{file}: w_ref {tuple(w_ref.shape)}, points {tuple(points.shape)}; expected [R, L, D] and "
                         "[R, n, L, D]")
    if not isinstance(rows, list) or len(rows) != len(w_ref) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{metrics}: per_reference holds {len(rows) if isinstance(rows, list) else rows!r:.40}; "
                         f"expected one row per reference ({len(w_ref)})")
    seeds = req.get("seeds")
    if not isinstance(seeds, list) or len(seeds) != len(w_ref) or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"{path / PROVENANCE}: request.seeds={seeds!r:.60}; expected the {len(w_ref)} seeds of its "
                         "references")
    return EditSet(path, method, disease, box, config, seeds, w_ref, points, rows, prov["generator"])
