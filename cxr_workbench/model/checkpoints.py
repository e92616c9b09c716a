"""Checkpoints: our own format, the safe dispatch that loads any supported generator, and a
generator's identity (``generator_key``); the importers of other formats are in ``importers.py``.

Our format (``.pt``, written by ``save_checkpoint``) is a plain dict of tensors and builtins,
so ``torch.load(weights_only=True)`` reads it without executing anything::

    {"format": "cxr-workbench/1",
     "kind": "generator" | "training" | "oracle",
     "config": {...Generator kwargs...},
     "G_ema": state_dict, ["G": ..., "D": ..., "opt_G": ..., "opt_D": ..., "state": {...}],
     "model_card": {...training data, kimg, wall time, machine, quality figures...}}

``load_generator`` reads a file once and tells its format by content: ours, rosinality's ``.pt``
(or a bare ``g_ema`` state dict), NVlabs' ``.pkl`` (or a bare ``G_ema`` state dict). A whole pickled
module (``torch.save(G_ema)``) is refused: reading it would run code.
"""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import torch

from cxr_workbench.io import atomic_write, torch_load
from cxr_workbench.model.importers import generator_from_nvlabs, generator_from_rosinality, read_nvlabs_pickle
from cxr_workbench.model.stylegan2 import Generator

__all__ = ["FORMAT", "save_checkpoint", "save_generator", "read_checkpoint", "model_card", "generator_card",
           "card_films", "machine_description", "load_generator", "FORMATS", "generator_key"]

FORMAT = "cxr-workbench/1"


# --------------------------------------------------------------------------------------------
# Our format
# --------------------------------------------------------------------------------------------

def save_checkpoint(path, payload: dict, overwrite: bool = True) -> Path:
    """Atomically ``torch.save`` a dict of tensors/builtins, tagged with our format."""
    data = {"format": FORMAT, **payload}
    return atomic_write(path, lambda f: torch.save(data, f), "wb", overwrite)


def save_generator(path, G: Generator, model_card: dict | None = None, overwrite: bool = True) -> Path:
    """Write ``G`` in our format with its model card."""
    return save_checkpoint(path, {"kind": "generator", "config": G.config,
                                  "G_ema": G.state_dict(), "model_card": model_card or {}}, overwrite)


def _check_file(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder; expected a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def read_checkpoint(path) -> dict:
    """Load one of our checkpoints safely; clear errors for missing, truncated or foreign files."""
    path = _check_file(path)
    return _ours(path, torch_load(path))


def _ours(path: Path, data) -> dict:
    """``data``, read from ``path``, when it is one of our checkpoints."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not in format {FORMAT!r}")
    return data


def model_card(path) -> dict:
    """The model card of one of our checkpoints."""
    return read_checkpoint(path).get("model_card", {})


def generator_card(path) -> dict:
    """The model card of one of our generator files; {} for an imported generator (it has none)."""
    path = _check_file(path)
    data = torch_load(path) if _is_torch_file(path) else None
    return data.get("model_card", {}) if isinstance(data, dict) and data.get("format") == FORMAT else {}


def card_films(card: dict) -> str:
    """The films (``phantom`` or ``drr``) a generator with this model card learned; runs from before
    ``train --source`` learned phantoms."""
    return card.get("train_config", {}).get("source", "phantom")


def machine_description() -> str:
    """This machine in a few words (host, architecture, accelerator), for model cards."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{torch.get_num_threads()}-thread CPU"
    return f"{platform.node() or 'host'} / {platform.processor() or platform.machine()} / {dev}"


# --------------------------------------------------------------------------------------------
# Loading any supported generator
# --------------------------------------------------------------------------------------------

def load_generator(path, format: str = "auto", device: str | torch.device = "cpu") -> Generator:
    """Load a generator from our format, a rosinality ``.pt`` or an NVlabs ``.pkl``.

    ``format``: "auto" (by content), "workbench", "rosinality" or "nvlabs".
    Returns a Generator in eval mode with ``requires_grad`` off.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; expected one of {FORMATS}")
    path = _check_file(path)
    # The file is read once: its torch content (None for an NVlabs pickle stream) goes to the loader.
    data = _torch_checkpoint(path) if _is_torch_file(path) or format in ("workbench", "rosinality") else None
    if format == "auto":
        format = _sniff(path, data)
    try:
        G = _LOADERS[format](path, data)
    except ValueError:
        raise
    except Exception as e:  # any other failure of a reader or of the key mapping: one clear error
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise ValueError(f"{path}: not a usable {format} generator ({type(e).__name__}: {text[:200]})") from None
    return G.eval().requires_grad_(False).to(device)


def _load_workbench(path, data) -> Generator:
    data = _ours(path, data)
    if "G_ema" not in data or "config" not in data:
        raise ValueError(f"{path} holds no generator (kind={data.get('kind')!r})")
    G = Generator(**data["config"])
    G.load_state_dict(data["G_ema"])
    if data.get("model_card", {}).get("train_config"):  # without one, the films it learned are unknown
        G.source = card_films(data["model_card"])
    return G


def _is_rosinality_state(data) -> bool:
    return isinstance(data, dict) and "style.1.weight" in data and "input.input" in data


def _is_nvlabs_state(data) -> bool:
    return isinstance(data, dict) and "mapping.fc0.weight" in data and "synthesis.b4.const" in data


def _load_rosinality(path, data) -> Generator:
    if _is_rosinality_state(data):  # a bare g_ema state dict
        return generator_from_rosinality(data, source=str(path))
    if not isinstance(data, dict) or not isinstance(data.get("g_ema"), dict):
        raise ValueError(f"{path}: no 'g_ema' state dict; not a rosinality stylegan2-pytorch checkpoint")
    return generator_from_rosinality(data["g_ema"], data.get("latent_avg"), source=str(path))


def _load_nvlabs(path, data) -> Generator:
    if data is not None:  # a torch file: torch.save(G_ema.state_dict())
        if not _is_nvlabs_state(data):
            raise ValueError(f"{path}: a torch file without NVlabs G_ema parameters (mapping.fc0.weight, "
                             "synthesis.b4.const); expected an NVlabs network pickle or G_ema state dict")
        return generator_from_nvlabs(data, source=str(path))
    sd, conv_clamp = read_nvlabs_pickle(path)
    return generator_from_nvlabs(sd, conv_clamp, source=str(path))


_LOADERS = {"workbench": _load_workbench, "rosinality": _load_rosinality, "nvlabs": _load_nvlabs}
FORMATS = ("auto", *_LOADERS)

# torch.save's legacy (pre-zip) files open with a pickled magic number, not a network pickle.
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little")


def _is_torch_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_HEAD))
    return head[:2] == b"PK" or head == _LEGACY_TORCH_HEAD


def _torch_checkpoint(path: Path) -> object:
    """torch_load, with what to do instead when the file is a whole pickled module."""
    try:
        return torch_load(path)
    except ValueError as e:
        if "objects other than tensors" not in str(e):
            raise
        raise ValueError(f"{e}; a whole pickled network (torch.save(G_ema)) is not read, as reading it would run "
                         "code: save its weights instead, torch.save(G_ema.state_dict(), path)") from None


def _sniff(path: Path, data) -> str:
    """The format of ``path``, from its torch content ``data`` (None: not a torch file)."""
    if data is None:
        with open(path, "rb") as f:
            if f.read(1) == b"\x80":
                return "nvlabs"  # a bare pickle stream (protocol >= 2)
        raise ValueError(f"{path}: unknown checkpoint format (neither a torch file nor a pickle); "
                         "expected a cxr-workbench .pt, a rosinality .pt or an NVlabs .pkl")
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return "workbench"
    if isinstance(data, dict) and "g_ema" in data or _is_rosinality_state(data):
        return "rosinality"
    if _is_nvlabs_state(data):
        return "nvlabs"
    keys = list(data)[:8] if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path}: unknown checkpoint format (top-level keys {keys}); expected ours "
                     f"('format': {FORMAT!r}), rosinality ('g_ema', or a bare g_ema state dict) or an NVlabs "
                     "G_ema state dict")


def generator_key(G) -> str:
    """Short content hash of a generator's weights: its identity for caches and set manifests.

    Kept on G until a parameter or buffer changes in place (torch counts those changes in
    ``_version``), so a run that asks several times hashes the weights once.
    """
    tensors = sorted(G.state_dict(keep_vars=True).items())
    stamp = tuple((id(t), t._version) for _, t in tensors)
    cached = getattr(G, "_cxr_generator_key", None)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    key = h.hexdigest()[:16]
    object.__setattr__(G, "_cxr_generator_key", (stamp, key))
    return key

