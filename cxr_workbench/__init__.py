"""cxr-workbench: disease-aware latent-optimisation editing of chest X-rays with StyleGAN2.

Where things live: docs/architecture.md. The method as implemented: docs/method.md.
"""
__version__ = "0.1.0"
