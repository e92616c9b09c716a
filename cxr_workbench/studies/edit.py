"""One edit, end to end, as the CLI runs it: load the generator, the box and the direction;
optimise; measure (PV and companions, oracle severity trend); write the strip PNG, the latents
and a metrics JSON as one set (see ``io.output_set``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cxr_workbench.assets import DEFAULT_GENERATOR, cache_dir, load_reader, oracle_for, pca_for
from cxr_workbench.devices import pick_device
from cxr_workbench.imaging.datasets import check_film_paths, load_films
from cxr_workbench.imaging.masks import disease_for_box
from cxr_workbench.imaging.strips import strip_image
from cxr_workbench.io import output_set, save_png, write_json
from cxr_workbench.method.evaluate import measure
from cxr_workbench.method.invert import InvertConfig, invert, reconstruction_report
from cxr_workbench.method.optimize import METHODS, LOConfig, named_config, run_method
from cxr_workbench.method.plans import plan_edit
from cxr_workbench.model.checkpoints import load_generator
from cxr_workbench.model.latents import reference_latents

__all__ = ["EDIT_OUTPUTS", "EditRequest", "run_edit"]

EDIT_OUTPUTS = ("strip.png", "latents.pt", "metrics.json")


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
    fit: str = "crop"               # how a film becomes square (datasets.FITS)
    voi: str = "auto"               # DICOM display window (datasets.VOI_MODES)
    upsample: bool = False          # enlarge films smaller than the model's resolution
    invert_steps: int = 300
    device: str = "auto"            # where the generator runs (devices.pick_device)
    reader: str = "oracle"          # what reads the severity (readers.READER_SPECS)
    label: int = 0                  # the class of the seeds, for a conditional generator

    def config(self) -> LOConfig:
        return named_config(self.settings, **self.overrides)

    def check(self) -> tuple[LOConfig, str]:
        """Everything that can be checked before loading a model (settings, method, seeds or films,
        disease); returns the validated config and the disease."""
        pick_device(self.device)
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; expected one of {METHODS}")
        if not self.seeds and not self.images:
            raise ValueError("seeds=[]; expected at least one reference seed or film")
        check_film_paths(self.images)
        return self.config(), disease_for_box(self.box, self.disease)


def run_edit(req: EditRequest, out_dir, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Run one request and write ``strip.png``, ``latents.pt`` and ``metrics.json`` into out_dir.

    With ``req.images`` the films are inverted first (``invert``) and edited from their latents;
    the metrics then also say how well each film was reproduced and whether the oracle finds it
    plausible, so a film far from the model's domain says so. The three are written together or not
    at all: a second writer into the same folder is refused, and a run that fails (or goes non-finite)
    leaves no file under a final name.
    """
    cfg, disease = req.check()
    reader = load_reader(req.reader)
    reader.severity(disease)  # one that cannot read the disease is refused before any work
    with output_set(out_dir, EDIT_OUTPUTS, overwrite=overwrite) as staging:
        G = load_generator(req.checkpoint, device=pick_device(req.device))
        plan = plan_edit(G, None if req.method == "lo" else pca_for(G), box=req.box, disease=disease,
                         direction=req.direction, method=req.method, layers=cfg.layers, cache_dir=cache_dir())
        box, u = plan.box, plan.u
        oracle = oracle_for(G)  # the inversion's feature loss and its report: the oracle's own features
        films, inversion = None, []
        if req.images:
            films = load_films(req.images, G.img_resolution, req.fit, req.voi, req.upsample)
            inv = invert(G, films, InvertConfig(steps=req.invert_steps), oracle=oracle, progress=progress)
            w_ref, inversion = inv.ws, reconstruction_report(films, inv, oracle)
        else:
            w_ref = reference_latents(G, req.seeds, label=req.label)
        traj = run_method(G, req.method, w_ref, box, u=u, config=cfg, progress=progress)
        rows = measure(traj, box, disease, reader)
        if not (torch.isfinite(traj.images).all() and all(math.isfinite(r["PV"]) for r in rows)):
            raise FloatingPointError(f"the {req.method} run went non-finite ({traj.message or 'NaN images'}); "
                                     "nothing was written. Try a smaller lr, sigma or c")
        # With films, each row starts with the film itself, then its reconstruction and the edits.
        seqs = [traj.sequence(r).cpu() if films is None else torch.cat([films[r:r + 1], traj.sequence(r).cpu()])
                for r in range(len(w_ref))]
        save_png(staging / "strip.png", strip_image(seqs, box))
        torch.save(dict(points=traj.points.cpu(), w_ref=traj.w_ref.cpu(),
                        seeds=list(req.seeds) if films is None else [],
                        images=[str(p) for p in req.images], method=req.method), staging / "latents.pt")
        write_json(staging / "metrics.json",
                   dict(request=json.loads(json.dumps(asdict(req), default=str)),
                        direction=plan.u_source, box=box.to_dict(), disease=disease, reader=reader.name,
                        sequence="reference image followed by the n edits" + (
                            "; the strip starts each row with the film" if films is not None else ""),
                        inversion=inversion, trajectory=traj.summary(), per_reference=rows))
    return [Path(out_dir) / n for n in EDIT_OUTPUTS]
