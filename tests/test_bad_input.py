"""Bad input through the real command line: exit status 2, one line on stderr that names the
culprit, no traceback, nothing under a final name. Then the output-set guarantees: a second
writer is refused, leftovers of dead runs are cleaned or completed, kill -9 loses nothing."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.assets import SHIPPED
from cxr_workbench.io import COMPLETE_MARK, LOCK_NAME, STAGING_PREFIX, TEMP_MARK, writer_lock
from cxr_workbench.model.checkpoints import save_generator
from cxr_workbench.ui.cli import main

EDIT_OUTPUTS = ("strip.png", "latents.pt", "metrics.json", "provenance.json")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    save_generator(d / "g.pt", tiny_generator(z_dim=16, w_dim=16))
    (d / "null.json").write_text("null")
    (d / "list.json").write_text("[1, 2, 3, 4]")
    (d / "broken.json").write_text('{"x0": 1,')
    (d / "float.json").write_text(json.dumps(dict(x0=2.5, y0=2, x1=10, y1=10, resolution=16)))
    (d / "rand.pt").write_bytes(os.urandom(300))
    (d / "pickled.pt").write_bytes(pickle.dumps({"u": [1.0] * 16}))
    torch.save({"u": Counter(a=1)}, d / "object.pt")
    (d / "notckpt.pt").write_bytes(b"PK\x03\x04" + os.urandom(200))
    (d / "folder.pt").mkdir()
    return d


EDIT = ["edit", "--checkpoint", "{d}/g.pt", "--max-steps", "3", "--no-progress"]
CASES = [  # (arguments, text the one error line must contain)
    (EDIT + ["--box", "{d}/null.json", "--disease", "opacity"], "null.json"),
    (EDIT + ["--box", "{d}/list.json", "--disease", "opacity"], "list.json"),
    (EDIT + ["--box", "{d}/broken.json", "--disease", "opacity"], "broken.json: not valid JSON"),
    (EDIT + ["--box", "{d}/float.json", "--disease", "opacity"], "field 'x0' is 2.5"),
    (EDIT + ["--direction", "{d}/rand.pt"], "direction file {d}/rand.pt"),
    (EDIT + ["--direction", "{d}/g.pt"], "direction file {d}/g.pt"),
    (EDIT + ["--direction", "{d}/pickled.pt"], "direction file {d}/pickled.pt"),
    (EDIT + ["--direction", "{d}/object.pt"], "direction file {d}/object.pt"),
    (EDIT + ["--sigma", "inf"], "sigma=inf"),
    (EDIT + ["--sigma", "1e30"], "sigma=1e+30"),
    (EDIT + ["--c", "inf"], "c=inf"),
    (EDIT + ["--lr", "nan"], "lr=nan"),
    (EDIT + ["--seed", "2-"], "seeds='2-'"),
    (EDIT + ["--layers", "5-2"], "layers='5-2'"),
    (EDIT + ["--layers", "0-40"], "layers="),
    (EDIT + ["--box", "kidney"], "box='kidney'"),
    (EDIT + ["--disease", "gout"], "--disease"),
    (EDIT + ["--device", "tpu"], "device='tpu'"),
    (["edit", "--checkpoint", "{d}/g.pt", "--out", "/proc/cxr-workbench-test"], "/proc/cxr-workbench-test"),
    (["sample", "--checkpoint", "{d}/notckpt.pt", "--format", "rosinality"], "notckpt.pt"),
    (["sample", "--checkpoint", "{d}/folder.pt"], "folder.pt is a folder"),
    (["sample", "--checkpoint", "{d}/g.pt", "--cols", "0"], "--cols"),
    (["sample", "--checkpoint", "{d}/g.pt", "--psi", "nan"], "--psi"),
    (["train", "--run-dir", "{d}/run", "--snapshot-kimg", "0"], "--snapshot-kimg"),
    (["train", "--run-dir", "{d}/run", "--batch", "0"], "--batch"),
    (["train", "--run-dir", "{d}/run", "--kimg", "0"], "--kimg"),
    (["train", "--run-dir", "{d}/run", "--resolution", "48"], "resolution=48"),
    (["train", "--run-dir", "{d}/run", "--resolution", "8"], "resolution=8"),
    (["train", "--run-dir", "{d}/run", "--stop-after-minutes", "0"], "--stop-after-minutes"),
    (["augment", "--disease", "gout", "--samples", "4", "--out", "{d}/aug"], "disease='gout'"),
    (["augment", "--disease", "opacity", "--samples", "4", "--keep-last", "20", "--out", "{d}/aug"],
     "keep_last=20 is larger than the trajectory's n=12"),
    (["augment", "--disease", "opacity", "--samples", "0", "--out", "{d}/aug"], "--samples"),
    (["augment", "--disease", "opacity", "--samples", "4", "--out", "{d}/null.json"],
     "null.json is a file; expected a folder"),
    (["augment", "--disease", "opacity", "--samples", "4", "--sigma", "-1", "--out", "{d}/aug"], "sigma=-1"),
    (["augment", "--disease", "opacity", "--samples", "4", "--device", "tpu", "--out", "{d}/aug"], "device='tpu'"),
    (["augment", "--disease", "opacity", "--samples", "4", "--device", "cuda:0", "--workers", "2", "--out", "{d}/aug"],
     "--device cuda:0 with --workers"),
    (["augment", "--checkpoint", "{d}/g.pt", "--disease", "opacity", "--samples", "2", "--max-steps", "2",
      "--scheduler", "tcp://127.0.0.1:9", "--out", "{d}/aug"], "scheduler 'tcp://127.0.0.1:9' is unreachable"),
    (["classify", "--sets", "{d}", "--out", "{d}/cls"], "holds no set.json"),
    (["classify", "--sets", "{d}/missing", "--out", "{d}/cls"], "missing holds no set.json"),
    (["classify", "--sets", "{d}", "--out", "{d}/cls", "--seeds", "0"], "--seeds"),
    (EDIT + ["--reader", "{d}/rand.pt"], "reader {d}/rand.pt could not be read"),
    (EDIT + ["--reader", "{d}/g.pt"], "reader {d}/g.pt: neither an oracle nor a classifier"),
    (EDIT + ["--reader", "monai:Nope:{d}/g.pt"], "monai.networks.nets has no network 'Nope'"),
    (EDIT + ["--reader", "{d}/none.pt"], "reader {d}/none.pt: no such file"),
    (EDIT + ["--class", "2"], "class=2; expected 0: the generator is unconditional"),
    (["sample", "--checkpoint", "{d}/g.pt", "--class", "-1"], "--class"),
    (["augment", "--disease", "opacity", "--samples", "4", "--keep-last", "8", "--points", "spread", "--out",
      "{d}/aug"], "keep=8 points spread over the second half of n=12; expected at most 6"),
    (["augment", "--disease", "opacity", "--samples", "4", "--vary-box", "--box", "heart", "--out", "{d}/aug"],
     "box='heart' with vary_box=True"),
    (["augment", "--disease", "opacity", "--samples", "4", "--compile", "--workers", "2", "--out", "{d}/aug"],
     "compile=True with Dask workers"),
    (["train", "--run-dir", "{d}/run", "--source", "drr", "--ct", "{d}/nowhere"], "--ct {d}/nowhere: not a folder"),
    (["train", "--run-dir", "{d}/run", "--ct", "{d}"], "expected --source drr with it"),
    (["oracle", "--source", "drr", "--ct", "{d}/nowhere", "--out", "{d}/o.pt"], "--ct {d}/nowhere: not a folder"),
    (EDIT + ["--tune", "10"], "tune=10 without images"),
    (EDIT + ["--keep-film"], "keep_film=True with seeds"),
    (EDIT + ["--latents", "{d}/g.pt"], "holds no 'ws' tensor"),
    (["invert", "--image", "{d}/nope.png", "--tune", "-1", "--out", "{d}/inv"], "--tune"),
    (["figure", "table2", "--sigma", "0", "--out", "{d}/fig"], "--sigma"),
    (["replay", "{d}"], "holds no provenance.json"),
    (["sample", "--checkpoint", "{d}/nosuch.pt"], "nosuch.pt: no such file; expected a generator file or a shipped "
                                                 "generator's name (phantom, drr)"),
    (["edit", "--checkpoint", "drr", "--reader", str(SHIPPED["phantom"] / "oracle.pt"), "--out", "{d}/o"],
     "is an oracle of phantom films, the generator learned drr films"),
    (["train", "--run-dir", "{d}/run", "--kind-shares", "0", "0", "0"], "kind_shares=(0.0, 0.0, 0.0); expected three"),
    (["train", "--run-dir", "{d}/run", "--kind-shares", "0.5", "2", "0"], "kind_shares=2.0; expected a finite number"),
]


# One case per command also runs as its own process, to see the process boundary (exit status,
# nothing else on stderr); the rest call main() in this process, a second each instead of seven.
IN_A_PROCESS = {0, 12, 20, 25, 36, 38, 51, 55, 56, 57}


def full_args(args, files, tmp_path):
    args = [a.format(d=files) for a in args]
    if args[0] == "edit" and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    if args[0] == "sample":
        args += ["--out", str(tmp_path / "grid.png")]
    return args


def in_this_process(args, capsys) -> tuple[int, str]:
    """main(args): (exit status, stderr); argparse's own errors exit through SystemExit."""
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def in_a_process(args) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "cxr_workbench.ui.cli", *args], capture_output=True, text=True,
                       timeout=300)
    return r.returncode, r.stderr


@pytest.mark.parametrize("k", range(len(CASES)), ids=[" ".join(a[-2:]) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys, k):
    args, culprit = CASES[k]
    args = full_args(args, files, tmp_path)
    code, err = in_a_process(args) if k in IN_A_PROCESS else in_this_process(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert culprit.format(d=files) in lines[0], lines[0]
    assert not (tmp_path / "grid.png").exists() and not (files / "run" / "generator.pt").exists()
    assert not any((tmp_path / "out" / n).exists() for n in EDIT_OUTPUTS)


def test_every_command_is_checked_in_a_process_of_its_own():
    assert {CASES[k][0][0] for k in IN_A_PROCESS} == {a[0] for a, _ in CASES}


def edit_args(ckpt, out, *extra):
    return ["edit", "--checkpoint", str(ckpt), "--seed", "0", "--max-steps", "5", "--no-progress",
            "--out", str(out), *extra]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def dead_writers_leftovers(out) -> int:
    """What a killed run leaves: its lock file recording it, a half-written file, its staging folder."""
    pid = dead_pid()
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps(dict(pid=pid, host=os.uname().nodename, staging=f"{STAGING_PREFIX}{pid}")))
    (out / f".strip.png{TEMP_MARK}{pid}-abc123.tmp").write_bytes(b"half")
    (out / f"{STAGING_PREFIX}{pid}").mkdir(exist_ok=True)
    return pid


def test_a_second_writer_is_refused_and_a_dead_ones_leftovers_are_handled(files, tmp_path, capsys):
    out = tmp_path / "out"
    with writer_lock(out):  # a live run holds the folder
        assert main(edit_args(files / "g.pt", out)) == 2
        assert "being written by another run" in capsys.readouterr().err
    assert not any((out / n).exists() for n in EDIT_OUTPUTS) and not (out / LOCK_NAME).exists()

    # The user's own files are never taken for leftovers, whatever their names.
    users = [out / ".staging-12345" / "notes.txt", out / ".draft.12345.ab.tmp", out / ".cxr-workbench-staging-mine"]
    users[0].parent.mkdir(parents=True)
    users[0].write_text("mine")
    users[1].write_text("mine")
    users[2].mkdir()
    dead_writers_leftovers(out)
    assert main(edit_args(files / "g.pt", out)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*EDIT_OUTPUTS, ".staging-12345", ".draft.12345.ab.tmp",
                                                            ".cxr-workbench-staging-mine"])
    assert users[0].read_text() == "mine" and users[1].read_text() == "mine" and users[2].is_dir()
    assert main(edit_args(files / "g.pt", out)) == 2  # finished results are never replaced silently
    assert "exist; pass --overwrite" in capsys.readouterr().err

    # A run killed between staging everything and moving it in: the next writer completes the set.
    pid = dead_writers_leftovers(out)
    staged = out / f"{STAGING_PREFIX}{pid}"
    (staged / "extra.txt").write_text("finished")
    (staged / COMPLETE_MARK).touch()
    with writer_lock(out):
        pass
    assert (out / "extra.txt").read_text() == "finished" and not staged.exists()
    assert not list(out.glob(f"*{TEMP_MARK}*.tmp")) and not (out / LOCK_NAME).exists()


def test_edit_killed_mid_run_leaves_nothing_and_the_next_run_works(files, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cxr_workbench.ui.cli", *edit_args(files / "g.pt", out, "--max-steps", "100000",
                                                                "--tol", "0", "--min-steps", "100000")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob(STAGING_PREFIX + "*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the optimisation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any((out / n).exists() for n in EDIT_OUTPUTS)
    assert (out / LOCK_NAME).exists()  # the dead run's lock is still there ...
    assert main(edit_args(files / "g.pt", out)) == 0  # ... and is taken over
    assert sorted(p.name for p in out.iterdir()) == sorted(EDIT_OUTPUTS)


TRAIN = """
import sys
from cxr_workbench.model.train import TrainConfig, train
cfg = TrainConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=1, channel_base=256, channel_max=32,
                  batch=8, dataset_size=64, snapshot_kimg=0.016, kimg=float(sys.argv[2]))
train(cfg, sys.argv[1], progress=False)
"""


def test_train_killed_resumes_and_leaves_no_temporaries(tmp_path):
    from cxr_workbench.model.checkpoints import read_checkpoint
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(run), "100"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "generator.pt").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    seen = read_checkpoint(run / "snapshot.pt")["state"]["images_seen"]
    assert seen >= 16
    # whatever the kill interrupted, the generator is never ahead of the snapshot
    assert read_checkpoint(run / "generator.pt")["model_card"]["kimg"] <= seen / 1000
    r = subprocess.run([sys.executable, "-c", TRAIN, str(run), str(seen / 1000 + 0.016)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert read_checkpoint(run / "snapshot.pt")["state"]["images_seen"] == seen + 16
    assert not list(run.glob(".*.tmp")) and not (run / LOCK_NAME).exists()
