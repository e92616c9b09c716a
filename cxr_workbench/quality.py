"""Quality figures of a generator, read through the severity oracle, and shipping of the default.

Figures (each also computed for a generator at initialisation and for phantoms vs phantoms, so
the numbers can be read): Fréchet distance between oracle features of generated and phantom
images; oracle CTR and opacity burden distributions; the fraction the oracle finds plausible.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoints import read_checkpoint, save_checkpoint
from .datasets import PhantomDataset
from .directions import compute_pca
from .io import atomic_write, save_png
from .metrics import frechet_distance
from .stylegan2 import Generator


def generated_images(G, n: int, seed: int = 0, batch: int = 250, psi: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            z = torch.randn(min(batch, n - i), G.z_dim, generator=gen)
            out.append(G(z, psi=psi).clamp(-1, 1))
    return torch.cat(out)


def _describe(pred: dict) -> dict:
    return dict(ctr_mean=float(pred["ctr"].mean()), ctr_std=float(pred["ctr"].std()),
                burden_mean=float(pred["opacity_burden"].mean()), burden_std=float(pred["opacity_burden"].std()),
                plausible=float(pred["plausible"].mean()),
                kind_fractions=[float((pred["kind"] == k).mean()) for k in range(3)])


def quality_figures(G, oracle, n: int = 2000, seed: int = 0) -> dict:
    """The model-card figures for G (see module docstring)."""
    phantoms_a = oracle.predict(PhantomDataset(n, G.img_resolution, seed=10_000 + seed).images_tensor())
    phantoms_b = oracle.predict(PhantomDataset(n, G.img_resolution, seed=20_000 + seed).images_tensor())
    gen = oracle.predict(generated_images(G, n, seed))
    torch.manual_seed(seed)
    init = oracle.predict(generated_images(Generator(**G.config).eval(), n, seed))
    fd = lambda a: frechet_distance(a["features"], phantoms_a["features"])
    return dict(n=n, fd_generated_vs_phantoms=fd(gen), fd_init_vs_phantoms=fd(init),
                fd_phantoms_vs_phantoms=fd(phantoms_b), generated=_describe(gen), init=_describe(init),
                phantoms=_describe(phantoms_a))


QUALITY_SETS = (("phantoms (second draw)", "phantoms", "fd_phantoms_vs_phantoms"),
                 ("shipped generator", "generated", "fd_generated_vs_phantoms"),
                 ("generator at initialisation", "init", "fd_init_vs_phantoms"))


def quality_rows(q: dict) -> list[dict]:
    """The figures of ``quality_figures`` as table rows, one per set (model card and notebook 01)."""
    return [dict(set=name, fd_to_phantoms=q[fd], ctr_mean=q[key]["ctr_mean"], ctr_std=q[key]["ctr_std"],
                 burden_mean=q[key]["burden_mean"], burden_std=q[key]["burden_std"], plausible=q[key]["plausible"])
            for name, key, fd in QUALITY_SETS]


def model_card_markdown(card: dict) -> str:
    q = card.get("quality", {})
    lines = ["# Shipped default generator", "",
             f"- Training data: {card.get('training_data')}",
             f"- Trained: {card.get('kimg')} kimg in {card.get('wall_time_s', 0) / 3600:.2f} h on {card.get('machine')}",
             f"- Architecture: {json.dumps(card.get('architecture', {}))}",
             f"- Training settings: {json.dumps(card.get('train_config', {}))}", ""]
    if q:
        lines += ["## Quality (through the severity oracle, `data/oracle.pt`)", "",
                  f"{q['n']} images per set. Fréchet distance of oracle features to phantoms:", "",
                  "| set | FD to phantoms | oracle CTR mean ± std | opacity burden mean ± std | plausible |",
                  "|---|---|---|---|---|"]
        for r in quality_rows(q):
            lines.append(f"| {r['set']} | {r['fd_to_phantoms']:.2f} | {r['ctr_mean']:.3f} ± {r['ctr_std']:.3f} | "
                         f"{r['burden_mean']:.3f} ± {r['burden_std']:.3f} | {r['plausible']:.1%} |")
        lines += ["", "(the phantoms row uses the first draw's statistics; FD is the first draw vs a second draw)"]
    if card.get("oracle"):
        lines += ["", "## Severity oracle (held-out phantoms)", "", f"```\n{json.dumps(card['oracle'], indent=2)}\n```"]
    lines += ["", "Sample grid: `data/samples.png` (seeds 0-31).", "",
              "## Resuming training", "",
              "`data/training/snapshot.pt` is the full training state (G, D, EMA generator, optimisers, RNG)",
              "at the kimg above. To train further and ship the result:", "",
              "    mkdir -p runs/default64 && cp data/training/snapshot.pt runs/default64/",
              "    .venv/bin/cxr-workbench train --run-dir runs/default64 --kimg 300",
              "    .venv/bin/cxr-workbench ship --run-dir runs/default64 --overwrite"]
    return "\n".join(lines) + "\n"


def ship_generator(run_dir, data_dir, oracle, n: int = 2000, overwrite: bool = False) -> list[Path]:
    """Copy a run's EMA generator into ``data_dir`` with its quality figures, the PCA of W, a
    sample grid, a markdown model card, and the run's training snapshot (for resuming)."""
    from .checkpoints import load_generator
    from .viz import sample_grid
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    data = read_checkpoint(run_dir / "generator.pt")
    G = load_generator(run_dir / "generator.pt")
    card = dict(data.get("model_card", {}))
    card["architecture"] = G.config
    card["quality"] = quality_figures(G, oracle, n)
    oracle_card = read_checkpoint(data_dir / "oracle.pt").get("model_card") if (data_dir / "oracle.pt").is_file() else None
    card["oracle"] = oracle_card
    out = [save_checkpoint(data_dir / "generator.pt", {**data, "model_card": card}, overwrite=overwrite)]
    out.append(compute_pca(load_generator(out[0]), n_samples=20000).save(data_dir / "pca.pt", overwrite=overwrite))
    out.append(save_png(data_dir / "samples.png", sample_grid(G, range(32)), overwrite=overwrite))
    snapshot = (run_dir / "snapshot.pt").read_bytes()
    out.append(atomic_write(data_dir / "training" / "snapshot.pt", lambda f: f.write(snapshot), "wb", overwrite))
    out.append(atomic_write(data_dir / "MODEL_CARD.md", lambda f: f.write(model_card_markdown(card)), "w", overwrite))
    return out
