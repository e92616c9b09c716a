"""Forward+backward w.r.t. ws of the shipped-size generator, batch 12, for both modulated-conv
formulations ("input": shared conv with input modulation / output demodulation; "grouped": one
weight per sample). Prints medians and the ratio grouped / input measured in this run.

    python benchmarks/bench_modconv.py [--repeats 7] [--device cpu]
"""
import argparse
import statistics
import time

import torch

from cxr_workbench.model.stylegan2 import Generator


def time_fwd_bwd(G, ws, impl, repeats):
    times = []
    for i in range(repeats + 1):
        w = ws.detach().clone().requires_grad_(True)
        t = time.perf_counter()
        G.synthesis(w, impl=impl).square().mean().backward()
        if ws.device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # first call warms up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=12)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, batch {args.batch}")
    for res in (64, 256):
        torch.manual_seed(0)
        G = Generator(img_resolution=res).to(args.device).requires_grad_(False)
        ws = G.mapping(torch.randn(args.batch, G.z_dim, device=args.device))
        t_in = time_fwd_bwd(G, ws, "input", args.repeats)
        t_gr = time_fwd_bwd(G, ws, "grouped", args.repeats)
        print(f"{res:4d} px: input {t_in * 1000:8.1f} ms   grouped {t_gr * 1000:8.1f} ms   "
              f"grouped/input = {t_gr / t_in:.2f}x")


if __name__ == "__main__":
    main()
