"""The Dask path gives what the serial path gives, on a LocalCluster of 2 worker processes."""
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.distributed import close, connect, fan_out
from cxr_workbench.method.evaluate import method_table
from cxr_workbench.method.optimize import LOConfig
from cxr_workbench.method.pca import compute_pca
from cxr_workbench.studies.augment import make_augmentation
from cxr_workbench.studies.classify import ProtocolConfig, real_data, run_protocol


@pytest.fixture(scope="module")
def client():
    c = connect(workers=2)
    yield c
    close(c)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the workers, so float sums run in the same order
    yield
    torch.set_num_threads(before)


def _square_plus(x, offset):
    return x * x + offset


def test_fan_out_returns_every_task_once(client):
    tasks = [dict(x=i) for i in range(7)]
    serial = dict(fan_out(_square_plus, tasks, dict(offset=1), progress=False))
    remote = dict(fan_out(_square_plus, tasks, dict(offset=1), client=client, progress=False))
    assert serial == remote == {i: i * i + 1 for i in range(7)}
    assert len(client.scheduler_info()["workers"]) == 2


def test_augmentation_on_dask_matches_the_serial_set(client, tmp_path, one_thread):
    G = tiny_generator()
    pca = compute_pca(G, n_samples=256, progress=False)
    cfg = LOConfig(n=5, max_steps=4, min_steps=0)
    kw = dict(G=G, seeds=range(30, 40), disease="opacity", n_samples=8, config=cfg, keep_last=2, pca=pca, batch=1,
              progress=False)
    serial = make_augmentation(out_dir=tmp_path / "serial", **kw)
    remote = make_augmentation(out_dir=tmp_path / "dask", client=client, **kw)
    pd.testing.assert_frame_equal(serial, remote)
    for f in serial["file"]:
        assert (tmp_path / "serial" / f).read_bytes() == (tmp_path / "dask" / f).read_bytes()


def test_protocol_on_dask_matches_the_serial_runs(client, tmp_path, one_thread):
    cfg = ProtocolConfig(n_normal=16, n_disease=(4,), n_aug=8, n_val=8, n_test=8, seeds=(0,), epochs=1, batch=8)
    data = real_data(cfg)
    aug = {(d, 0.3): data["train"]["normal"][:8] * 0.5 for d in ("cardiomegaly", "opacity")}
    key = ["column", "n_disease", "row", "sigma", "seed"]
    serial = run_protocol(cfg, aug, tmp_path / "serial", data=data, progress=False).sort_values(key)
    remote = run_protocol(cfg, aug, tmp_path / "dask", data=data, client=client, progress=False).sort_values(key)
    cols = key + ["n_train", "val_auroc", "test_auroc", "best_epoch"]
    pd.testing.assert_frame_equal(serial[cols].reset_index(drop=True), remote[cols].reset_index(drop=True))


def test_table2_on_dask_matches_the_serial_sweep(client, one_thread):
    G = tiny_generator()
    pca = compute_pca(G, n_samples=256, progress=False)
    kw = dict(G=G, pca=pca, seeds=[0, 1], sigmas=(0.3, 1.0), config=LOConfig(n=4, max_steps=3, min_steps=0),
              progress=False)
    key = ["disease", "sigma", "method", "seed"]
    serial = method_table(**kw).drop(columns="wall_time").sort_values(key).reset_index(drop=True)
    remote = method_table(client=client, **kw).drop(columns="wall_time").sort_values(key).reset_index(drop=True)
    assert len(serial) == 2 * 2 * 2 * 2
    pd.testing.assert_frame_equal(serial, remote)


def test_an_unreachable_scheduler_is_named_and_a_running_one_is_reached():
    from dask.distributed import LocalCluster
    with pytest.raises(ValueError, match="scheduler 'tcp://127.0.0.1:9' is unreachable.*ConnectionRefusedError"):
        connect("tcp://127.0.0.1:9", timeout=5)  # refused by the port itself, before Dask's retries
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as running:
        client = connect(running.scheduler_address)
        try:
            assert len(client.scheduler_info()["workers"]) == 1
        finally:
            close(client)


TASK_FAILS = """
from cxr_workbench.distributed import close, connect, fan_out


def boom(x):
    raise ValueError(f"bad value {x}")


if __name__ == "__main__":
    client = connect(workers=1)
    try:
        list(fan_out(boom, [dict(x=1)], {}, client, False, desc="t"))
    except ValueError as e:
        print("caught:", e)
    finally:
        close(client)
"""


def test_a_task_error_on_a_cluster_reaches_the_caller_without_worker_tracebacks(tmp_path):
    """The CLI says an error in one line; the workers must not print their own traceback beside it."""
    script = tmp_path / "task_fails.py"
    script.write_text(TASK_FAILS)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "caught: bad value 1", r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr
