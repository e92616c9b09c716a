"""Make an output set (of edit, invert, augment, classify or figure) again from its
``provenance.json`` and say whether it matches (``cxr-workbench replay OUT``): the same request run
into a temporary folder, then every file the study writes compared within ``provenance.TOLERANCE``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from cxr_workbench.studies.provenance import PROVENANCE, TOLERANCE, compare_sets, file_sha256, read_provenance

__all__ = ["KINDS", "replay", "replay_line"]


def _edit(request: dict, out: Path, progress: bool) -> list[str]:
    from cxr_workbench.studies.edit import EDIT_OUTPUTS, EditRequest, run_edit
    run_edit(EditRequest(**request), out, progress=progress)
    return [n for n in EDIT_OUTPUTS if n != PROVENANCE]


def _invert(request: dict, out: Path, progress: bool) -> list[str]:
    from cxr_workbench.studies.films import INVERT_OUTPUTS, TUNED, InvertRequest, run_invert
    req = InvertRequest(**request)
    run_invert(req, out, progress=progress)
    return [n for n in INVERT_OUTPUTS if n != PROVENANCE] + ([TUNED] if req.tune else [])


def _augment(request: dict, out: Path, progress: bool) -> list[str]:
    from cxr_workbench.studies.augment import AugmentRequest, run_augment
    manifest = run_augment(AugmentRequest(**{**request, "out": out, "workers": 0, "scheduler": None}),
                           progress=progress)
    return ["set.json", "manifest.csv"] + list(manifest["file"])


def _classify(request: dict, out: Path, progress: bool) -> list[str]:
    from cxr_workbench.studies.classify import ClassifyRequest, run_classify
    run_classify(ClassifyRequest(**{**request, "out": out, "workers": 0, "scheduler": None}), progress=progress)
    return ["results.csv", "table.txt"]


def _figure(request: dict, out: Path, progress: bool) -> list[str]:
    from cxr_workbench.studies.paper_figures import FigureRequest, make_figure
    make_figure(FigureRequest(**request), out, progress=progress)
    # PDF and SVG carry their creation time; the PNG and the numbers are what is compared
    return [request["name"] + ".png"] + ([f"{request['name']}.csv"] if request["name"] == "table2" else [])


KINDS = {"edit": _edit, "invert": _invert, "augment": _augment, "classify": _classify, "figure": _figure}


def replay(out_dir, progress: bool = False) -> tuple[dict, list[str]]:
    """Run the study of ``out_dir``'s provenance again; returns the provenance and what differs (one
    line per file; empty: everything matches within ``TOLERANCE``). A generator file that is gone or
    changed since is a difference, and nothing is run."""
    prov = read_provenance(out_dir)
    kind = prov["kind"]
    if kind not in KINDS:
        raise ValueError(f"{Path(out_dir) / PROVENANCE}: kind {kind!r}; expected one of {sorted(KINDS)}")
    gen = prov.get("generator")
    if gen:
        path = Path(gen["path"])
        if not path.is_file():
            return prov, [f"generator {path}: not found here"]
        if file_sha256(path) != gen["sha256"]:
            return prov, [f"generator {path}: changed since the set was made (sha256 {gen['sha256'][:12]} then)"]
    with tempfile.TemporaryDirectory(prefix="cxr-workbench-replay-") as tmp:
        again = Path(tmp) / "again"
        names = KINDS[kind](prov["request"], again, progress)
        return prov, compare_sets(out_dir, again, names)


def replay_line(out_dir, prov: dict, differences: list[str]) -> str:
    """The one line ``replay`` prints."""
    if not differences:
        tol = f"tensors {TOLERANCE['tensor']:g}, numbers {TOLERANCE['number']:g} relative, images " \
              f"{TOLERANCE['image']:.0%} of their range"
        return f"{out_dir}: the {prov['kind']} replays: it matches a fresh run within {tol}"
    more = f" (and {len(differences) - 2} more)" if len(differences) > 2 else ""
    return f"{out_dir}: the {prov['kind']} does NOT replay: {'; '.join(differences[:2])}{more}"
