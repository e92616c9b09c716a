"""Where an output set came from, so that it can be made again and checked (``cxr-workbench replay``).

Each output set of ``edit``, ``invert``, ``augment`` and ``classify`` carries ``provenance.json``:
the study and its request (everything needed to run it again), the command line, the generator
file's sha256, name and weights hash, the direction's hash and how it was found, the package,
torch, numpy and Python versions, the device and the time. ``compare_sets`` says whether two sets
agree within the tolerances below, file by file.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cxr_workbench import __version__
from cxr_workbench.io import torch_load
from cxr_workbench.model.checkpoints import generator_key

__all__ = ["PROVENANCE", "TOLERANCE", "file_sha256", "tensor_sha256", "provenance", "read_provenance",
           "compare_sets"]

PROVENANCE = "provenance.json"
# What "the same" means when a set is made again on a CPU: float rounding differs between machines
# and thread counts, so tensors and numbers agree within these, images within a level or two.
TOLERANCE = dict(tensor=1e-4, number=1e-3, image=0.01)  # abs/rel; rel; share of the image's range
# Fields that say when and how fast, not what: never compared.
UNCOMPARED = {"seconds", "wall_s", "wall_time", "created", "command"}


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_sha256(t: torch.Tensor | None) -> str | None:
    """sha256 of a tensor's float32 values (None for None)."""
    if t is None:
        return None
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _portable(value) -> str:
    """Paths as absolute paths: a replay may start from another folder."""
    return str(Path(value).resolve()) if isinstance(value, Path) else str(value)


def _direction_sha256(u) -> str | None:
    if u is None or isinstance(u, torch.Tensor):
        return tensor_sha256(u)
    return hashlib.sha256(json.dumps(u, sort_keys=True).encode()).hexdigest()


def provenance(kind: str, request, *, checkpoint=None, G=None, u=None, u_source: str | None = None,
               device=None) -> dict:
    """The provenance record of a ``kind`` study run from ``request`` (a dataclass or dict): ``u``,
    the direction (a tensor, or the set's description of its directions) and how it was found."""
    req = asdict(request) if hasattr(request, "__dataclass_fields__") else dict(request)
    generator = None
    if checkpoint is not None:
        generator = dict(path=str(checkpoint), name=Path(checkpoint).name, sha256=file_sha256(checkpoint),
                         weights=generator_key(G) if G is not None else None)
    argv = sys.argv[1:] if Path(sys.argv[0]).name == "cxr-workbench" else None
    return dict(kind=kind, request=json.loads(json.dumps(req, default=_portable)),
                command=None if argv is None else "cxr-workbench " + " ".join(argv), generator=generator,
                direction=None if u is None and u_source is None else dict(sha256=_direction_sha256(u),
                                                                           source=u_source),
                versions={"cxr-workbench": __version__, "torch": torch.__version__, "numpy": np.__version__,
                          "python": platform.python_version()},
                device=str(device) if device is not None else "cpu", platform=platform.platform(),
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def read_provenance(out_dir) -> dict:
    """The provenance record of the output set in ``out_dir``, or a one-line error."""
    path = Path(out_dir) / PROVENANCE
    if not path.is_file():
        raise ValueError(f"{out_dir} holds no {PROVENANCE}; expected an output set of edit, invert, augment or "
                         "classify made by this version or later")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a provenance record ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict) or "kind" not in data:
        raise ValueError(f"{path}: not a provenance record (no kind and request)")
    return data


def compare_sets(a, b, names) -> list[str]:
    """What differs between the files ``names`` of the sets in folders a and b beyond ``TOLERANCE``:
    one short line per file (empty: the sets agree)."""
    out = []
    for name in names:
        fa, fb = Path(a) / name, Path(b) / name
        if not fb.is_file():
            out.append(f"{name}: not made again")
            continue
        if not fa.is_file():
            out.append(f"{name}: missing from the set")
            continue
        why = _compare_file(fa, fb)
        if why:
            out.append(f"{name}: {why}")
    return out


def _compare_file(fa: Path, fb: Path) -> str | None:
    suffix = fa.suffix.lower()
    if suffix == ".png":
        from PIL import Image
        with Image.open(fa) as ia, Image.open(fb) as ib:
            x, y = np.asarray(ia, dtype=np.float64), np.asarray(ib, dtype=np.float64)
            full = 65535.0 if ia.mode.startswith("I;16") else 255.0
        if x.shape != y.shape:
            return f"{x.shape} vs {y.shape} pixels"
        d = np.abs(x - y).max() / full
        return None if d <= TOLERANCE["image"] else f"pixels differ by up to {d:.1%} of the range"
    if suffix == ".pt":
        return _compare(torch_load(fa, "output file"), torch_load(fb, "output file"), "")
    if suffix == ".json":
        return _compare(json.loads(fa.read_text()), json.loads(fb.read_text()), "")
    if suffix == ".csv":
        import pandas as pd
        return _compare(pd.read_csv(fa).to_dict("list"), pd.read_csv(fb).to_dict("list"), "")
    return None if fa.read_bytes() == fb.read_bytes() else "bytes differ"


def _compare(x, y, where: str) -> str | None:
    """The first difference between two nested values beyond TOLERANCE, or None."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        name = where.rstrip(".") or "tensor"
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.shape != y.shape:
            return f"{name}: shapes differ"
        tol = TOLERANCE["tensor"]
        if not torch.allclose(x.float(), y.float(), atol=tol, rtol=tol, equal_nan=True):
            return f"{name} differs by up to {float((x.float() - y.float()).abs().max()):.3g}"
        return None
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y), key=str):
            if k in UNCOMPARED:
                continue
            if k not in x or k not in y:
                return f"{where}{k}: present in one set only"
            why = _compare(x[k], y[k], f"{where}{k}.")
            if why:
                return why
        return None
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        if len(x) != len(y):
            return f"{where.rstrip('.')}: {len(x)} vs {len(y)} entries"
        for i, (p, q) in enumerate(zip(x, y)):
            why = _compare(p, q, f"{where}{i}.")
            if why:
                return why
        return None
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        if math.isnan(x) and math.isnan(y):
            return None
        if math.isclose(x, y, rel_tol=TOLERANCE["number"], abs_tol=TOLERANCE["tensor"]):
            return None
        return f"{where.rstrip('.')}: {x!r} vs {y!r}"
    return None if x == y else f"{where.rstrip('.')}: {x!r} vs {y!r}"
