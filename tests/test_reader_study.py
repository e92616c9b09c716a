import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import tiny_generator
from PIL import Image

from cxr_workbench.model.oracle import SeverityOracle
from cxr_workbench.studies import reader_study as rs


@pytest.fixture
def study(tmp_path):
    items = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 2 + 40 * i, (32, 1))).save(path)
        items.append(dict(path=path, source="real" if i < 3 else "synthetic", cardiomegaly=i % 2 == 0,
                          opacity=i % 3 == 0))
    db = rs.open_study_db(tmp_path / "study.db")
    rs.create_study(db, "s1", items, seed=1)
    for name in ("ann", "bob"):
        rs.add_reader(db, name)
    return tmp_path / "study.db", db


def test_answers_resume_and_revisions(study):
    path, db = study
    first = rs.next_item(db, "s1", "ann")
    assert set(first) == {"id", "position", "path"}  # nothing that gives the truth away
    rs.submit(db, "s1", "ann", first["id"], True, False, 4)
    with pytest.raises(ValueError, match="has answered item"):
        rs.submit(db, "s1", "ann", first["id"], False, True, 3)
    assert rs.submit(db, "s1", "ann", first["id"], False, True, 3, revise=True) == 1
    db2 = rs.open_study_db(path)  # another session resumes where ann stopped
    assert rs.progress(db2, "s1", "ann") == (1, 6) and rs.next_item(db2, "s1", "ann")["position"] == 1
    assert rs.progress(db2, "s1", "bob") == (0, 6)
    latest = rs.answers(db2, "s1")
    assert len(latest) == 1 and latest.iloc[0]["revision"] == 1 and latest.iloc[0]["said_opacity"] == 1
    with pytest.raises(ValueError, match="reader 'eve' does not exist"):
        rs.next_item(db, "s1", "eve")
    with pytest.raises(ValueError, match="quality=7"):
        rs.submit(db, "s1", "bob", first["id"], True, False, 7)
    with pytest.raises(ValueError, match="study 'other' exists|study 's1' exists"):
        rs.create_study(db, "s1", [dict(path=first["path"], source="real", cardiomegaly=0, opacity=0)])


def test_summary_in_table_1_layout(study):
    _, db = study
    while (item := rs.next_item(db, "s1", "ann")) is not None:  # ann says cardiomegaly for everything
        rs.submit(db, "s1", "ann", item["id"], True, False, 5 if item["position"] % 2 else 2)
    table = rs.summary(db, "s1")
    assert list(table["source"]) == ["real", "synthetic"] and (table["cardiomegaly correct %"] == 100).all()
    assert (table["opacity correct %"] == 0).all() and "±" in table["quality"][0]
    assert 0 <= table["real vs synthetic AUROC (quality)"][0] <= 1


def test_machine_reader_fills_a_study_and_widget_keys(study):
    path, db = study
    oracle = SeverityOracle(resolution=16, width=4).eval()
    assert rs.machine_reader(db, "s1", "bob", oracle) == 6 and rs.next_item(db, "s1", "bob") is None
    from cxr_workbench.ui.widgets import ReaderStudyWidget
    w = ReaderStudyWidget(path, "s1", "ann")
    assert w.progress.max == 6 and w.progress.value == 0 and len(w.image.value) > 100
    w.type_keys("c")  # no quality: refused, nothing stored
    assert "keys 'c'" in w.message.value and rs.progress(db, "s1", "ann") == (0, 6)
    w.type_keys("co4")
    assert rs.progress(db, "s1", "ann") == (1, 6) and w.progress.value == 1
    w.neither.value, w.cardiomegaly.value, w.quality.value = True, True, 3
    w.submit()
    assert "not both" in w.message.value
    with pytest.raises(ValueError, match="reader 'zed' does not exist"):
        ReaderStudyWidget(path, "s1", "zed")


def test_machine_reader_answers_with_a_classifier(study):
    from cxr_workbench.imaging.datasets import load_films
    from cxr_workbench.model.readers import ClassifierReader, make_network
    path, db = study
    torch.manual_seed(0)
    reader = ClassifierReader(make_network("small", 3).eval(), resolution=64, name="net")
    rs.add_reader(db, "net")
    assert rs.machine_reader(db, "s1", "net", reader) == 6
    rows = db.execute("SELECT i.path, a.cardiomegaly, a.opacity, a.quality FROM answers a JOIN items i ON "
                      "i.id = a.item_id JOIN readers r ON r.id = a.reader_id WHERE r.name = 'net'").fetchall()
    assert len(rows) == 6 and {q for *_, q in rows} == {3}  # no plausibility judged: undecided
    for p, cardiomegaly, opacity, _ in rows:
        pred = reader.predict(load_films([p], 64, upsample=True))
        assert (bool(cardiomegaly), bool(opacity)) == (pred["kind"][0] == 1, pred["kind"][0] == 2)


def test_newer_schema_and_foreign_databases_are_refused(tmp_path):
    newer = sqlite3.connect(tmp_path / "newer.db")
    newer.execute(f"PRAGMA user_version={rs.SCHEMA_VERSION + 1}")
    newer.close()
    with pytest.raises(ValueError, match="newer than this workbench"):
        rs.open_study_db(tmp_path / "newer.db")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(ValueError, match="something else"):
        rs.open_study_db(tmp_path / "other.db")
    (tmp_path / "junk.db").write_bytes(b"junk" * 100)
    with pytest.raises(ValueError, match="not a reader-study database"):
        rs.open_study_db(tmp_path / "junk.db")


READER = """
import sys, time
from cxr_workbench.studies import reader_study as rs
db = rs.open_study_db(sys.argv[1])
while (item := rs.next_item(db, "s1", "ann")) is not None:
    rs.submit(db, "s1", "ann", item["id"], True, False, 3)
    print(item["id"], flush=True)
    time.sleep(0.3)
"""


def test_submitted_answers_survive_kill_9(study):
    path, db = study
    proc = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdout=subprocess.PIPE, text=True)
    submitted = [int(proc.stdout.readline()) for _ in range(2)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.1)
    stored = set(rs.answers(rs.open_study_db(path), "s1")["position"])
    assert len(stored) >= 2 and len(submitted) == 2
    assert rs.progress(rs.open_study_db(path), "s1", "ann")[0] == len(stored)


def test_prepare_items_makes_real_and_edited_films(tmp_path, monkeypatch):
    from cxr_workbench import assets
    from cxr_workbench.method.optimize import LOConfig
    from cxr_workbench.method.pca import compute_pca
    G = tiny_generator(img_resolution=16, z_dim=16, w_dim=16)
    monkeypatch.setattr(assets, "pca_for", lambda g: compute_pca(g, n_samples=500))
    items = rs.prepare_items(G, tmp_path, n_real=3, n_edited=4, config=LOConfig(max_steps=3, layers=(0, 1)))
    assert [it["source"] for it in items].count("synthetic") == 4 and len(items) == 7
    assert sum(it["cardiomegaly"] for it in items if it["source"] == "synthetic") == 2
    assert all(np.asarray(Image.open(it["path"])).shape == (16, 16) for it in items)
    # beside a DRR generator's edits the real films are DRRs, not phantoms (a reader would tell them apart)
    from cxr_workbench.imaging.datasets import TruthDataset
    from cxr_workbench.imaging.strips import to_uint8
    G.source = "drr"
    items = rs.prepare_items(G, tmp_path / "drr", n_real=2, n_edited=0)
    want = to_uint8(TruthDataset(2, 16, seed=50_000, source="drr").images_tensor())
    assert all(np.array_equal(np.asarray(Image.open(it["path"])), want[i]) for i, it in enumerate(items))


def _open_at(path, barrier, results):
    barrier.wait()
    try:
        rs.open_study_db(path).close()
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - the test reports whatever a racer met
        results.put(f"{type(e).__name__}: {e}")


def test_many_processes_creating_one_database_at_once_all_succeed(tmp_path):
    import multiprocessing as mp
    fork = mp.get_context("fork")
    for trial in range(15):
        path = tmp_path / f"race{trial}.db"
        barrier, results = fork.Barrier(6), fork.Queue()
        procs = [fork.Process(target=_open_at, args=(path, barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        out = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert out == ["ok"] * 6, out
        db = rs.open_study_db(path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == rs.SCHEMA_VERSION


def test_a_database_opens_read_only(study):
    path, db = study
    item = rs.next_item(db, "s1", "ann")
    rs.submit(db, "s1", "ann", item["id"], True, False, 4)
    db.close()
    ro = rs.open_study_db(path, readonly=True)
    assert len(rs.answers(ro, "s1")) == 1 and rs.progress(ro, "s1", "ann")[0] == 1
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        rs.submit(ro, "s1", "ann", rs.next_item(ro, "s1", "ann")["id"], True, False, 3)
    with pytest.raises(FileNotFoundError, match="missing.db"):
        rs.open_study_db(path.parent / "missing.db", readonly=True)


def test_keyed_answers_from_other_threads_all_reach_the_database(study, monkeypatch):
    """ipykernel 7 may run widget callbacks off the thread that built the widget."""
    import threading

    from cxr_workbench.ui.widgets import ReaderStudyWidget
    path, db = study
    w = ReaderStudyWidget(path, "s1", "ann")
    for keys in ("co4", "n2", "c5", "o1", "n3"):
        t = threading.Thread(target=w.type_keys, args=(keys,))
        t.start()
        t.join()
        assert "not stored" not in w.message.value, w.message.value
    stored = rs.answers(db, "s1").sort_values("position")
    assert len(stored) == 5 and rs.progress(db, "s1", "ann") == (5, 6)
    assert list(stored["quality"]) == [4, 2, 5, 1, 3]
    assert list(stored["said_cardiomegaly"]) == [1, 0, 1, 0, 0] and list(stored["said_opacity"]) == [1, 0, 0, 1, 0]

    def broken(*a, **kw):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(rs, "submit", broken)
    w.type_keys("co4")  # fails: said on the widget, and no tick survives for the next answer
    assert "not stored: OperationalError: disk I/O error" in w.message.value
    assert not (w.cardiomegaly.value or w.opacity.value or w.neither.value) and w.quality.value is None
    assert rs.progress(db, "s1", "ann") == (5, 6)


def test_back_revises_an_answer_and_returns_to_the_first_unanswered(study):
    from cxr_workbench.ui.widgets import ReaderStudyWidget
    path, db = study
    w = ReaderStudyWidget(path, "s1", "ann")
    w.back()  # nothing answered yet
    assert "no earlier answer" in w.message.value
    for keys in ("co4", "n2", "c5"):
        w.type_keys(keys)
    assert w.item["position"] == 3 and "item 4 of 6" in w.message.value
    w.back()
    assert w.item["position"] == 2 and "revising item 3" in w.message.value
    assert (w.cardiomegaly.value, w.opacity.value, w.neither.value, w.quality.value) == (True, False, False, 5)
    w.back()  # one further back: the ticks show that item's answer
    assert w.item["position"] == 1 and (w.neither.value, w.quality.value) == (True, 2)
    w.type_keys("o3")  # the revision is stored, and the reader is back at the first unanswered item
    assert w.item["position"] == 3 and not w.revising and rs.progress(db, "s1", "ann") == (3, 6)
    latest = rs.answers(db, "s1").set_index("position")
    assert latest.loc[1, "revision"] == 1 and latest.loc[1, "said_opacity"] == 1 and latest.loc[1, "quality"] == 3
    assert list(latest["revision"]) == [0, 1, 0]
    while w.item is not None:
        w.type_keys("n1")
    w.back()  # from the end: the last item, for revision
    assert w.item["position"] == 5 and w.revising


def test_a_damaged_database_is_refused_with_the_way_to_recover(study):
    path, db = study
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    page = 4096
    raw = bytearray(path.read_bytes())
    assert len(raw) > 3 * page
    raw[2 * page + 8:3 * page] = bytes(page - 8)  # a table page zeroed past its header
    path.write_bytes(bytes(raw))
    for readonly in (False, True):
        with pytest.raises(ValueError, match=r"study.db: the reader-study database is damaged.*\.recover") as err:
            rs.open_study_db(path, readonly=readonly)
        assert "\n" not in str(err.value)


def _add_at(path, name, barrier, results):
    db = rs.open_study_db(path)
    barrier.wait()
    try:
        rs.add_reader(db, name)
        results.put("added")
    except ValueError as e:
        results.put(str(e))


def test_many_processes_adding_one_reader_at_once_one_wins_the_others_are_told(study):
    import multiprocessing as mp
    path, _ = study
    fork = mp.get_context("fork")
    for trial in range(10):
        barrier, results = fork.Barrier(4), fork.Queue()
        procs = [fork.Process(target=_add_at, args=(path, f"reader{trial}", barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        out = sorted(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert out == ["added"] + [f"reader 'reader{trial}' exists"] * 3, out


def test_run_study_makes_a_study_once_and_keeps_its_answers(tmp_path, monkeypatch):
    from cxr_workbench import assets
    from cxr_workbench.method.pca import compute_pca
    G = tiny_generator(img_resolution=16, z_dim=16, w_dim=16)
    monkeypatch.setattr(assets, "pca_for", lambda g: compute_pca(g, n_samples=500))
    req = rs.StudyRequest(tmp_path / "study.db", "s", n_real=2, n_edited=2, max_steps=2, readers=("ann", "oracle"))
    sid = rs.run_study(req, G)
    db = rs.open_study_db(tmp_path / "study.db")
    item = rs.next_item(db, "s", "ann")
    rs.submit(db, "s", "ann", item["id"], True, False, 3)
    monkeypatch.setattr(rs, "prepare_items", lambda *a, **k: pytest.fail("made again"))
    assert rs.run_study(req, G) == sid and rs.progress(db, "s", "ann") == (1, 4)
    assert len(list((tmp_path / "images").glob("*.png"))) == 4


@pytest.mark.parametrize("kw,match", [(dict(n_real=-1), "n_real=-1"), (dict(max_steps=0), "max_steps=0"),
                                      (dict(n_real=0, n_edited=0), "at least one film"), (dict(name=" "), "empty"),
                                      (dict(seed=1.5), "seed=1.5")])
def test_a_study_request_is_checked_before_anything_runs(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        rs.run_study(rs.StudyRequest(tmp_path / "study.db", **kw), G=None)
