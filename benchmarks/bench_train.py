"""Training throughput of the shipped architecture (64 px, TrainConfig defaults) on this machine:
kimg/h of the polyphase up-convolution in the contiguous layout (the reference) against the
transposed up-convolution, then channels-last G and D (the current CPU default), and with bf16
autocast, measured in the same run, plus the achieved FLOP/s as a share of this CPU's fp32 matmul
FLOP/s.

    python benchmarks/bench_train.py [--kimg 0.64] [--threads 2] [--variants 1,2,3,4] [--resolution 64]
                                     [--channel-base 1024]

``--resolution 128`` measures the same architecture at 128 px (one more block in G and D), and
``--channel-base 2048`` one twice as wide at 32 px and above; run them beside the default to compare
what a larger network costs.
"""
import argparse
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cxr_workbench.imaging.datasets import TruthDataset
from cxr_workbench.model import stylegan2
from cxr_workbench.model.train import TrainConfig, train

VARIANTS = (("polyphase, fp32, contiguous (reference)", "polyphase", False, False),
            ("transpose, fp32", "transpose", False, False),
            ("transpose, fp32, channels-last (default)", "transpose", False, True),
            ("transpose, bf16, channels-last", "transpose", True, True))


def kimg_per_hour(cfg, images, kimg, amp, channels_last) -> float:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        train(cfg, d, images=images, progress=False, stop_after_kimg=kimg, amp=amp, channels_last=channels_last)
        return kimg / (time.perf_counter() - t) * 3600


def matmul_flops(n=1024, repeats=20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)


def flops_per_image(cfg) -> float:
    """FLOPs of one G step and one D step (forward and backward), per real image."""
    G = stylegan2.Generator(**cfg.generator_kwargs())
    D = stylegan2.Discriminator(img_resolution=cfg.resolution, img_channels=1, channel_base=cfg.channel_base,
                                channel_max=cfg.channel_max)
    z = torch.randn(cfg.batch, cfg.z_dim)
    with FlopCounterMode(display=False) as counter:
        D(G(z, noise_mode="random")).sum().backward()             # G step
        D(G(z).detach()).sum().backward()                          # D step: fake ...
        D(torch.randn(cfg.batch, 1, cfg.resolution, cfg.resolution)).sum().backward()  # ... and real
    return counter.get_total_flops() / cfg.batch


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kimg", type=float, default=0.64, help="thousands of images per variant")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--variants", default="1,2,3,4", help="which of VARIANTS (the first is the reference)")
    p.add_argument("--resolution", type=int, default=TrainConfig.resolution)
    p.add_argument("--channel-base", type=int, default=TrainConfig.channel_base)
    args = p.parse_args()
    variants = [VARIANTS[int(k) - 1] for k in args.variants.split(",")]
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(resolution=args.resolution, channel_base=args.channel_base,
                      snapshot_kimg=1000.0)  # no snapshot inside the timing
    images = TruthDataset(512, cfg.resolution, seed=0).images_tensor()
    peak = matmul_flops()
    per_image = flops_per_image(cfg)
    kimg_per_hour(cfg, images, 0.064, False, True)  # warm-up
    print(f"{cfg.resolution} px, channel base {cfg.channel_base}; torch {torch.__version__}, {args.threads} threads; "
          f"fp32 matmul {peak / 1e9:.0f} GFLOP/s; {per_image / 1e9:.2f} GFLOP per image (G + D steps, R1 excluded)")
    rates = {}
    for label, upconv, amp, channels_last in variants:
        stylegan2.UPCONV["impl"] = upconv
        rates[label] = kimg_per_hour(cfg, images, args.kimg, amp, channels_last)
        share = rates[label] * 1000 / 3600 * per_image / peak
        print(f"{label:42s} {rates[label]:7.1f} kimg/h  ({rates[label] / rates[variants[0][0]]:.2f}x the reference; "
              f"{share:.0%} of matmul FLOP/s)")
    stylegan2.UPCONV["impl"] = "transpose"
