"""The classifier on this machine: MONAI DenseNet121 vs the small MONAI DenseNet (the CPU default),
measured in the same run: training and inference images/s at 64 px, and test AUROC of one
real-only N vs C vs O run at the CPU scale; then the protocol's runs serially vs on a local Dask
cluster of 2 one-thread workers.

    python benchmarks/bench_classify.py [--batch 64] [--steps 5] [--runs 4] [--epochs 12] [--networks small,densenet121]
"""
import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from cxr_workbench.distributed import close, connect, fan_out
from cxr_workbench.studies.classify import CPU_SCALE, make_network, plan_runs, real_data, train_run


def images_per_second(name, batch, steps):
    net = make_network(name, 3)
    opt = torch.optim.Adam(net.parameters())
    x, y = torch.randn(batch, 1, 64, 64), torch.randint(3, [batch])
    for train in (True, False):
        net.train(train)
        t0 = time.perf_counter()
        for _ in range(steps):
            if train:
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    net(x)
        yield batch * steps / (time.perf_counter() - t0)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--runs", type=int, default=4, help="runs for the serial vs Dask comparison")
    p.add_argument("--epochs", type=int, default=CPU_SCALE.epochs)
    p.add_argument("--networks", default="small,densenet121", help="networks timed (the first is the comparison's)")
    args = p.parse_args()
    cfg = replace(CPU_SCALE, epochs=args.epochs)
    data = real_data(cfg)
    print(f"torch threads {torch.get_num_threads()}; CPU scale: {cfg.n_normal} normal, {cfg.n_disease} disease, "
          f"{cfg.n_val}/{cfg.n_test} val/test per class, {cfg.epochs} epochs")
    rates = {}
    names = args.networks.split(",")
    for name in names:
        train_rate, infer_rate = images_per_second(name, args.batch, args.steps)
        params = sum(q.numel() for q in make_network(name, 3).parameters())
        r = train_run(data, {}, replace(cfg, network=name), column="N vs C vs O", n_disease=cfg.n_disease[0],
                      row="real", sigma=None, seed=0)["result"]
        rates[name] = train_rate
        print(f"{name:12s} {params / 1e6:6.2f} M params  train {train_rate:7.0f} img/s  infer {infer_rate:7.0f} img/s  "
              f"real-only N vs C vs O: test AUROC {r['test_auroc']:.3f} in {r['wall_s']:.0f} s", flush=True)
    for name in names[1:]:
        print(f"{names[0]} / {name} training speed: {rates[names[0]] / rates[name]:.1f}x")

    runs = [r for r in plan_runs(cfg) if r["row"] == "real"][:args.runs]
    shared = dict(data=data, aug={}, cfg=cfg)
    t0 = time.perf_counter()
    list(fan_out(train_run, runs, shared, progress=False))
    serial = time.perf_counter() - t0
    client = connect(workers=2)
    t0 = time.perf_counter()
    list(fan_out(train_run, runs, shared, client=client, progress=False))
    remote = time.perf_counter() - t0
    close(client)
    print(f"{len(runs)} protocol runs: serial {serial:.1f} s, 2 Dask workers {remote:.1f} s "
          f"(speed-up {serial / remote:.2f}x)")
