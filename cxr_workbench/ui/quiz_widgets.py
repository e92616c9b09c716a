"""The severity quiz on the page: a student's questions one at a time, and the teacher's view of
the class's answers (``studies.quiz`` does the work; these only show it and take clicks)."""
from __future__ import annotations

import ipywidgets as ipw
from PIL import Image

from cxr_workbench.studies import quiz as qz
from cxr_workbench.ui.widgets import PerThreadDB, png_bytes

__all__ = ["QuizWidget", "ClassView"]


class QuizWidget(PerThreadDB):
    """One student answering a quiz: the films of the question, lettered; an order is typed
    (``CADB``) and a region picked; **answer** stores it at once, says whether it was right and
    moves on. A student who comes back resumes at the first unanswered question."""

    TILE = 160

    def __init__(self, db_path, quiz: str, student: str):
        super().__init__(db_path)
        self.quiz, self.student = quiz, student
        qz.next_question(self.db, quiz, student)  # an unknown quiz is named now, not at the first answer
        self.prompt = ipw.HTML()
        self.films = ipw.HBox()
        self.order = ipw.Text(placeholder="e.g. CADB then Enter", description="order", continuous_update=False)
        self.region = ipw.RadioButtons(options=list(qz.REGIONS), value=None, description="region")
        self.answer_button = ipw.Button(description="answer", button_style="primary")
        self.progress = ipw.IntProgress(min=0, description="answered")
        self.message = ipw.HTML()
        self.last = ipw.HTML()
        self.answer_button.on_click(lambda _: self.answer())
        self.order.observe(lambda ch: self.answer() if ch["new"] else None, "value")
        self.widget = ipw.VBox([ipw.HTML(f"<b>{student}</b>, quiz <i>{quiz}</i>"), self.progress, self.prompt,
                                self.films, self.order, self.region, self.answer_button, self.message, self.last])
        self.question = None
        self.show_next()

    def _tile(self, path: str, label: str):
        with Image.open(path) as im:
            img = im.convert("L").resize((self.TILE, self.TILE), Image.BILINEAR)
        return ipw.VBox([ipw.Image(value=png_bytes(img), format="png",
                                   layout=ipw.Layout(width=f"{self.TILE}px", height=f"{self.TILE}px")),
                         ipw.HTML(f"<center><b>{label}</b></center>")])

    def show_next(self):
        """Show the student's first unanswered question (where a returning student starts)."""
        q = self.question = qz.next_question(self.db, self.quiz, self.student)
        done, total = qz.quiz_progress(self.db, self.quiz, self.student)
        self.progress.max, self.progress.value = total, done
        self.order.value, self.region.value = "", None
        if q is None:
            self.prompt.value, self.films.children = f"<b>done</b>: all {total} questions answered. Thank you.", ()
            self.order.layout.display = self.region.layout.display = self.answer_button.layout.display = "none"
            self.message.value = ""
            return
        labels = q["choices"] if q["kind"] == "order" else ["before", "after"]
        self.films.children = [self._tile(p, label) for p, label in zip(q["images"], labels)]
        self.prompt.value = f"question {q['position'] + 1} of {total}: {q['prompt']}"
        self.order.layout.display = None if q["kind"] == "order" else "none"
        self.region.layout.display = None if q["kind"] == "region" else "none"

    def answer(self):
        """Store the answer shown, say how it scored, and show the next question."""
        q = self.question
        if q is None:
            return
        response = self.order.value if q["kind"] == "order" else self.region.value
        if not response:
            self.message.value = "<span style='color:#b00'>" + (
                "type the letters in order" if q["kind"] == "order" else "pick a region") + "</span>"
            return
        try:
            score = qz.answer_question(self.db, self.quiz, self.student, q["id"], response)
        except ValueError as e:
            self.order.value = ""
            self.message.value = f"<span style='color:#b00'>not stored: {e}</span>"
            return
        self.last.value = (f"question {q['position'] + 1}: answer {response!r} scored {score:.0%}"
                           + (" (right)" if score == 1 else ""))
        self.message.value = ""
        self.show_next()


class ClassView(PerThreadDB):
    """What the teacher sees: per student and per question, answered and mean score, refreshed on
    **refresh**; **export CSV** writes students.csv, questions.csv and answers.csv to ``out_dir``."""

    def __init__(self, db_path, quiz: str, out_dir):
        super().__init__(db_path)
        self.quiz, self.out_dir = quiz, out_dir
        qz.quiz_id(self.db, quiz)
        self.students, self.questions, self.message = ipw.HTML(), ipw.HTML(), ipw.HTML()
        refresh, export = ipw.Button(description="refresh"), ipw.Button(description="export CSV")
        refresh.on_click(lambda _: self.refresh())
        export.on_click(lambda _: self.export())
        self.widget = ipw.VBox([ipw.HBox([refresh, export]), self.message, ipw.HTML("<b>students</b>"),
                                self.students, ipw.HTML("<b>questions</b>"), self.questions])
        self.refresh()

    def refresh(self):
        students, questions = qz.scores(self.db, self.quiz)
        self.students.value = students.to_html(index=False) if len(students) else "<i>no answers yet</i>"
        self.questions.value = questions.to_html(index=False) if len(questions) else ""
        answered = int(students["answered"].sum()) if len(students) else 0
        self.message.value = f"{len(students)} students, {answered} answers"

    def export(self):
        try:
            paths = qz.export_scores(self.db, self.quiz, self.out_dir, overwrite=True)
            self.message.value = "written: " + ", ".join(str(p) for p in paths)
        except (OSError, ValueError) as e:
            self.message.value = f"<span style='color:#b00'>not written: {e}</span>"
