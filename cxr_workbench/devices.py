"""Where the networks run: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``.

Everything works on CPU; a GPU only makes it faster. On CUDA, TF32 matmuls and convolutions are
turned off: at 64 px they buy little, and with them the edits would differ from the CPU's by
about 1e-3 instead of float rounding.
"""
from __future__ import annotations

import os
import shutil

import torch

__all__ = ["DEVICE_CHOICES", "pick_device", "compile_synthesis"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def pick_device(spec: str | torch.device | None = "auto", dask: bool = False) -> torch.device:
    """The torch device for ``spec`` (None means auto); refuses CUDA where there is none. With
    ``dask`` the work runs on Dask workers, CPU processes: auto means the CPU, CUDA is refused."""
    if dask:
        if spec not in (None, "auto", "cpu"):
            raise ValueError(f"--device {spec} with --workers/--scheduler; the Dask workers run on their CPUs, "
                             "so use one or the other")
        spec = "cpu"
    if spec is None or spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={spec!r}; expected {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={spec!r}; expected {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec!r}, but torch sees no CUDA device here; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={spec!r}; this machine has {torch.cuda.device_count()} CUDA device(s)")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def compile_synthesis(G):
    """Compile G's synthesis network in place with ``torch.compile`` (TorchInductor's fused kernels):
    an optimisation step runs about 1.5x faster on the 2-core dev box (benchmarks/bench_augment.py),
    after about a minute of compiling the first time each kind of call is made (forward with and
    without gradients, a new batch size). The same arithmetic to float rounding. On a CPU Inductor
    builds C++, so a compiler must be there. Returns G."""
    if G.w_avg.device.type == "cpu":
        cxx = os.environ.get("CXX", "g++")
        if shutil.which(cxx) is None:
            raise ValueError(f"--compile on the CPU needs a C++ compiler, and {cxx!r} is not on PATH; "
                             "install g++ (or set CXX), or leave --compile off")
    G.synthesis.compile()
    return G
