import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep PCA caches out of the user's home during tests."""
    monkeypatch.setenv("CXR_WORKBENCH_CACHE", str(tmp_path / "cache"))
