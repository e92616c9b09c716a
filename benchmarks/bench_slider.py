"""PC-browser responsiveness on the shipped model: time from a slider move to the new picture
(target: 0.3 s on 2 CPU cores), against a full refresh (picture + strip + PC ranking) measured in
the same run.

    python benchmarks/bench_slider.py [--repeats 15]
"""
import argparse
import statistics
import time

import torch

from cxr_workbench.assets import load_default_generator, pca_for
from cxr_workbench.imaging.masks import preset
from cxr_workbench.model.latents import reference_latents
from cxr_workbench.ui.widgets import PCBrowser


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    G = load_default_generator()
    browser = PCBrowser(G, pca_for(G), reference_latents(G, [0])[0], box=preset("heart", G.img_resolution))
    values = iter([(-1) ** i * (i % 6) * 0.5 for i in range(10 ** 6)])
    slider = timed(lambda: setattr(browser.sliders[0], "value", next(values)), args.repeats)
    full = timed(browser.refresh, max(3, args.repeats // 5))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"slider move -> picture: median {slider * 1000:.1f} ms (budget 300 ms: {slider / 0.3:.2f} of it)")
    print(f"full refresh (picture + strip + ranking of 10 PCs): median {full * 1000:.1f} ms "
          f"({full / slider:.1f}x a slider move)")
