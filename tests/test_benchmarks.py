"""Benchmarks stay runnable (tiny settings); their figures are read by people, not asserted."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_bench_modconv_runs():
    assert "grouped/input" in run("benchmarks/bench_modconv.py", "--repeats", "1", "--batch", "2")


def test_bench_train_runs():
    assert "kimg/h" in run("benchmarks/bench_train.py", "--kimg", "0.064")


def test_bench_invert_runs():
    assert "s/image" in run("benchmarks/bench_invert.py", "--n", "2", "--steps", "2")


def test_bench_phantom_runs():
    assert "render_batch   16" in run("benchmarks/bench_phantom.py", "--n", "64")


def test_bench_slider_runs():
    assert "slider move" in run("benchmarks/bench_slider.py", "--repeats", "2")


def test_bench_optimize_runs():
    out = run("benchmarks/bench_optimize.py", "--refs", "1", "--ref-steps", "2", "--batches", "1")
    assert "speed-up" in out and "R =   1" in out


def test_bench_augment_runs():
    out = run("benchmarks/bench_augment.py", "--refs", "2", "--keep-last", "2", "--max-steps", "2")
    assert "samples/h" in out and "2 Dask workers" in out


def test_bench_classify_runs():
    out = run("benchmarks/bench_classify.py", "--batch", "4", "--steps", "1", "--runs", "2", "--epochs", "1")
    assert "densenet121" in out and "speed-up" in out
