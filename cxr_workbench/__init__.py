"""cxr-workbench: disease-aware latent-optimisation editing of chest X-rays with StyleGAN2."""
from pathlib import Path

__version__ = "0.1.0"

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_GENERATOR = DATA_DIR / "generator.pt"


def load_default_generator(device="cpu"):
    """The shipped grayscale generator trained on chest-radiograph phantoms (``data/generator.pt``)."""
    from .checkpoints import load_generator
    if not DEFAULT_GENERATOR.is_file():
        raise FileNotFoundError(f"the shipped generator {DEFAULT_GENERATOR} is missing; "
                                "is this a complete checkout?")
    return load_generator(DEFAULT_GENERATOR, device=device)


DEFAULT_ORACLE = DATA_DIR / "oracle.pt"


def load_default_oracle():
    """The shipped severity oracle (``data/oracle.pt``): CTR, opacity burden, kind, plausibility."""
    from .oracle import load_oracle
    if not DEFAULT_ORACLE.is_file():
        raise FileNotFoundError(f"the shipped oracle {DEFAULT_ORACLE} is missing; is this a complete checkout?")
    return load_oracle(DEFAULT_ORACLE)
