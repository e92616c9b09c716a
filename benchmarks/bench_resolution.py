"""Speed of one 12-point LO + direction trajectory at real film sizes, against the shipped 64 px model.

Generators with random weights and the widths of NVlabs' StyleGAN2 (config F: z = w = 512, an
8-layer mapping, channels min(32768 / res, 512)) at each size asked; the shipped 64 px generator is
the reference, measured in the same run. For each: seconds per optimisation step of a batch of
references (forward and backward of its 12 images each, after one warm-up step), the references
per second that makes, and one trajectory's projected time at the number of steps the 64 px
default takes on the same reference (its plateau rule stops there; a larger model of the same
films would stop near it). The activation memory of one image (``optimize.activation_bytes``)
and the references one loop then holds within ``optimize.BATCH_MEMORY`` are printed too.

    python benchmarks/bench_resolution.py [--sizes 256,1024] [--refs 1] [--steps 2] [--device cpu] [--ref-steps 300]
"""
import argparse
import time

import torch

from cxr_workbench.assets import load_default_generator, pca_for
from cxr_workbench.imaging.masks import preset
from cxr_workbench.method.optimize import LOConfig, activation_bytes, optimize_trajectory, references_per_loop
from cxr_workbench.method.pca import suggest_direction
from cxr_workbench.model.latents import reference_latents
from cxr_workbench.model.stylegan2 import Generator


def seconds_per_step(G, refs: int, steps: int, u, box, device) -> float:
    w_ref = reference_latents(G, range(refs)).to(device)
    cfg = LOConfig(max_steps=1, min_steps=0)
    optimize_trajectory(G, w_ref, box, u=u, config=cfg, progress=False)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    traj = optimize_trajectory(G, w_ref, box, u=u, config=LOConfig(max_steps=steps, min_steps=steps), progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / traj.steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="256,1024", help="generator sizes to measure, e.g. 256 or 256,1024")
    p.add_argument("--refs", type=int, default=1, help="references optimised together")
    p.add_argument("--steps", type=int, default=2, help="timed steps per size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ref-steps", type=int, default=LOConfig().max_steps,
                   help="step cap of the 64 px trajectory whose step count is projected")
    args = p.parse_args()
    device = torch.device(args.device)
    G64 = load_default_generator(device=device)
    cfg = LOConfig()
    box64 = preset("heart", 64)
    u, best, _ = suggest_direction(G64, pca_for(G64), box64, "cardiomegaly", layers=cfg.layers)
    full = optimize_trajectory(G64, reference_latents(G64, [0]).to(device), box64, u=u,
                               config=LOConfig(max_steps=args.ref_steps), progress=False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()}-thread CPU"
    print(f"torch {torch.__version__}, {name}; {args.refs} reference(s) a batch, n = {cfg.n} points; the 64 px "
          f"default takes {full.steps} steps on seed 0 ({full.wall_time:.1f} s)")
    base = seconds_per_step(G64, args.refs, args.steps, u, box64, device)
    print(f"{'size':>5} {'params':>8} {'act. MB/img':>11} {'refs/loop':>9} {'s/step':>8} {'traj/s':>8} "
          f"{'trajectory':>11} {'x 64 px':>8}")

    def row(size, G, s):
        print(f"{size:5d} {sum(q.numel() for q in G.parameters()) / 1e6:7.1f}M "
              f"{activation_bytes(G) / 2 ** 20:11.1f} {references_per_loop(G, cfg.n):9d} {s:8.3f} "
              f"{args.refs / (s * full.steps):8.4f} {s * full.steps / 60:9.1f} min {s / base:8.1f}")
    row(64, G64, base)
    for size in map(int, args.sizes.split(",")):
        torch.manual_seed(0)
        G = Generator(img_resolution=size, z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768,
                      channel_max=512).eval().requires_grad_(False).to(device)
        e0 = torch.eye(G.w_dim)[0]  # the 64 px u has another width: a unit direction stands in for it
        row(size, G, seconds_per_step(G, args.refs, args.steps, e0, preset("heart", size), device))


if __name__ == "__main__":
    main()
