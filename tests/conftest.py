import pytest
import torch

from cxr_workbench.model.stylegan2 import Generator


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep PCA caches out of the user's home during tests."""
    monkeypatch.setenv("CXR_WORKBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache of searched directions for the tests that run the same search on the shipped
    generator (notebook 02 headless and in the browser, the README driver): the search itself is
    tested in test_directions, these tests need only its answer."""
    return tmp_path_factory.mktemp("shared-cache")


def tiny_generator(**kw) -> Generator:
    """A small random generator, the same for the same settings (16 px, 8-dim latents by default)."""
    torch.manual_seed(0)
    settings = {**dict(img_resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_max=16), **kw}
    return Generator(**settings).eval().requires_grad_(False)
