"""The networks: StyleGAN2, checkpoints and importers, W+ latents, training, the severity oracle."""
