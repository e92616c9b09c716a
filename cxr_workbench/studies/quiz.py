"""A severity quiz for a class, built from trajectories (issue 35, item 3).

Two kinds of question: **order** ("order these films from least to most severe": films from
one LO + direction trajectory, shown shuffled; the truth is the oracle's reading of each, which on
a trajectory with a severity trend of 1 is the trajectory's own order) and **region** ("which
region changed": the reference and the last film of an edit; the truth is the box the edit was
made in). Students are the readers of the reader-study database (``reader_study``), which holds
the quiz too: every answer is committed as it is given, one per student and question, so many
students can answer at once (one server, a kernel each) and none is lost.

Scores: an order answer scores the share of pairs of films it puts in the true order (1: all, 0.5:
no better than chance on average); a region answer 1 or 0. ``scores`` gives them per student and
per question, ``export_scores`` writes them as CSV.
"""
from __future__ import annotations

import itertools
import json
import sqlite3
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.studies.reader_study import _now, ensure_reader

__all__ = ["KINDS", "REGIONS", "QuizRequest", "check_counts", "film_names", "run_quiz", "prepare_quiz",
           "create_quiz", "quiz_id", "next_question", "quiz_progress", "answer_question", "score_answer", "responses",
           "scores", "export_scores"]

KINDS = ("order", "region")
REGIONS = ("heart", "lung_upper_right", "lung_upper_left", "lung_lower_right", "lung_lower_left")


def _question(kind: str, prompt: str, images: list, choices: list, truth) -> dict:
    return dict(kind=kind, prompt=prompt, images=[str(p) for p in images], choices=list(choices), truth=truth)


def prepare_quiz(G, out_dir, *, n_order: int = 4, n_region: int = 4, films: int = 4, seed: int = 0,
                 config=None, reader=None, progress: bool = False) -> list[dict]:
    """Questions from LO + direction edits of G's seeds (``7_000 + seed`` on), the disease and
    its box drawn for each edit from where the disease occurs (``DISEASES[...].zones``). Order
    questions show ``films`` films of a trajectory spread from the reference to its end; region
    questions the reference and the end. Films are written as PNG into ``out_dir``.

    ``config``: the LOConfig (default: the augmentation setting, whose larger in-box change a
    student can see); ``reader``: what gives the truth of an order question (default: the oracle
    for G). Returns question dicts for ``create_quiz``."""
    from cxr_workbench.assets import oracle_for, pca_for
    from cxr_workbench.imaging.strips import to_uint8
    from cxr_workbench.io import save_png
    from cxr_workbench.method.optimize import named_config, run_method
    from cxr_workbench.method.plans import plan_edit
    from cxr_workbench.model.latents import reference_latents
    from cxr_workbench.model.readers import as_reader
    check_counts(n_order, n_region, films)
    cfg = config or named_config("augment")
    reader = as_reader(reader if reader is not None else oracle_for(G))
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    pca = pca_for(G)
    kinds = ["order"] * n_order + ["region"] * n_region
    diseases = [list(DISEASES)[i % len(DISEASES)] for i in range(len(kinds))]
    zones = []
    for d in diseases:
        names, weights = zip(*DISEASES[d].zones)
        zones.append(str(rng.choice(names, p=np.array(weights) / sum(weights))))
    plans = {(d, z): plan_edit(G, pca, box=z, disease=d, layers=cfg.layers) for d, z in set(zip(diseases, zones))}
    chosen = [plans[d, z] for d, z in zip(diseases, zones)]
    traj = run_method(G, "lo+dir", reference_latents(G, [7_000 + seed + i for i in range(len(kinds))]),
                      [p.box for p in chosen], u=[p.u for p in chosen], config=cfg, progress=progress)
    questions = []
    for q, (kind, disease, zone) in enumerate(zip(kinds, diseases, zones)):
        seq = traj.sequence(q)                                       # [n + 1, C, H, W]
        def png(i, name, q=q, seq=seq):
            return save_png(out_dir / _film_name(q, name), to_uint8(seq[i:i + 1])[0])
        if kind == "region":
            images = [png(0, "before"), png(len(seq) - 1, "after")]
            questions.append(_question(kind, "Which region changed from the first film to the second?", images,
                                       REGIONS, zone))
            continue
        picks = np.linspace(0, len(seq) - 1, films).round().astype(int)
        shown = rng.permutation(films)                               # shown[k]: which pick is film k
        letters = string.ascii_uppercase[:films]
        images = [png(int(picks[j]), letters[k]) for k, j in enumerate(shown)]
        reading = reader.predict(seq[picks[shown]])[reader.severity(disease)]
        truth = "".join(letters[k] for k in np.argsort(reading, kind="stable"))
        questions.append(_question(kind, f"Order these films from the least to the most severe {disease}: "
                                         f"type the letters, e.g. {letters[::-1]}.", images, letters, truth))
    return questions


def _film_name(question: int, film: str) -> str:
    return f"q{question:03d}_{film}.png"


def film_names(n_order: int, n_region: int, films: int) -> list[str]:
    """The files of a quiz's films (``prepare_quiz`` writes them): each order question's films
    A, B, ... then each region question's before and after."""
    return ([_film_name(q, letter) for q in range(n_order) for letter in string.ascii_uppercase[:films]]
            + [_film_name(q, side) for q in range(n_order, n_order + n_region) for side in ("before", "after")])


@dataclass(frozen=True)
class QuizRequest:
    """A quiz to make (``cxr-workbench quiz make``): the database, its name, where the films go
    (written as one set: refused where films of those names exist unless ``overwrite``), how many
    questions of each kind, films per order question and the seed of the edits."""

    db: Path
    name: str
    films_dir: Path
    n_order: int = 4
    n_region: int = 4
    films: int = 4
    seed: int = 0
    overwrite: bool = False   # films of these names in films_dir may be replaced

    def check(self) -> "QuizRequest":
        """The counts and the name, checked before a model is loaded; returns the request."""
        check_counts(self.n_order, self.n_region, self.films)
        if not str(self.name).strip():
            raise ValueError("quiz name is empty")
        return self


def check_counts(n_order: int, n_region: int, films: int) -> None:
    """Questions of each kind and films per order question, or a one-line refusal."""
    if min(n_order, n_region) < 0 or n_order + n_region == 0:
        raise ValueError(f"n_order={n_order}, n_region={n_region}; expected at least one question")
    if not 2 <= films <= len(string.ascii_uppercase):
        raise ValueError(f"films={films}; expected 2 to 26 films per order question")


def run_quiz(req: QuizRequest, G, progress: bool = False) -> list[dict]:
    """Make the quiz ``req`` asks for on G; a name the database holds is refused before any edit.
    Returns its questions (``prepare_quiz``)."""
    from cxr_workbench.io import output_set
    from cxr_workbench.studies.reader_study import open_study_db
    req.check()
    db = open_study_db(req.db)
    if db.execute("SELECT 1 FROM quizzes WHERE name=?", (req.name,)).fetchone():
        raise ValueError(f"quiz {req.name!r} exists in {req.db}; choose another name")
    names = film_names(req.n_order, req.n_region, req.films)
    with output_set(req.films_dir, names, overwrite=req.overwrite) as staging:  # all the films or none
        questions = prepare_quiz(G, staging, n_order=req.n_order, n_region=req.n_region, films=req.films,
                                 seed=req.seed, progress=progress)
    final = Path(req.films_dir)
    questions = [dict(q, images=[str(final / Path(p).name) for p in q["images"]]) for q in questions]
    create_quiz(db, req.name, questions, seed=req.seed)
    return questions


def create_quiz(db, name: str, questions: list[dict], seed: int = 0) -> int:
    """A quiz of ``questions`` (from ``prepare_quiz``), asked in an order shuffled by ``seed``."""
    if not questions:
        raise ValueError("a quiz needs at least one question")
    for q in questions:
        if q.get("kind") not in KINDS:
            raise ValueError(f"question {q.get('prompt')!r}: kind={q.get('kind')!r}; expected one of {KINDS}")
        for p in q["images"]:
            if not Path(p).is_file():
                raise ValueError(f"question {q['prompt']!r}: no such image file {p!r}")
    order = np.random.default_rng(seed).permutation(len(questions))
    with db:
        db.execute("BEGIN")
        try:  # the insert checks the name: two teachers creating one quiz at once, one wins
            qid = db.execute("INSERT INTO quizzes (name, seed, created) VALUES (?, ?, ?)",
                             (name, seed, _now())).lastrowid
        except sqlite3.IntegrityError:
            raise ValueError(f"quiz {name!r} exists; choose another name") from None
        db.executemany("INSERT INTO questions (quiz_id, position, kind, prompt, images, choices, truth) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(qid, pos, q["kind"], q["prompt"], json.dumps([str(Path(p).resolve()) for p in q["images"]]),
                         json.dumps(q["choices"]), json.dumps(q["truth"]))
                        for pos, q in ((pos, questions[i]) for pos, i in enumerate(order))])
    return qid


def quiz_id(db, name: str) -> int:
    """The id of the quiz called ``name`` (an error names the known ones)."""
    row = db.execute("SELECT id FROM quizzes WHERE name=?", (name,)).fetchone()
    if row is None:
        known = [r[0] for r in db.execute("SELECT name FROM quizzes ORDER BY id")]
        raise ValueError(f"quiz {name!r} does not exist; known: {known}")
    return row[0]


def next_question(db, quiz: str, student: str) -> dict | None:
    """The student's first unanswered question (id, position, kind, prompt, images, choices; never
    the truth), or None when all are answered. A read: a student not seen yet starts at the first."""
    rid = _student(db, student)
    row = db.execute("SELECT q.id, q.position, q.kind, q.prompt, q.images, q.choices FROM questions q "
                     "WHERE q.quiz_id=? AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.question_id=q.id "
                     "AND r.reader_id=?) ORDER BY q.position LIMIT 1", (quiz_id(db, quiz), rid)).fetchone()
    if row is None:
        return None
    return dict(id=row[0], position=row[1], kind=row[2], prompt=row[3], images=json.loads(row[4]),
                choices=json.loads(row[5]))


def quiz_progress(db, quiz: str, student: str) -> tuple[int, int]:
    """(answered, total) questions of the quiz for this student (a read: nothing is added)."""
    qid, rid = quiz_id(db, quiz), _student(db, student)
    total = db.execute("SELECT count(*) FROM questions WHERE quiz_id=?", (qid,)).fetchone()[0]
    done = db.execute("SELECT count(*) FROM responses r JOIN questions q ON q.id=r.question_id "
                      "WHERE q.quiz_id=? AND r.reader_id=?", (qid, rid)).fetchone()[0]
    return done, total


def _student(db, name: str) -> int | None:
    """The student's reader id, or None for one who has answered nothing yet (nothing is written)."""
    if not name or not name.strip():
        raise ValueError("reader name is empty")
    row = db.execute("SELECT id FROM readers WHERE name=?", (name,)).fetchone()
    return None if row is None else row[0]


def score_answer(kind: str, response: str, truth: str, choices: list) -> float:
    """An answer's score: for an order question the share of pairs put in the true order, for a
    region question 1 when it names the region; an answer that is not one is refused by name."""
    if kind == "region":
        if response not in choices:
            raise ValueError(f"answer {response!r}; expected one of {choices}")
        return float(response == truth)
    order = response.strip().upper().replace(" ", "").replace(",", "")
    if sorted(order) != sorted(truth):
        raise ValueError(f"answer {response!r}; expected each of the letters {''.join(sorted(truth))} once")
    rank = {c: i for i, c in enumerate(order)}
    pairs = list(itertools.combinations(truth, 2))   # (less, more severe) in truth
    return sum(rank[a] < rank[b] for a, b in pairs) / len(pairs)


def answer_question(db, quiz: str, student: str, question: int, response: str) -> float:
    """Record a student's answer (committed at once) and return its score. A second answer to
    the same question is refused: the first one counts."""
    qid, rid = quiz_id(db, quiz), ensure_reader(db, student)
    row = db.execute("SELECT kind, choices, truth FROM questions WHERE id=? AND quiz_id=?", (question, qid)).fetchone()
    if row is None:
        raise ValueError(f"question {question} is not in quiz {quiz!r}")
    kind, choices, truth = row[0], json.loads(row[1]), json.loads(row[2])
    score = score_answer(kind, response, truth, choices)
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO responses (question_id, reader_id, response, score, answered_at) "
                       "VALUES (?, ?, ?, ?, ?)", (question, rid, response.strip(), score, _now()))
    except sqlite3.IntegrityError:
        raise ValueError(f"student {student!r} has answered question {question}; the first answer counts") from None
    return score


def responses(db, quiz: str):
    """Every answer with its truth and score: a pandas DataFrame (one row per student and question)."""
    import pandas as pd
    rows = db.execute("SELECT s.name, q.position, q.kind, r.response, q.truth, r.score, r.answered_at "
                      "FROM responses r JOIN questions q ON q.id=r.question_id JOIN readers s ON s.id=r.reader_id "
                      "WHERE q.quiz_id=? ORDER BY s.name, q.position", (quiz_id(db, quiz),)).fetchall()
    df = pd.DataFrame(rows, columns=["student", "question", "kind", "answer", "truth", "score", "answered_at"])
    df["question"] += 1
    df["truth"] = [json.loads(t) for t in df["truth"]]
    return df


def scores(db, quiz: str):
    """(per student, per question) DataFrames: answered, mean score (% to 0.1) and, per question,
    the most common answer: what a teacher reads after class."""
    import pandas as pd
    df = responses(db, quiz)
    total = db.execute("SELECT count(*) FROM questions WHERE quiz_id=?", (quiz_id(db, quiz),)).fetchone()[0]
    students = df.groupby("student").agg(answered=("score", "size"), score=("score", "mean")).reset_index()
    students["score %"] = (100 * students.pop("score")).round(1)
    students["of"] = total
    questions = df.groupby(["question", "kind"]).agg(
        answers=("score", "size"), score=("score", "mean"), truth=("truth", "first"),
        most_common=("answer", lambda a: a.mode().iloc[0])).reset_index()
    questions["score %"] = (100 * questions.pop("score")).round(1)
    return students, pd.DataFrame(questions)


def export_scores(db, quiz: str, out_dir, overwrite: bool = False) -> list[Path]:
    """students.csv, questions.csv and answers.csv of the quiz, written together as one set
    (``io.output_set``: all or none; an existing set only with ``overwrite``)."""
    from cxr_workbench.io import output_set
    students, questions = scores(db, quiz)
    tables = {"students.csv": students, "questions.csv": questions, "answers.csv": responses(db, quiz)}
    with output_set(out_dir, tables, overwrite=overwrite) as staging:
        for name, table in tables.items():
            table.to_csv(staging / name, index=False)
    return [Path(out_dir) / name for name in tables]
