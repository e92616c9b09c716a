"""Choosing where the networks run."""
import pytest
import torch

from cxr_workbench.devices import pick_device


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
