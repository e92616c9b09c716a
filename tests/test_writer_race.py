"""One writer per folder under a real race: many processes released at the same instant, many
trials, over a dead writer's lock (the case that used to let two writers in)."""
import json
import multiprocessing as mp
import os
import time

import pytest

from cxr_workbench.io import LOCK_NAME, STAGING_PREFIX, output_set, writer_lock

PROCESSES = 8
FORK = mp.get_context("fork")


def dead_writer(folder) -> None:
    """A lock file and a staging folder as a killed writer leaves them."""
    p = FORK.Process(target=os._exit, args=(0,))
    p.start()
    p.join()
    folder.mkdir(exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(dict(pid=p.pid, host=os.uname().nodename,
                                                    staging=f"{STAGING_PREFIX}{p.pid}")))
    (folder / f"{STAGING_PREFIX}{p.pid}").mkdir(exist_ok=True)


def hold(folder, barrier, results) -> None:
    """Take the folder at the barrier's release; while holding it, count the holders."""
    barrier.wait()
    try:
        with writer_lock(folder):
            mark = folder / f"holder-{os.getpid()}"
            mark.touch()
            holders = len(list(folder.glob("holder-*")))
            time.sleep(0.02)
            mark.unlink()
        results.put(("held", holders))
    except FileExistsError:
        results.put(("refused", 0))


def write_result(folder, barrier, results) -> None:
    barrier.wait()
    try:
        with output_set(folder, ["result.txt"]) as staging:
            (staging / "result.txt").write_text(str(os.getpid()))
        results.put("wrote")
    except FileExistsError:
        results.put("refused")


def race(target, folder) -> list:
    barrier, results = FORK.Barrier(PROCESSES), FORK.Queue()
    procs = [FORK.Process(target=target, args=(folder, barrier, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    out = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


@pytest.mark.parametrize("dead", [False, True], ids=["free folder", "over a dead writer's lock"])
def test_never_two_holders(tmp_path, dead):
    for trial in range(25):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        if dead:
            dead_writer(folder)
        out = race(hold, folder)
        held = [n for what, n in out if what == "held"]
        assert held and max(held) == 1, out  # someone got it, and nobody shared it
        assert not (folder / LOCK_NAME).exists()
        assert not list(folder.glob(STAGING_PREFIX + "*"))  # the dead writer's staging folder is gone


def test_a_finished_result_is_never_replaced_by_racing_writers(tmp_path):
    for trial in range(25):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        (folder / "result.txt").write_text("first")
        dead_writer(folder)
        out = race(write_result, folder)
        assert out == ["refused"] * PROCESSES and (folder / "result.txt").read_text() == "first"


def test_exactly_one_of_racing_writers_writes_a_new_result(tmp_path):
    for trial in range(25):
        folder = tmp_path / f"t{trial}"
        dead_writer(folder)
        out = race(write_result, folder)
        assert out.count("wrote") == 1, out
        assert sorted(p.name for p in folder.iterdir()) == ["result.txt"]


def test_a_killed_holder_releases_the_folder_at_once(tmp_path):
    """The kernel lets go of a dead holder's lock: the next writer needs no pid check."""
    ready, stop = FORK.Event(), FORK.Event()

    def holder():
        with writer_lock(tmp_path):
            ready.set()
            stop.wait(60)

    p = FORK.Process(target=holder)
    p.start()
    assert ready.wait(30)
    with pytest.raises(FileExistsError, match=f"pid {p.pid}"):
        with writer_lock(tmp_path):
            pass
    p.kill()
    p.join()
    assert (tmp_path / LOCK_NAME).exists()  # killed: it could not remove its lock file ...
    with writer_lock(tmp_path):  # ... yet the folder is free
        pass
