"""Speed of one 12-point LO + direction trajectory on the shipped model.

Measures, in one run on this machine:
1. our batched optimiser (all 12 points in one forward/backward, layers 0-5, convergence rule):
   median wall time over a few references;
2. a straightforward reference implementation, as public mask-guided code does it: one latent
   vector at a time, all W+ layers, a fixed 500 Adam steps per point, the same loss terms;
3. the final objective of both, measured the same way (all W+ layers), so the speed-up is
   quoted at equal or better objective;
4. R = 1, 8, 32 references batched: time per reference.

    python benchmarks/bench_optimize.py [--refs 3] [--ref-steps 500]
"""
import argparse
import math
import statistics
import time

import torch

from cxr_workbench import load_default_generator
from cxr_workbench.edit import pca_for
from cxr_workbench.losses import angle_loss, image_loss, spring_loss, target_schedule
from cxr_workbench.masks import preset
from cxr_workbench.optimize import LOConfig, Trajectory, evaluate_objective, optimize_trajectory, reference_latents


def reference_implementation(G, w_ref, box, u, cfg: LOConfig, steps: int) -> Trajectory:
    """One point at a time over all W+ layers; earlier points are frozen when the next is optimised."""
    n, theta = cfg.n, math.radians(cfg.theta_deg)
    u_flat = u.repeat(G.num_ws) / math.sqrt(G.num_ws)
    ref_flat = w_ref.reshape(1, -1)
    with torch.no_grad():
        x_ref = G.synthesis(w_ref)
    targets = target_schedule(cfg.c, n, cfg.schedule)
    done = []
    t0 = time.perf_counter()
    for i in range(n):
        start = done[-1] if done else w_ref[0]
        w = (start + cfg.sigma * u.reshape(1, -1)).clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.lr)
        for _ in range(steps):
            img = G.synthesis(w[None])
            loss = cfg.alpha * image_loss(x_ref, img[:, None], box, targets[i:i + 1], cfg.distance).sum()
            pts = torch.stack(done[-2:] + [w]).reshape(1, -1, ref_flat.shape[1])
            loss = loss + cfg.beta * spring_loss(pts[:, -2:], 1, cfg.sigma).sum()
            loss = loss + cfg.gamma * (spring_loss(pts[:, -3::2], 1, 2 * cfg.sigma).sum() if len(done) >= 2 else 0)
            loss = loss + cfg.delta * angle_loss(w.reshape(1, 1, -1), ref_flat, u_flat, theta, cfg.angle_form).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        done.append(w.detach())
    points = torch.stack(done)[None]
    with torch.no_grad():
        images = G.synthesis(points[0])[None]
    return Trajectory(method="lo+dir", w_ref=w_ref, points=points, reference_images=x_ref, images=images,
                      config=cfg, steps=steps * n, status="max_steps", wall_time=time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--refs", type=int, default=3, help="references timed for the single-trajectory median")
    p.add_argument("--ref-steps", type=int, default=500)
    p.add_argument("--batches", default="1,8,32")
    args = p.parse_args()
    torch.manual_seed(0)
    G = load_default_generator()
    box = preset("heart", G.img_resolution)
    pca = pca_for(G)
    u = pca.direction(0)
    cfg = LOConfig()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shipped {G.img_resolution}px generator, "
          f"heart box, u = PC 0, n = {cfg.n}, layers {cfg.layers}")

    ours, objs = [], []
    for s in range(args.refs):
        w = reference_latents(G, [s])
        t = time.perf_counter()
        traj = optimize_trajectory(G, w, box, u=u, config=cfg, progress=False)
        ours.append(time.perf_counter() - t)
        objs.append(evaluate_objective(G, traj, box, u)["total"])
        print(f"  ours, seed {s}: {ours[-1]:.2f} s, {traj.steps} steps ({traj.status}), objective {objs[-1]:.4f}")
    w = reference_latents(G, [0])
    ref = reference_implementation(G, w, box, u, cfg, args.ref_steps)
    ref_obj = evaluate_objective(G, ref, box, u)["total"]
    print(f"  reference (one vector at a time, all layers, {args.ref_steps} steps/point): "
          f"{ref.wall_time:.1f} s, objective {ref_obj:.4f}")
    med = statistics.median(ours)
    print(f"single trajectory: median {med:.2f} s (target <= 10 s); reference {ref.wall_time:.1f} s; "
          f"speed-up {ref.wall_time / med:.1f}x; objective ours(seed 0) {objs[0]:.4f} vs reference {ref_obj:.4f} "
          f"({'equal or better' if objs[0] <= ref_obj else 'WORSE'})")

    for R in (int(b) for b in args.batches.split(",")):
        w = reference_latents(G, range(R))
        t = time.perf_counter()
        traj = optimize_trajectory(G, w, box, u=u, config=cfg, progress=False)
        dt = time.perf_counter() - t
        print(f"R = {R:3d} references batched: {dt:.1f} s total, {dt / R:.2f} s per reference, {traj.steps} steps")


if __name__ == "__main__":
    main()
