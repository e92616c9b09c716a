"""One edit, end to end, as the CLI and the notebooks run it: load the generator, its PCA, the
box and the direction; optimise; measure (PV and companions, oracle severity trend); write the
strip PNG, the latents and a metrics JSON.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import DATA_DIR, DEFAULT_GENERATOR, DEFAULT_ORACLE
from .checkpoints import load_generator
from .directions import WPCA, compute_pca, generator_key, resolve_direction, suggest_direction
from .io import atomic_write, save_png, write_json
from .masks import PRESETS, Box, preset
from .metrics import pv_metric, trend
from .optimize import LOConfig, Trajectory, reference_latents, run_method
from .viz import strip_image

DEFAULT_PCA = DATA_DIR / "pca.pt"
CACHE_DIR = Path.home() / ".cache" / "cxr_workbench"  # PCA cache; CXR_WORKBENCH_CACHE overrides
SEVERITY = {"cardiomegaly": "ctr", "opacity": "opacity_burden"}


def load_box(spec: str | Box, resolution: int) -> Box:
    """A preset name (``heart``, ``lung_lower_left`` ...) or a box JSON file, at ``resolution``."""
    if isinstance(spec, Box):
        return spec if spec.resolution == resolution else spec.at_resolution(resolution)
    if spec in PRESETS:
        return preset(spec, resolution)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"box={spec!r}; expected a preset ({', '.join(PRESETS)}) or a box .json file")
    return Box.load(path).at_resolution(resolution)


def disease_for_box(spec) -> str:
    return PRESETS[spec]["disease"] if isinstance(spec, str) and spec in PRESETS else "cardiomegaly"


def pca_for(G, n_samples: int = 20000) -> WPCA:
    """The shipped PCA when G is the shipped generator, else a PCA computed once and cached."""
    key = generator_key(G)
    if DEFAULT_PCA.is_file():
        shipped = WPCA.load(DEFAULT_PCA)
        if shipped.generator_key == key:
            return shipped
    return compute_pca(G, n_samples=n_samples, cache_dir=os.environ.get("CXR_WORKBENCH_CACHE", CACHE_DIR))


def oracle_for(G):
    """The shipped oracle if it reads images of G's size and channels, else None."""
    from .oracle import load_oracle
    if not DEFAULT_ORACLE.is_file() or G.img_channels != 1:
        return None
    oracle = load_oracle(DEFAULT_ORACLE)
    return oracle if oracle.resolution == G.img_resolution else None


def measure(traj: Trajectory, box: Box, sign: int = +1, oracle=None, disease: str = "cardiomegaly") -> list[dict]:
    """PV, companions and (with an oracle) the severity trend, one dict per reference.

    Sequences are the reference image followed by the n edits.
    """
    rows = []
    for r in range(traj.images.shape[0]):
        seq = traj.sequence(r)
        row = pv_metric(seq, box, sign).to_dict()
        if oracle is not None:
            pred = oracle.predict(seq)
            values = pred[SEVERITY[disease]]
            row.update(severity=SEVERITY[disease], severity_trend=trend(values),
                       severity_change=float(values[-1] - values[0]),
                       plausible_fraction=float(pred["plausible"].mean()))
        rows.append(row)
    return rows


@dataclass
class EditRequest:
    checkpoint: Path = DEFAULT_GENERATOR
    seeds: list = field(default_factory=lambda: [0])
    box: str = "heart"
    direction: str = "auto"
    method: str = "lo+dir"
    disease: str | None = None      # None: from the box preset
    sigma: float | None = None      # None: LOConfig defaults
    c: float | None = None
    layers: str | None = None
    max_steps: int | None = None

    def config(self) -> LOConfig:
        from .directions import parse_layers
        overrides = {k: v for k, v in dict(sigma=self.sigma, c=self.c, max_steps=self.max_steps).items()
                     if v is not None}
        if self.layers is not None:
            overrides["layers"] = tuple(parse_layers(self.layers))
        return LOConfig(**overrides)


def run_edit(req: EditRequest, out_dir, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Run one request and write ``strip.png``, ``latents.pt`` and ``metrics.json`` into out_dir."""
    out_dir = Path(out_dir)
    targets = [out_dir / n for n in ("strip.png", "latents.pt", "metrics.json")]
    clash = [str(p) for p in targets if p.exists()]
    if clash and not overwrite:
        raise FileExistsError(f"{', '.join(clash)} exist; pass --overwrite or choose another --out")
    G = load_generator(req.checkpoint)
    box = load_box(req.box, G.img_resolution)
    disease = req.disease or disease_for_box(req.box)
    cfg = req.config()
    if req.method == "lo":
        u, u_desc = None, "none"
    elif req.direction == "auto":
        u, best, _ = suggest_direction(G, pca_for(G), box, layers=cfg.layers)
        u_desc = f"auto: PC {best['pc']} ({best['inside_share']:.0%} of its change inside the box)"
    else:
        u, u_desc = resolve_direction(req.direction, pca_for(G), G.w_dim)
    w_ref = reference_latents(G, req.seeds)
    traj = run_method(G, req.method, w_ref, box, u=u, config=cfg, progress=progress)
    rows = measure(traj, box, +1, oracle_for(G), disease)
    strip = strip_image([traj.sequence(r) for r in range(len(req.seeds))], box)
    save_png(targets[0], strip)
    atomic_write(targets[1], lambda f: torch.save(dict(points=traj.points, w_ref=traj.w_ref, seeds=list(req.seeds),
                                                       method=req.method), f))
    write_json(targets[2], dict(request={k: str(v) if isinstance(v, Path) else v for k, v in asdict(req).items()},
                                direction=u_desc, box=box.to_dict(), disease=disease,
                                sequence="reference image followed by the n edits",
                                trajectory=traj.summary(), per_reference=rows))
    return targets
