"""Choosing where the networks run, and compiling the generator."""
import os
import shutil

import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.devices import compile_synthesis, pick_device


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None) == pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu", "cuda:x", "meta"):
        with pytest.raises(ValueError, match=f"device='{bad}'"):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_dask_workers_run_on_their_cpus():
    assert pick_device("auto", dask=True) == pick_device("cpu", dask=True) == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda with --workers"):
        pick_device("cuda", dask=True)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="Inductor needs a C++ compiler")
def test_compiled_generator_edits_as_the_eager_one():
    """A few LO + direction steps through the compiled synthesis land where the eager ones do."""
    from cxr_workbench.imaging.masks import Box
    from cxr_workbench.method.optimize import LOConfig, optimize_trajectory
    G = tiny_generator()
    w = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
    box, u = Box(4, 4, 12, 12, 16), torch.nn.functional.normalize(torch.ones(G.w_dim), dim=0)
    config = LOConfig(n=4, max_steps=5, layers=(0, 1, 2))
    eager = optimize_trajectory(G, w, box, u=u, config=config, progress=False)
    compiled = optimize_trajectory(compile_synthesis(tiny_generator()), w, box, u=u, config=config, progress=False)
    assert compiled.steps == eager.steps == 5
    torch.testing.assert_close(compiled.points, eager.points, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-4, rtol=1e-4)


def test_compile_without_a_compiler_is_refused(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(ValueError, match="'no-such-compiler-here' is not on PATH"):
        compile_synthesis(tiny_generator())
