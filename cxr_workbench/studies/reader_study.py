"""A blinded reader study (the paper's Table 1): readers label a shuffled mix of real and edited
films (cardiomegaly / opacity / neither, more than one allowed) and rate their quality 1-5.

Everything lives in one SQLite database in WAL mode: studies, items (with their hidden truth and
source), readers and answers with timestamps. Each answer is committed as it is given
(synchronous=FULL), so it survives a killed kernel; a reader resumes at their first unanswered
item; answering an item twice is refused unless it is recorded as a revision. The schema version
is kept in ``PRAGMA user_version``; a database from a newer version is refused.

``machine_reader`` answers a whole study with a reader (the severity oracle, a classifier ...), so
the pipeline is tested end to end without a person.
"""
from __future__ import annotations

import os
import random
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.io import reason

__all__ = ["SCHEMA_VERSION", "SOURCES", "QUALITY", "SCHEMA", "MIGRATIONS", "open_study_db", "create_study",
           "study_id", "add_reader", "reader_id", "ensure_reader", "next_item", "previous_item", "progress", "submit",
           "answers", "summary", "machine_reader", "prepare_items", "StudyRequest", "run_study"]

SCHEMA_VERSION = 2
SOURCES = ("real", "synthetic")
QUALITY = (1, 2, 3, 4, 5)
SCHEMA = """
CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, seed INTEGER NOT NULL,
                      created TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
                    position INTEGER NOT NULL, path TEXT NOT NULL, source TEXT NOT NULL,
                    cardiomegaly INTEGER NOT NULL, opacity INTEGER NOT NULL, UNIQUE (study_id, position));
CREATE TABLE readers (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created TEXT NOT NULL);
CREATE TABLE answers (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id),
                      reader_id INTEGER NOT NULL REFERENCES readers(id), revision INTEGER NOT NULL,
                      cardiomegaly INTEGER NOT NULL, opacity INTEGER NOT NULL, quality INTEGER NOT NULL,
                      answered_at TEXT NOT NULL, UNIQUE (item_id, reader_id, revision));
"""
# Version 2 adds the severity quiz (studies/quiz.py): its students are this database's readers.
# MIGRATIONS[k] takes a database of version k to k + 1.
MIGRATIONS = {1: """
CREATE TABLE quizzes (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, seed INTEGER NOT NULL,
                      created TEXT NOT NULL);
CREATE TABLE questions (id INTEGER PRIMARY KEY, quiz_id INTEGER NOT NULL REFERENCES quizzes(id),
                        position INTEGER NOT NULL, kind TEXT NOT NULL, prompt TEXT NOT NULL, images TEXT NOT NULL,
                        choices TEXT NOT NULL, truth TEXT NOT NULL, UNIQUE (quiz_id, position));
CREATE TABLE responses (id INTEGER PRIMARY KEY, question_id INTEGER NOT NULL REFERENCES questions(id),
                        reader_id INTEGER NOT NULL REFERENCES readers(id), response TEXT NOT NULL,
                        score REAL NOT NULL, answered_at TEXT NOT NULL, UNIQUE (question_id, reader_id));
"""}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def open_study_db(path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (or create) a reader-study database; refuses one written by a newer schema.

    Several processes may create the same new database at once: one makes the schema, the others
    find it made. ``readonly`` (or a file this process may not write) opens it to read only.
    """
    path = Path(path)
    if readonly or (path.is_file() and not os.access(path, os.W_OK)):
        return _open_to_read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        try:
            return _open_to_write(path)
        except sqlite3.OperationalError as e:
            # Switching to WAL or making the schema can meet another opener's lock without waiting
            # for it (SQLite returns "locked" where waiting could deadlock): try again shortly.
            if "locked" not in str(e) or attempt == 99:
                raise ValueError(f"{path}: cannot be opened ({e})") from None
            time.sleep(0.01 + 0.04 * random.random())
    raise AssertionError("unreachable")


def _open_to_write(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)  # autocommit; writes use explicit transactions
    try:
        db.execute("PRAGMA journal_mode=WAL")
        version = _schema_version(db, path)
        db.execute("PRAGMA synchronous=FULL")  # an answer, once committed, survives a crash
        db.execute("PRAGMA foreign_keys=ON")
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")  # one creator (or upgrader) at a time
            version = _schema_version(db, path)  # what another opener made while we waited
            if version == 0 and db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]:
                raise ValueError(f"{path}: an SQLite database of something else; expected a reader-study database")
            for script in ([SCHEMA] if version == 0 else []) + [MIGRATIONS[v] for v in range(max(version, 1),
                                                                                               SCHEMA_VERSION)]:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
    except sqlite3.OperationalError:
        db.close()  # closing rolls back what was begun
        raise
    except sqlite3.DatabaseError as e:
        db.close()
        raise _damaged(path, e) from None
    except BaseException:
        db.close()
        raise
    return db


def _schema_version(db, path: Path) -> int:
    """The database's schema version, after SQLite's integrity check: a damaged database is
    refused before it is read or written, with the way to recover its answers."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path}: reader-study schema {version} is newer than this workbench's {SCHEMA_VERSION}; "
                         "update cxr-workbench to open it")
    if version:  # the full check: the quick one passes an index that lost a row, which a query meets later
        check = db.execute("PRAGMA integrity_check(1)").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
    return version


def _damaged(path: Path, e: sqlite3.DatabaseError) -> ValueError:
    """The one-line refusal of a database SQLite cannot read: damaged, or not SQLite at all."""
    if "malformed" in str(e):
        return ValueError(f"{path}: the reader-study database is damaged ({reason(e)}); recover its "
                          f"answers into a new file with: sqlite3 {path} .recover | sqlite3 recovered.db")
    return ValueError(f"{path}: not a reader-study database ({e})")


def _open_to_read(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such reader-study database")
    uri = path.resolve().as_uri()
    try:
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30)
            version = _schema_version(db, path)
        except sqlite3.OperationalError:  # a WAL database in a folder we may not write: read it as it is
            db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
            version = _schema_version(db, path)
    except sqlite3.DatabaseError as e:
        raise _damaged(path, e) from None
    if version == 0:
        db.close()
        raise ValueError(f"{path}: not a reader-study database (no schema)")
    return db


def create_study(db, name: str, items: list[dict], seed: int = 0) -> int:
    """A study of ``items`` (dicts with ``path``, ``source`` in SOURCES and the truth flags
    ``cardiomegaly``, ``opacity``), shown in an order shuffled by ``seed``. Returns its id."""
    if not items:
        raise ValueError("a study needs at least one item")
    for it in items:
        if it.get("source") not in SOURCES:
            raise ValueError(f"item {it.get('path')!r}: source={it.get('source')!r}; expected one of {SOURCES}")
        if not Path(it["path"]).is_file():
            raise ValueError(f"item {it['path']!r}: no such image file")
    order = np.random.default_rng(seed).permutation(len(items))
    with db:
        db.execute("BEGIN")
        try:  # the name is checked by the insert itself: two creators at once, one wins
            sid = db.execute("INSERT INTO studies (name, seed, created) VALUES (?, ?, ?)",
                             (name, seed, _now())).lastrowid
        except sqlite3.IntegrityError:
            raise ValueError(f"study {name!r} exists; choose another name") from None
        db.executemany("INSERT INTO items (study_id, position, path, source, cardiomegaly, opacity) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       [(sid, pos, str(Path(items[i]["path"]).resolve()), items[i]["source"],
                         int(bool(items[i]["cardiomegaly"])), int(bool(items[i]["opacity"])))
                        for pos, i in enumerate(order)])
    return sid


def _id_of(db, table: str, what: str, name: str, hint: str = "") -> int:
    """The id of the row of ``table`` called ``name``; a missing one is named with the known names."""
    row = db.execute(f"SELECT id FROM {table} WHERE name=?", (name,)).fetchone()
    if row is None:
        known = [r[0] for r in db.execute(f"SELECT name FROM {table} ORDER BY id")]
        raise ValueError(f"{what} {name!r} does not exist; known: {known}{hint}")
    return row[0]


def study_id(db, name: str) -> int:
    """The id of the study called ``name`` (an error names the known ones)."""
    return _id_of(db, "studies", "study", name)


def add_reader(db, name: str) -> int:
    """A new reader's id; a name that exists (also one added by another process a moment ago) is refused."""
    if not name or not name.strip():
        raise ValueError("reader name is empty")
    try:  # the name is checked by the insert itself: two processes adding one name at once, one wins
        return db.execute("INSERT INTO readers (name, created) VALUES (?, ?)", (name, _now())).lastrowid
    except sqlite3.IntegrityError:
        raise ValueError(f"reader {name!r} exists") from None


def ensure_reader(db, name: str) -> int:
    """The id of the reader called ``name``, added if new (an app's student signing in again, or in
    two tabs at once, gets the one row)."""
    if not name or not name.strip():
        raise ValueError("reader name is empty")
    db.execute("INSERT OR IGNORE INTO readers (name, created) VALUES (?, ?)", (name, _now()))
    return reader_id(db, name)


def reader_id(db, name: str) -> int:
    """The id of the reader called ``name`` (an error names the known ones)."""
    return _id_of(db, "readers", "reader", name, " (add_reader creates one)")


def next_item(db, study: str, reader: str) -> dict | None:
    """The reader's first unanswered item of the study (position, id, path), or None when done.
    What a reader sees: never the source or the truth."""
    row = db.execute("SELECT i.id, i.position, i.path FROM items i WHERE i.study_id=? AND NOT EXISTS "
                     "(SELECT 1 FROM answers a WHERE a.item_id=i.id AND a.reader_id=?) ORDER BY i.position LIMIT 1",
                     (study_id(db, study), reader_id(db, reader))).fetchone()
    return None if row is None else dict(id=row[0], position=row[1], path=row[2])


def previous_item(db, study: str, reader: str, before: int | None = None) -> dict | None:
    """The item the reader answered last before position ``before`` (None: before the end), with
    the reader's latest answer to it (``cardiomegaly``, ``opacity``, ``quality``), or None when
    there is none: what a **back** button shows for revision."""
    sid, rid = study_id(db, study), reader_id(db, reader)
    row = db.execute("SELECT i.id, i.position, i.path, a.cardiomegaly, a.opacity, a.quality FROM items i "
                     "JOIN answers a ON a.item_id=i.id AND a.reader_id=? WHERE i.study_id=? AND i.position<? "
                     "ORDER BY i.position DESC, a.revision DESC LIMIT 1",
                     (rid, sid, 2**62 if before is None else before)).fetchone()
    if row is None:
        return None
    return dict(id=row[0], position=row[1], path=row[2], cardiomegaly=bool(row[3]), opacity=bool(row[4]),
                quality=row[5])


def progress(db, study: str, reader: str) -> tuple[int, int]:
    """(answered, total) items of the study for this reader."""
    sid, rid = study_id(db, study), reader_id(db, reader)
    total = db.execute("SELECT count(*) FROM items WHERE study_id=?", (sid,)).fetchone()[0]
    done = db.execute("SELECT count(DISTINCT a.item_id) FROM answers a JOIN items i ON i.id=a.item_id "
                      "WHERE i.study_id=? AND a.reader_id=?", (sid, rid)).fetchone()[0]
    return done, total


def submit(db, study: str, reader: str, item: int, cardiomegaly: bool, opacity: bool, quality: int,
           *, revise: bool = False) -> int:
    """Record an answer (committed at once). A second answer to the same item is refused unless
    ``revise``: then it is stored as the next revision and the latest revision counts."""
    sid, rid = study_id(db, study), reader_id(db, reader)
    if quality not in QUALITY:
        raise ValueError(f"quality={quality!r}; expected one of {QUALITY}")
    if not db.execute("SELECT 1 FROM items WHERE id=? AND study_id=?", (item, sid)).fetchone():
        raise ValueError(f"item {item} is not in study {study!r}")
    with db:
        db.execute("BEGIN IMMEDIATE")  # one writer at a time; the revision number cannot race
        last = db.execute("SELECT max(revision) FROM answers WHERE item_id=? AND reader_id=?",
                          (item, rid)).fetchone()[0]
        if last is not None and not revise:
            raise ValueError(f"reader {reader!r} has answered item {item}; pass revise=True to record a revision")
        revision = 0 if last is None else last + 1
        db.execute("INSERT INTO answers (item_id, reader_id, revision, cardiomegaly, opacity, quality, answered_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (item, rid, revision, int(bool(cardiomegaly)), int(bool(opacity)),
                                                   int(quality), _now()))
    return revision


def answers(db, study: str):
    """Latest answer of each reader per item, with the item's hidden truth: a pandas DataFrame."""
    import pandas as pd
    rows = db.execute(
        "SELECT r.name, i.position, i.source, i.cardiomegaly, i.opacity, a.cardiomegaly, a.opacity, a.quality, "
        "a.revision, a.answered_at FROM answers a JOIN items i ON i.id=a.item_id JOIN readers r ON r.id=a.reader_id "
        "WHERE i.study_id=? AND a.revision=(SELECT max(b.revision) FROM answers b WHERE b.item_id=a.item_id "
        "AND b.reader_id=a.reader_id) ORDER BY r.name, i.position", (study_id(db, study),)).fetchall()
    return pd.DataFrame(rows, columns=["reader", "position", "source", "true_cardiomegaly", "true_opacity",
                                       "said_cardiomegaly", "said_opacity", "quality", "revision", "answered_at"])


def summary(db, study: str):
    """Table 1 layout, per reader and source: % of the items with each disease that the reader
    called that disease (to 0.1 %, with the counts beside it), quality mean ± std; and how well the
    quality ratings tell real from synthetic (AUROC; 0.5 = they cannot)."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    df = answers(db, study)
    rows = []
    for (reader, source), g in df.groupby(["reader", "source"]):
        row = dict(reader=reader, source=source, items=len(g))
        for disease in DISEASES:
            has = g[f"true_{disease}"] == 1
            hits = int((g.loc[has, f"said_{disease}"] == 1).sum())
            row[f"{disease} correct %"] = round(100 * hits / int(has.sum()), 1) if has.any() else float("nan")
            row[f"{disease} called / shown"] = f"{hits} / {int(has.sum())}"
        row["quality"] = f"{g['quality'].mean():.2f} ± {g['quality'].std(ddof=0):.2f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    auc = {}
    for reader, g in df.groupby("reader"):
        real = (g["source"] == "real").astype(int)
        auc[reader] = float(roc_auc_score(real, g["quality"])) if real.nunique() == 2 else float("nan")
    table["real vs synthetic AUROC (quality)"] = table["reader"].map(auc)
    return table


def machine_reader(db, study: str, reader: str, machine) -> int:
    """Answer every unanswered item of the study as ``machine`` reads it (a ``readers.Reader`` or
    the severity oracle), under the reader name ``reader``: the disease flags are its verdicts (a
    disease it does not read is answered "absent"); quality 5 when it finds the film plausible,
    else 2, and 3 (undecided) from a reader that does not judge plausibility. Returns the count."""
    from cxr_workbench.imaging.datasets import load_films
    from cxr_workbench.model.readers import as_reader
    machine = as_reader(machine)
    n = 0
    while (item := next_item(db, study, reader)) is not None:
        pred = machine.predict(load_films([item["path"]], machine.resolution or _png_size(item["path"]), upsample=True))
        flags = [bool(machine.reads_as(pred, d)[0]) if d in machine.diseases else False
                 for d in ("cardiomegaly", "opacity")]
        quality = (5 if machine.plausible(pred)[0] else 2) if machine.plausibility else 3
        submit(db, study, reader, item["id"], *flags, quality)
        n += 1
    return n


def _png_size(path) -> int:
    from PIL import Image
    with Image.open(path) as im:
        return max(im.size)


def prepare_items(G, out_dir, *, n_real: int = 12, n_edited: int = 12, seed: int = 0, config=None,
                  progress: bool = False) -> list[dict]:
    """Images for a study: ``n_real`` fresh films of the kind G learned (``assets.films_of``: DRRs for
    the DRR generator and an imported one, phantoms for the phantom one; truth from their ground truth) and
    ``n_edited`` LO + direction edits of G's seeds, half in the heart box and half in the lower
    right lung (the last point of each sequence, labelled with its box's disease, as the paper
    labels its augmented samples). Written as PNG into ``out_dir``; returns the item dicts."""
    from cxr_workbench.assets import films_of, pca_for
    from cxr_workbench.imaging.datasets import TruthDataset
    from cxr_workbench.imaging.strips import to_uint8
    from cxr_workbench.io import save_png
    from cxr_workbench.method.optimize import LOConfig, run_method
    from cxr_workbench.method.plans import plan_edit
    from cxr_workbench.model.latents import reference_latents
    out_dir = Path(out_dir)
    items = []
    real = TruthDataset(n_real, G.img_resolution, seed=50_000 + seed, source=films_of(G))
    for i in range(n_real):
        path = save_png(out_dir / f"real_{i:03d}.png", to_uint8(real.images_tensor()[i:i + 1])[0])
        items.append(dict(path=path, source="real", cardiomegaly=real.kind[i] == "cardiomegaly",
                          opacity=real.kind[i] == "opacity"))
    pca, cfg = pca_for(G), config or LOConfig()
    halves = np.array_split(np.arange(n_edited), 2)
    for disease, idx in zip(DISEASES, halves):
        if not len(idx):
            continue
        plan = plan_edit(G, pca, disease=disease, layers=cfg.layers)
        traj = run_method(G, "lo+dir", reference_latents(G, [60_000 + seed + int(i) for i in idx]), plan.box, u=plan.u,
                          config=cfg, progress=progress)
        for r, i in enumerate(idx):
            path = save_png(out_dir / f"edited_{int(i):03d}.png", to_uint8(traj.images[r, -1:])[0])
            items.append(dict(path=path, source="synthetic", cardiomegaly=disease == "cardiomegaly",
                              opacity=disease == "opacity"))
    return items


@dataclass(frozen=True)
class StudyRequest:
    """A reader study to make (notebook 08): the database, the study's name, where its films go,
    how many real and edited films, the edits' step cap and seed, and the readers to add."""

    db: Path
    name: str = "table1"
    images: Path | None = None       # default: images/ beside the database
    n_real: int = 12
    n_edited: int = 12
    max_steps: int = 300
    seed: int = 0
    readers: tuple = ()

    def check(self) -> "StudyRequest":
        """Every field checked before a model is loaded; returns the request."""
        for field_name in ("n_real", "n_edited", "max_steps", "seed"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if field_name == "max_steps" else 0):
                raise ValueError(f"{field_name}={value!r}; expected a whole number"
                                 + (" >= 1" if field_name == "max_steps" else " >= 0"))
        if self.n_real + self.n_edited == 0:
            raise ValueError("n_real=0 and n_edited=0; a study needs at least one film")
        if not str(self.name).strip():
            raise ValueError("study name is empty")
        return self


def run_study(req: StudyRequest, G, progress: bool = False) -> int:
    """Make the study ``req`` asks for unless its database holds one of that name (run again, it
    keeps the study and its answers), and add its readers. Returns the study's id."""
    from cxr_workbench.method.optimize import LOConfig
    req.check()
    db = open_study_db(req.db)
    if db.execute("SELECT 1 FROM studies WHERE name=?", (req.name,)).fetchone() is None:
        images = Path(req.images) if req.images is not None else Path(req.db).parent / "images"
        items = prepare_items(G, images, n_real=req.n_real, n_edited=req.n_edited, seed=req.seed,
                              config=LOConfig(max_steps=req.max_steps), progress=progress)
        try:
            create_study(db, req.name, items, seed=req.seed)
        except ValueError as e:  # made by another process meanwhile: use theirs
            if "exists" not in str(e):
                raise
    for reader in req.readers:
        ensure_reader(db, reader)
    return study_id(db, req.name)
