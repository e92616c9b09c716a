"""The apps without code, served by ``cxr-workbench app`` (Voila) and driven in Debian's Chromium:
the editor loads with no code on the page, a box drawn with the mouse is edited and its readings
shown; a PC slider redraws the film; quiz answers typed and clicked reach the database, and the
teacher's view shows them. Screenshots go to out/browser/.
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_browser import CHROMIUM, FLAGS, shot

from cxr_workbench.studies import quiz as qz
from cxr_workbench.studies import reader_study as rs

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve(tmp_path_factory, shared_cache):
    """Start ``cxr-workbench app ARGS`` on a free loopback port; yields a function returning the URL.
    Every server is stopped at the end."""
    root = tmp_path_factory.mktemp("apps")
    servers = []

    def start(*args):
        port = _free_port()
        log = open(root / f"app{port}.log", "w")
        env = dict(os.environ, CXR_WORKBENCH_CACHE=str(shared_cache), JUPYTER_CONFIG_DIR=str(root / ".config"),
                   JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
        proc = subprocess.Popen([sys.executable, "-m", "cxr_workbench.ui.cli", "app", *args, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        servers.append((proc, port, log))
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"http://127.0.0.1:{port}/"
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(f"app {args} did not start: {(root / f'app{port}.log').read_text()[-2000:]}")
                time.sleep(0.5)
    yield start
    for proc, port, log in servers:
        proc.terminate()
        proc.wait(60)
        log.close()
        with pytest.raises(OSError):  # Voila itself stopped with the app, not left serving
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def open_app(browser, url, ready: str):
    page = browser.new_page(viewport={"width": 1300, "height": 1300})
    page.set_default_timeout(180_000)
    page.goto(url)
    page.wait_for_function(f"() => document.body.innerText.includes({ready!r})", timeout=240_000)
    assert "import " not in page.inner_text("body")  # widgets and text only: no code on the page
    return page


def test_editor_app_edits_a_box_drawn_with_the_mouse(browser, serve):
    page = open_app(browser, serve("editor", "--no-compile", "--seed", "3"), "Edit inside a box")
    canvas = page.locator(".widget-box img").first
    b = canvas.bounding_box()
    x0, y0 = b["x"] + b["width"] * 0.25, b["y"] + b["height"] * 0.55
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + b["width"] * 0.3, y0 + b["height"] * 0.25, steps=10)
    page.mouse.up()
    page.wait_for_function("() => document.body.innerText.includes('will be used by the next run')", timeout=60_000)
    assert "box 16,35 - 35,51" in page.inner_text("body")  # the drawn box, in generator pixels
    page.locator("button", has_text="run").first.click()
    page.wait_for_function("() => document.body.innerText.includes('severity trend')", timeout=300_000)
    text = page.inner_text("body")
    assert "lo+dir: 120 steps, max_steps" in text, text[-800:]
    strip = page.locator("img[src^='blob:'], img[src^='data:']").last
    assert strip.evaluate("el => el.naturalWidth") > 500  # the strip of 13 tiles
    shot(page.locator("body"), "app_editor.png")


def test_pc_browser_app_slider_redraws(browser, serve):
    page = open_app(browser, serve("pc-browser", "--seed", "0"), "Principal components of W")
    slider = page.locator(".widget-slider", has_text="PC 0").first
    image = page.locator(".widget-image").first
    before = image.get_attribute("src")
    handle = slider.locator(".noUi-handle").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 70, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    page.wait_for_function("([img, before]) => img.getAttribute('src') !== before",
                           arg=[image.element_handle(), before], timeout=60_000)
    shot(page.locator("body"), "app_pc_browser.png")


def test_quiz_app_answers_reach_the_database_and_the_teacher_sees_them(browser, serve, tmp_path):
    films = []
    for k in range(4):
        path = tmp_path / f"f{k}.png"
        Image.fromarray(np.full((32, 32), 40 + 50 * k, np.uint8)).save(path)
        films.append(path)
    db_path = tmp_path / "class.db"
    db = rs.open_study_db(db_path)
    qz.create_quiz(db, "class", [
        dict(kind="order", prompt="order them", images=films[:3], choices=list("ABC"), truth="CAB"),
        dict(kind="region", prompt="which region", images=films[2:], choices=list(qz.REGIONS), truth="heart")])
    page = open_app(browser, serve("quiz", "--db", str(db_path), "--quiz", "class"), "Severity quiz")
    page.locator("input[placeholder='your name']").click()
    page.locator("input[placeholder='your name']").fill("ann")
    page.locator("button", has_text="start").click()
    page.wait_for_function("() => document.body.innerText.includes('question 1 of 2')")
    first = qz.next_question(db, "class", "ann")
    if first["kind"] == "order":
        answers = [("order", "CAB"), ("region", "heart")]
    else:
        answers = [("region", "heart"), ("order", "CAB")]
    for k, (kind, answer) in enumerate(answers):
        if kind == "order":
            field = page.locator("input[placeholder='e.g. CADB then Enter']")
            field.click()  # focused, so that Enter sends the value
            field.fill(answer)
            field.press("Enter")
        else:
            page.locator("label", has_text=answer).first.click()
            page.locator("button", has_text="answer").click()
        page.wait_for_function(f"() => document.body.innerText.includes('question {k + 1}: answer')")
    page.wait_for_function("() => document.body.innerText.includes('all 2 questions answered')")
    shot(page.locator("body"), "app_quiz.png")
    rows = rs.open_study_db(db_path, readonly=True).execute(
        "SELECT q.kind, r.response, r.score FROM responses r JOIN questions q ON q.id=r.question_id "
        "ORDER BY q.position").fetchall()
    assert sorted(rows) == [("order", "CAB", 1.0), ("region", "heart", 1.0)]
    teacher = open_app(browser, serve("quiz", "--db", str(db_path), "--quiz", "class", "--teacher",
                                      "--out", str(tmp_path / "csv")), "1 students, 2 answers")
    assert "100.0" in teacher.inner_text("body")
    teacher.locator("button", has_text="export CSV").click()
    teacher.wait_for_function("() => document.body.innerText.includes('written:')")
    assert (tmp_path / "csv" / "students.csv").read_text().startswith("student,answered")
    shot(teacher.locator("body"), "app_quiz_teacher.png")
