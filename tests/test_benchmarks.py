"""Benchmarks stay runnable (tiny settings); their figures are read by people, not asserted."""
import json
import os
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
    assert "kimg/h" in run("benchmarks/bench_train.py", "--kimg", "0.064", "--variants", "1,3")


def test_bench_invert_runs():
    assert "drrs       w+" in run("benchmarks/bench_invert.py", "--n", "2", "--steps", "2")
    # the phantom generator by name brings the phantom oracle, and with it fresh phantoms to invert
    assert "phantoms   w+" in run("benchmarks/bench_invert.py", "--n", "2", "--steps", "2", "--checkpoint", "phantom")


def test_bench_phantom_runs():
    assert "render_batch   16" in run("benchmarks/bench_phantom.py", "--n", "64")


def test_bench_resolution_runs():
    out = run("benchmarks/bench_resolution.py", "--sizes", "32", "--steps", "1", "--ref-steps", "2")
    assert "x 64 px" in out and out.count(" min ") == 2


def test_bench_slider_runs():
    assert "slider move" in run("benchmarks/bench_slider.py", "--repeats", "2")


def test_bench_interactive_runs():
    out = run("benchmarks/bench_interactive.py", "--seeds", "0", "--diseases", "cardiomegaly", "--max-steps", "3",
              "--no-compile")
    assert "fast: median" in out and "cardiomegaly fast" in out


def test_bench_optimize_runs():
    out = run("benchmarks/bench_optimize.py", "--refs", "1", "--ref-steps", "2", "--batches", "1", "--max-steps", "3")
    assert "speed-up" in out and "R =   1" in out


def test_bench_augment_runs():
    # not the compiled variant: compiling the generator takes minutes (test_devices compiles a tiny one)
    out = run("benchmarks/bench_augment.py", "--refs", "2", "--keep-last", "2", "--max-steps", "2",
              "--variants", "3,6")
    assert "samples/h" in out and "2 Dask workers" in out and "spring length" in out


def test_bench_classify_runs():
    out = run("benchmarks/bench_classify.py", "--batch", "4", "--steps", "1", "--runs", "2", "--epochs", "1",
              "--networks", "small")  # densenet121 trains for a minute even at this size
    assert "small " in out and "speed-up" in out


def test_direction_scoreboard_runs():
    out = run("benchmarks/directions.py", "--specs", "auto,sefa", "--unseen", "100")
    # the default is conditional on the kind: the class direction toward each disease joins the specs
    assert out.count("| cardiomegaly | heart |") == 3 and "| opacity | lung_lower_right | sefa" in out
    assert "| cardiomegaly | heart | kind: toward class 1, cardiomegaly |" in out and "read as the disease at 12" in out


def test_readme_results_runs(tmp_path, shared_cache):
    """The driver of every README table, at one reference, 4 samples a set and 3 steps."""
    import pandas as pd
    env = dict(os.environ, CXR_WORKBENCH_CACHE=str(shared_cache),
               SEEDS="1", SAMPLES="4", MAX_STEPS="3", DIRECTIONS="auto", PY=sys.executable,
               SET_SIGMAS="0.3", SET_ARGS="--keep-last 2 --points spread --vary-box",  # 3 steps: no label check
               CXR=str(Path(sys.executable).parent / "cxr-workbench"), OMP_NUM_THREADS="1",
               CLS_ARGS="--n-normal 8 --n-disease 2 --n-aug 4 --n-val 4 --n-test 4 --epochs 1 --seeds 1")
    out = subprocess.run(["bash", "benchmarks/readme_results.sh", str(tmp_path), "cpu", "1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr + "".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))
    names = ("t2_ours", "t2_literal", "t2_u_auto")
    rows = {name: len(pd.read_csv(tmp_path / f"{name}.csv")) for name in names}
    assert rows == dict(t2_ours=12, t2_literal=4, t2_u_auto=2)  # cells x 1 reference
    for sigma in ("0.3",):
        for disease in ("cardiomegaly", "opacity"):
            assert len(pd.read_csv(tmp_path / "aug" / f"{disease}_s{sigma}" / "manifest.csv")) == 4
            head = json.loads((tmp_path / "aug" / f"{disease}_s{sigma}" / "set.json").read_text())
            assert f"kind: toward class {1 if disease == 'cardiomegaly' else 2}, {disease}" in head["u_source"]
    assert "N vs C vs O" in (tmp_path / "cls" / "table.txt").read_text()


def test_quality_of_a_generator_in_training_runs(tmp_path):
    from conftest import tiny_generator

    from cxr_workbench.model.checkpoints import save_generator
    save_generator(tmp_path / "g.pt", tiny_generator())  # 16 px, no card: measured as the default's films
    g = str(tmp_path / "g.pt")
    out = run("benchmarks/quality.py", "--n", "64", "--checkpoint", g, "--oracle", "data/drr/oracle.pt")
    assert "against DRRs" in out and "generated" in out and "fd " in out and "PC most local" not in out
    wrong = subprocess.run([sys.executable, "benchmarks/quality.py", "--n", "64", "--checkpoint", g, "--oracle",
                            "data/oracle.pt"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 2 and "the generator learned DRRs, the oracle phantoms" in wrong.stderr
