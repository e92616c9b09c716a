"""The shipped assets: the default generator, its PCA of W, the severity oracle, and where they live.

They are in the ``data/`` folder of a checkout (beside the package), so the package needs an
editable install (``pip install -e .``) or ``CXR_WORKBENCH_DATA`` pointing at such a folder.
Generators other than the shipped one get their PCA computed once and cached.
"""
from __future__ import annotations

import os
from pathlib import Path

from cxr_workbench.io import cache_dir

__all__ = ["DATA_DIR", "DRR_DATA_DIR", "DEFAULT_GENERATOR", "DEFAULT_ORACLE", "DEFAULT_PCA", "load_default_generator",
           "load_default_oracle", "generator_or_default", "oracle_or_default", "load_reader", "pca_for", "oracle_for"]

DATA_DIR = Path(os.environ.get("CXR_WORKBENCH_DATA") or Path(__file__).resolve().parent.parent / "data")
DEFAULT_GENERATOR = DATA_DIR / "generator.pt"
DEFAULT_ORACLE = DATA_DIR / "oracle.pt"
DEFAULT_PCA = DATA_DIR / "pca.pt"
# The generator learning DRRs (issue 37), shipped with its set in data/drr/ at the end of each stretch of
# training (a run folder does not outlive a checkout); the default once its card meets the targets.
DRR_DATA_DIR = DATA_DIR / "drr"


def _shipped(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"the shipped {what} {path} is missing; cxr-workbench reads data/ from a checkout "
                                "(install with `pip install -e .` or set CXR_WORKBENCH_DATA to the data folder)")
    return path


def load_default_generator(device="cpu"):
    """The shipped grayscale generator trained on chest-radiograph phantoms (``data/generator.pt``)."""
    from cxr_workbench.model.checkpoints import load_generator
    return load_generator(_shipped(DEFAULT_GENERATOR, "generator"), device=device)


def load_default_oracle():
    """The shipped severity oracle (``data/oracle.pt``): CTR, opacity burden, kind, plausibility."""
    from cxr_workbench.model.oracle import load_oracle
    return load_oracle(_shipped(DEFAULT_ORACLE, "oracle"))


def generator_or_default(path=None, device="cpu"):
    """The generator in ``path`` (any format ``load_generator`` reads), or the shipped one."""
    from cxr_workbench.model.checkpoints import load_generator
    return load_default_generator(device) if path is None else load_generator(path, device=device)


def oracle_or_default(path=None):
    """The oracle in ``path`` (``load_oracle``), or the shipped one."""
    from cxr_workbench.model.oracle import load_oracle
    return load_default_oracle() if path is None else load_oracle(path)


def load_reader(spec: str = "oracle"):
    """The reader a spec names (``readers.READER_SPECS``): ``oracle`` is the shipped one."""
    from cxr_workbench.model.readers import OracleReader, monai_reader, reader_from_file
    if spec == "oracle":
        return OracleReader(load_default_oracle())
    if str(spec).startswith("monai:"):
        return monai_reader(spec)
    return reader_from_file(spec)


def pca_for(G, n_samples: int = 20000):
    """The shipped PCA when G is the shipped generator, else a PCA computed once and cached."""
    from cxr_workbench.method.pca import WPCA, compute_pca
    from cxr_workbench.model.checkpoints import generator_key
    if DEFAULT_PCA.is_file():
        shipped = WPCA.load(DEFAULT_PCA)
        if shipped.generator_key == generator_key(G):
            return shipped
    return compute_pca(G, n_samples=n_samples, cache_dir=cache_dir())


def oracle_for(G, shipped=None):
    """The shipped oracle if it reads images of G's size and channels, else None; ``shipped``: the
    shipped oracle when the caller has loaded it already."""
    if not DEFAULT_ORACLE.is_file() or G.img_channels != 1:
        return None
    oracle = shipped if shipped is not None else load_default_oracle()
    return oracle if oracle.resolution == G.img_resolution else None
