"""The shipped assets: the generators, each with its PCA of W and the severity oracle of its films,
and where they live.

They are in the ``data/`` folder of a checkout (beside the package), so the package needs an
editable install (``pip install -e .``) or ``CXR_WORKBENCH_DATA`` pointing at such a folder.
A shipped generator is named by the films it learned (``SHIPPED``): ``--checkpoint drr`` wherever a
generator is chosen. Generators other than the shipped ones get their PCA computed once and cached.
"""
from __future__ import annotations

import os
from pathlib import Path

from cxr_workbench.io import cache_dir

__all__ = ["DATA_DIR", "SHIPPED", "DEFAULT_FILMS", "DRR_DATA_DIR", "DEFAULT_GENERATOR", "DEFAULT_ORACLE",
           "DEFAULT_PCA", "shipped_generator", "load_default_generator", "load_default_oracle", "generator_or_default",
           "shipped_oracle", "oracle_or_default", "films_of", "load_reader", "pca_for", "oracle_for"]

DATA_DIR = Path(os.environ.get("CXR_WORKBENCH_DATA") or Path(__file__).resolve().parent.parent / "data")
# Each shipped folder holds generator.pt, pca.pt (its PCA of W) and oracle.pt (the oracle of its films).
# The default is the generator of DRRs of a real chest CT (its card met the targets of issue 37); the
# generator of procedural phantoms that came first stays loadable by name (``--checkpoint phantom``).
SHIPPED = {"phantom": DATA_DIR, "drr": DATA_DIR / "drr"}
DEFAULT_FILMS = "drr"
DRR_DATA_DIR = SHIPPED["drr"]
DEFAULT_GENERATOR = SHIPPED[DEFAULT_FILMS] / "generator.pt"
DEFAULT_ORACLE = SHIPPED[DEFAULT_FILMS] / "oracle.pt"
DEFAULT_PCA = SHIPPED[DEFAULT_FILMS] / "pca.pt"


def shipped_generator(name_or_path) -> Path:
    """The file of a shipped generator named by its films (``SHIPPED``), or ``name_or_path`` as a path."""
    if str(name_or_path) in SHIPPED:
        return _shipped(SHIPPED[str(name_or_path)] / "generator.pt", f"{name_or_path} generator")
    if not Path(name_or_path).exists():
        raise FileNotFoundError(f"checkpoint {name_or_path}: no such file; expected a generator file or a shipped "
                                f"generator's name ({', '.join(SHIPPED)})")
    return Path(name_or_path)


def _shipped(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"the shipped {what} {path} is missing; cxr-workbench reads data/ from a checkout "
                                "(install with `pip install -e .` or set CXR_WORKBENCH_DATA to the data folder)")
    return path


def load_default_generator(device="cpu"):
    """The default shipped generator (``DEFAULT_FILMS``: the one of DRRs, ``data/drr/generator.pt``)."""
    from cxr_workbench.model.checkpoints import load_generator
    return load_generator(_shipped(DEFAULT_GENERATOR, "generator"), device=device)


def load_default_oracle():
    """The default generator's severity oracle (``data/drr/oracle.pt``): CTR, opacity burden, kind, plausibility."""
    from cxr_workbench.model.oracle import load_oracle
    return load_oracle(_shipped(DEFAULT_ORACLE, "oracle"))


def generator_or_default(path=None, device="cpu"):
    """The generator in ``path`` (any format ``load_generator`` reads, or a shipped one's name), or the default."""
    from cxr_workbench.model.checkpoints import load_generator
    return load_default_generator(device) if path is None else load_generator(shipped_generator(path), device=device)


def shipped_oracle(G=None, films: str | None = None):
    """The shipped oracle of the films G learned (the default's for an imported generator or without G),
    or of ``films`` (a ``SHIPPED`` name) when given."""
    from cxr_workbench.model.oracle import load_oracle
    films = films or (DEFAULT_FILMS if G is None else films_of(G))
    return load_oracle(_shipped(SHIPPED[films] / "oracle.pt", f"oracle of the {films} films"))


def oracle_or_default(path=None, G=None):
    """The oracle in ``path`` (``load_oracle``), or the shipped one of G's films (``shipped_oracle``)."""
    from cxr_workbench.model.oracle import load_oracle
    return shipped_oracle(G) if path is None else load_oracle(path)


def films_of(G) -> str:
    """The films G learned (a ``SHIPPED`` name): its own, the default's for an imported generator."""
    return getattr(G, "source", None) or DEFAULT_FILMS


def load_reader(spec: str = "oracle", G=None):
    """The reader a spec names (``readers.READER_SPECS``): ``oracle`` is the shipped oracle of the films G
    learned (the default's without G). An oracle file of other films than G's is refused: it would read
    G's images wrongly without a word."""
    from cxr_workbench.model.readers import OracleReader, monai_reader, reader_from_file
    if spec == "oracle":
        return OracleReader(shipped_oracle(G))
    if str(spec).startswith("monai:"):
        return monai_reader(spec)
    reader = reader_from_file(spec)
    learned = getattr(getattr(reader, "oracle", None), "source", None)
    if G is not None and getattr(G, "source", None) and learned and learned != G.source:
        raise ValueError(f"reader {spec} is an oracle of {learned} films, the generator learned {G.source} films; "
                         "expected an oracle of the generator's films (or --reader oracle)")
    return reader


def pca_for(G, n_samples: int = 20000):
    """The shipped PCA when G is a shipped generator, else a PCA computed once and cached."""
    from cxr_workbench.method.pca import WPCA, compute_pca
    from cxr_workbench.model.checkpoints import generator_key
    for folder in SHIPPED.values():
        if (folder / "pca.pt").is_file():
            shipped = WPCA.load(folder / "pca.pt")
            if shipped.generator_key == generator_key(G):
                return shipped
    return compute_pca(G, n_samples=n_samples, cache_dir=cache_dir())


def oracle_for(G, loaded=None):
    """The shipped oracle of the films G learned (the default's for an imported generator) if it reads
    images of G's size and channels, else None; ``loaded``: that oracle when the caller has it already."""
    if not (SHIPPED[films_of(G)] / "oracle.pt").is_file() or G.img_channels != 1:
        return None
    oracle = loaded if loaded is not None else shipped_oracle(G)
    return oracle if oracle.resolution == G.img_resolution else None
