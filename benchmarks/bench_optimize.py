"""Speed of one 12-point LO + direction trajectory on the shipped model.

Measures, in one run on this machine:
1. our batched optimiser (all 12 points in one forward/backward, plateau rule with lr drops):
   median wall time over a few references, with the default config and with ``lr_drops=0``
   (stop at the first plateau: faster, a little higher objective);
2. a straightforward reference implementation, as public mask-guided code does it: one latent
   vector at a time, all W+ layers free, a fixed 500 Adam steps per point;
3. the final objective of both on the same reference seeds. Both minimise the same objective
   (Eq. 3 + Eq. 4 with springs and angle measured on the config's layers), and both are scored
   with it, so the speed-up is quoted at equal or better objective. The reference's extra
   freedom (layers outside the config's) can only help it;
4. R = 1, 8, 32 references batched: time per reference.

    python benchmarks/bench_optimize.py [--refs 3] [--ref-steps 500] [--batches 1,8,32] [--max-steps N]
"""
import argparse
import statistics
import time
from dataclasses import replace

import torch

from cxr_workbench.assets import load_default_generator, pca_for
from cxr_workbench.imaging.masks import box_masks, preset
from cxr_workbench.method.losses import spring_loss, target_schedule
from cxr_workbench.method.optimize import LOConfig, Trajectory, evaluate_objective, objective_terms, optimize_trajectory
from cxr_workbench.method.pca import suggest_direction
from cxr_workbench.model.latents import check_layers, direction_on_layers, flatten_layers, reference_latents


def reference_implementation(G, w_ref, box, u, cfg: LOConfig, steps: int) -> Trajectory:
    """Points one at a time, each a full W+ vector, a fixed number of Adam steps each; earlier
    points are frozen while the next one is optimised. w_ref: [1, num_ws, w_dim]."""
    layers = check_layers(cfg.layers, G.num_ws)
    def flat(w):
        return flatten_layers(w, layers)
    u_flat, ref_flat = direction_on_layers(u, layers), flat(w_ref)
    step = torch.zeros_like(w_ref[0])
    step[layers] = cfg.sigma * u_flat.reshape(len(layers), -1)  # one rest length along u
    with torch.no_grad():
        x_ref = G.synthesis(w_ref)
    targets = target_schedule(cfg.c, cfg.n, cfg.schedule)
    mask = box_masks(box, 1, G.img_resolution)
    done = []
    t0 = time.perf_counter()
    for i in range(cfg.n):
        w = ((done[-1] if done else w_ref[0]) + step).clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.lr)
        own = replace(cfg, c=float(targets[i]), schedule="constant")  # point i's own in-box target
        for _ in range(steps):
            img = G.synthesis(w[None])[:, None]                    # [1, 1, C, H, W]
            pts = flat(torch.stack(done[-2:] + [w])[None])         # [1, <=3, D]: the points i-2..i
            # The terms of Eqs. 3-4 that involve point i: its image, its angle, its springs to i-1, i-2.
            terms = objective_terms(x_ref, img, mask, pts[:, -1:], ref_flat, u_flat, own)
            loss = (cfg.alpha * terms["image"] + cfg.delta * terms["angle"]
                    + cfg.beta * spring_loss(pts[:, -2:], 1, cfg.sigma) + cfg.gamma * spring_loss(pts, 2, cfg.sigma))
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        done.append(w.detach())
    points = torch.stack(done)[None]
    with torch.no_grad():
        images = G.synthesis(points[0])[None]
    return Trajectory(method="lo+dir", w_ref=w_ref, points=points, reference_images=x_ref, images=images,
                      config=cfg, steps=steps * cfg.n, status="max_steps", wall_time=time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--refs", type=int, default=3, help="references timed for the single-trajectory median")
    p.add_argument("--ref-steps", type=int, default=500, help="Adam steps per point of the reference")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--max-steps", type=int, default=None, help="cap ours' steps (a smoke run only)")
    args = p.parse_args()
    G = load_default_generator()
    box = preset("heart", G.img_resolution)
    cfg = LOConfig() if args.max_steps is None else LOConfig(max_steps=args.max_steps, min_steps=0)
    u, best, _ = suggest_direction(G, pca_for(G), box, "cardiomegaly", layers=cfg.layers)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shipped {G.img_resolution}px generator, "
          f"heart box, u = PC {best['pc']}, n = {cfg.n}, layers {cfg.layers}")
    def score(traj):
        return evaluate_objective(G, traj, box, u, cfg.layers)["total"]

    # The default config, and the fast setting that stops at the first plateau (no lr drops).
    timed = {}
    for label, c in (("default", cfg), ("lr_drops=0", replace(cfg, lr_drops=0))):
        times, objs = [], []
        for s in range(args.refs):
            t = time.perf_counter()
            traj = optimize_trajectory(G, reference_latents(G, [s]), box, u=u, config=c, progress=False)
            times.append(time.perf_counter() - t)
            objs.append(score(traj))
            print(f"  ours ({label}), seed {s}: {times[-1]:.2f} s, {traj.steps} steps ({traj.status}), "
                  f"objective {objs[-1]:.4f}", flush=True)
        timed[label] = times, objs
    ref = reference_implementation(G, reference_latents(G, [0]), box, u, cfg, args.ref_steps)
    ref_obj = score(ref)
    print(f"  reference, seed 0 (one vector at a time, all layers free, {args.ref_steps} steps/point): "
          f"{ref.wall_time:.1f} s, objective {ref_obj:.4f}")
    for label, (times, objs) in timed.items():
        print(f"single trajectory ({label}): median {statistics.median(times):.2f} s (target <= 10 s); "
              f"speed-up {ref.wall_time / times[0]:.1f}x on seed 0; objective ours {objs[0]:.4f} vs reference "
              f"{ref_obj:.4f} ({'equal or better' if objs[0] <= ref_obj else 'WORSE'})")

    for R in (int(b) for b in args.batches.split(",")):
        w = reference_latents(G, range(R))
        t = time.perf_counter()
        traj = optimize_trajectory(G, w, box, u=u, config=cfg, progress=False)
        dt = time.perf_counter() - t
        print(f"R = {R:3d} references batched: {dt:.1f} s total, {dt / R:.2f} s per reference, {traj.steps} steps",
              flush=True)


if __name__ == "__main__":
    main()
