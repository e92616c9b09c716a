"""Films into the latent space, end to end, as the CLI runs it: load the generator and the films,
invert them (``method.invert``), optionally tune the generator on them (``method.tune``, pivotal
tuning), and write the latents, a reconstruction strip and a metrics JSON (and the tuning) as one
set (see ``io.output_set``); and read such a set back for an edit or a set.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cxr_workbench.assets import DEFAULT_GENERATOR, oracle_for
from cxr_workbench.imaging.datasets import check_film_paths, load_films
from cxr_workbench.imaging.strips import strip_image
from cxr_workbench.io import output_set, save_png, torch_load, write_json
from cxr_workbench.method.invert import InvertConfig, check_images, invert, reconstruction_report
from cxr_workbench.method.tune import TuneConfig, load_tuning, save_tuning, tune_generator
from cxr_workbench.model.checkpoints import load_generator
from cxr_workbench.model.latents import check_latents
from cxr_workbench.studies.provenance import PROVENANCE, provenance

__all__ = ["INVERT_OUTPUTS", "TUNED", "InvertRequest", "run_invert", "invert_films", "Inverted", "read_inverted"]

INVERT_OUTPUTS = ("latents.pt", "reconstruction.png", "metrics.json", PROVENANCE)
TUNED = "tuned.pt"  # written beside them with tuning


@dataclass
class InvertRequest:
    """Films to bring into the latent space (``cxr-workbench invert``): ``overrides`` are InvertConfig
    fields, ``tune`` the steps of pivotal tuning (0: none) and ``tune_overrides`` TuneConfig fields."""

    images: list
    checkpoint: Path = DEFAULT_GENERATOR
    overrides: dict = field(default_factory=dict)
    tune: int = 0
    tune_overrides: dict = field(default_factory=dict)
    fit: str = "crop"               # how a film becomes square (datasets.FITS)
    voi: str = "auto"               # DICOM display window (datasets.VOI_MODES)
    upsample: bool = False          # enlarge films smaller than the model's resolution

    def check(self) -> tuple[InvertConfig, TuneConfig | None]:
        """The configs, validated, and the films' paths checked, before any model is loaded."""
        if not isinstance(self.tune, int) or self.tune < 0:
            raise ValueError(f"tune={self.tune!r}; expected 0 (no tuning) or a number of steps")
        check_film_paths(self.images)
        tune = TuneConfig(**{**self.tune_overrides, "steps": self.tune}).validate() if self.tune else None
        return InvertConfig(**self.overrides).validate(), tune


@dataclass
class Inverted:
    """Films brought into the latent space: their latents, the generator that renders them (tuned
    on them, or the one given), the films themselves and what each step did to the PSNR."""
    ws: torch.Tensor                 # [N, num_ws, w_dim]
    G: object                        # the generator edits of these latents use
    films: torch.Tensor              # [N, C, R, R] in [-1, 1]
    rows: list                       # per film: reconstruction report (+ psnr_tuned)
    tuned: bool = False


def invert_films(G, films: torch.Tensor, config: InvertConfig, tune: TuneConfig | None, oracle,
                 progress: bool = True) -> Inverted:
    """Invert ``films`` [N, C, R, R] on G and, with ``tune``, fine-tune G on them (its own copy)."""
    if tune is not None and tune.msssim_weight and G.img_resolution <= 32:
        raise ValueError(f"tuning a {G.img_resolution} px generator with MS-SSIM; it needs more than 32 px "
                         "(set msssim_weight=0)")
    res = invert(G, films, config, oracle=oracle, progress=progress)
    rows = reconstruction_report(films, res, oracle)
    if tune is None:
        return Inverted(res.ws, G, films, rows)
    tuned = tune_generator(G, films, res.ws, tune, progress=progress)
    for row, p in zip(rows, tuned.psnr):
        row["psnr_tuned"] = float(p)
    return Inverted(res.ws, tuned.G, films, rows, tuned=True)


def run_invert(req: InvertRequest, out_dir, overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Invert the request's films and write ``latents.pt`` (``ws`` [N, num_ws, w_dim] and the films,
    the input of ``edit --latents`` and ``augment --latents``), ``reconstruction.png`` (per film: the
    film, its reconstruction, |difference|, and with tuning the tuned reconstruction and its
    |difference|), ``metrics.json`` and, with tuning, ``tuned.pt`` (``method.tune.save_tuning``),
    together or not at all.

    Returns one row per film: PSNR (and ``psnr_tuned``), SSIM and, with the shipped oracle, whether
    it finds the film plausible (a film far from the model's domain says so).
    """
    cfg, tune = req.check()
    names = [str(p) for p in req.images]
    outputs = INVERT_OUTPUTS + ((TUNED,) if tune else ())
    with output_set(out_dir, outputs, overwrite) as staging:
        G = load_generator(req.checkpoint)
        films = load_films(req.images, G.img_resolution, req.fit, req.voi, req.upsample)
        done = invert_films(G, films, cfg, tune, oracle_for(G), progress)
        with torch.no_grad():
            recon = G.synthesis(done.ws).clamp(-1, 1)
            panels = [films, recon, (recon - films).abs() * 2 - 1]
            if tune:
                save_tuning(staging / TUNED, G, done.G, done.ws)
                tuned = done.G.synthesis(done.ws).clamp(-1, 1)
                panels += [tuned, (tuned - films).abs() * 2 - 1]
        save_png(staging / "reconstruction.png", strip_image([torch.stack(c) for c in zip(*panels)]))
        torch.save(dict(ws=done.ws, images=names, space=cfg.space, films=films, tuned=TUNED if tune else None),
                   staging / "latents.pt")
        columns = "film, reconstruction, |difference|" + (", tuned reconstruction, |difference|" if tune else "")
        write_json(staging / "metrics.json", dict(images=names, config=asdict(cfg),
                                                  tune=asdict(tune) if tune else None, columns=columns,
                                                  per_image=done.rows))
        write_json(staging / PROVENANCE, provenance("invert", req, checkpoint=req.checkpoint, G=G))
    return done.rows


def read_inverted(path, G) -> Inverted:
    """The latents of an ``invert`` (or ``edit``) output set, checked against G, with the generator
    that renders them: G tuned by the set's ``tuned.pt`` when it was tuned (checked: tuned from G,
    for these latents, intact). ``films`` is empty for sets from before films were kept."""
    path = Path(path)
    data = torch_load(path, "latents file", max_bytes=2 ** 30)
    ws = data.get("ws") if isinstance(data, dict) else None
    if not isinstance(ws, torch.Tensor):
        raise ValueError(f"{path} holds no 'ws' tensor; expected the latents.pt written by cxr-workbench invert")
    ws = check_latents(ws, G, f"latents file {path}")
    films = data.get("films")
    if isinstance(films, torch.Tensor):
        try:
            films = check_images(G, films)
        except ValueError as e:
            raise ValueError(f"{path}: its films: {e}") from None
        if len(films) != len(ws):
            raise ValueError(f"{path} holds {len(films)} films for {len(ws)} latents; expected one film per latent")
    else:
        films = torch.empty(0)
    tuned = data.get("tuned")
    if tuned is None:
        return Inverted(ws, G, films, [])
    if tuned != TUNED or not (path.parent / TUNED).is_file():
        raise ValueError(f"{path} was tuned, but {path.parent / TUNED} is missing; keep the set's files together")
    return Inverted(ws, load_tuning(path.parent / TUNED, G, ws), films, [], tuned=True)
