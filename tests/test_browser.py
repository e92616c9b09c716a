"""The notebooks in a real browser: JupyterLab on a loopback port, Debian's Chromium driven by
Playwright. The quickstart's figures show as images; a plotly point hovered with the mouse says what
it is; five keyed reader answers reach the database and a reloaded page resumes at the next item.
Each notebook run here is then saved and checked as the headless runs are (tests/test_notebooks.py
runs the others).
The PC browser's slider and the editor's box drawn with the mouse, then run, are the same widgets
in the apps (tests/test_apps.py). Screenshots go to out/browser/.

Run alone with ``pytest -m browser``. Chromium comes from Debian (``.ci/run`` and ``make test``
install it); Playwright's own browser download does not work offline.
"""
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import check_executed_notebook

from cxr_workbench.ui.notebooks import NOTEBOOK_DIR, inject_parameters

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "out" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


# Small settings; the reader study has more items than the five answers typed, to see it resume.
NOTEBOOKS = {"00_quickstart": dict(MAX_STEPS=15),
             "04_umap_trajectories": dict(SEEDS=[0, 1], MAX_STEPS=10),
             "08_reader_study": dict(N_REAL=4, N_EDITED=3, MAX_STEPS=5)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_cache):
    """A JupyterLab server on a free loopback port, isolated from the user's settings and workspaces,
    serving small-setting copies of the notebooks in NOTEBOOKS. Yields (url, token, folder)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's chromium (apt-get install chromium)")
    root = tmp_path_factory.mktemp("lab")
    for name, params in NOTEBOOKS.items():
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        nbformat.write(inject_parameters(nb, dict(params, OUT_DIR=str(root / f"out{name[:2]}"))),
                       root / f"{name}.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(os.environ, CXR_WORKBENCH_CACHE=str(shared_cache),
               JUPYTER_CONFIG_DIR=str(root / ".config"), JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"), JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"))
    news = root / ".settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no "Jupyter news?" toast over the screenshots
    log = open(root / "lab.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
                               f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                               "--ServerApp.allow_root=True", "--LabApp.news_url=None"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token, root
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def open_and_run_all(browser, lab, name, done_text, idle: bool = True, page=None):
    """Open a notebook (in ``page``, or a new one), run all cells from the command palette, wait for
    ``done_text`` to appear and (``idle``) for the kernel to finish every cell."""
    url, token, _ = lab
    if page is None:
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(120_000)
    page.goto(f"{url}/lab/tree/{name}.ipynb?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible")
    page.wait_for_function("() => document.body.innerText.includes('Idle')")
    page.locator(".jp-Notebook").first.click()
    palette(page, "Clear Outputs of All Cells")  # a reopened notebook may hold an autosaved run's outputs
    palette(page, "Run All Cells")
    page.wait_for_function(f"() => document.body.innerText.includes({done_text!r})", timeout=600_000)
    if idle:
        wait_idle(page)
    return page


def palette(page, command: str):
    page.keyboard.press("Control+Shift+C")
    page.keyboard.type(command)
    page.locator(".lm-CommandPalette-item.lm-mod-active", has_text=command).first.wait_for()
    page.keyboard.press("Enter")


def wait_idle(page, timeout_ms: int = 600_000):
    """Wait until no cell is running and the kernel says Idle: a widget touched while later cells
    still run answers only when they finish, and a slower machine must not turn that into a failure."""
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-InputPrompt')].map(p => p.innerText);
        return !prompts.some(t => t.includes('*')) && document.body.innerText.includes('Idle');
    }""", timeout=timeout_ms)


def save_and_check(page, lab, name):
    """Save the notebook run in JupyterLab and check it as the headless runs are checked
    (``conftest.check_executed_notebook``: no error, figures as images, its files, its HTML)."""
    _, _, root = lab
    path = root / f"{name}.ipynb"
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    deadline = time.time() + 60
    while True:  # the save lands when the file holds the run's outputs
        try:
            nb = nbformat.read(path, as_version=4)
        except ValueError:  # caught mid-write: Jupyter's "atomic" save backs the file up, then writes it in place
            nb = None
        if nb is not None and any(c.get("outputs") for c in nb.cells if c.cell_type == "code") \
                or time.time() > deadline:
            break
        time.sleep(0.5)
    assert nb is not None, f"{path} is not a notebook 60 s after the save"
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} was not saved with its outputs"
    return check_executed_notebook(name, nb, root / f"out{name[:2]}")


def shot(locator, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(SHOTS / name))


def test_quickstart_figures_are_images_on_the_page(browser, lab):
    page = open_and_run_all(browser, lab, "00_quickstart", "LO + direction: PV")
    assert "<Figure size" not in page.locator(".jp-Notebook").inner_text()
    figures = page.locator(".jp-OutputArea-output img")
    sizes = [img.evaluate("el => [el.naturalWidth, el.naturalHeight, el.complete]") for img in figures.all()]
    assert len(sizes) >= 2 and all(complete for _, _, complete in sizes), sizes  # samples and the comparison
    comparison = page.locator(".jp-Cell").filter(has_text="comparison_figure(").locator(".jp-OutputArea-output img")
    assert comparison.count() == 1
    comparison.scroll_into_view_if_needed()
    width, height = comparison.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    assert width > 600 and height > 300 and comparison.is_visible()
    shot(page.locator(".jp-Cell").filter(has_text="comparison_figure(").first, "quickstart_comparison.png")
    save_and_check(page, lab, "00_quickstart")


def test_umap_plotly_hover_names_the_point(browser, lab):
    page = open_and_run_all(browser, lab, "04_umap_trajectories", "UMAP of latent trajectories")
    plot = page.locator(".js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    page.wait_for_function("(el) => el._fullLayout && el._fullData.length > 0", arg=plot.element_handle())
    # UMAP's layout differs from machine to machine, so no point is known in advance: hover the point
    # of the first trajectory trace drawn farthest from every point of the other traces (a reference
    # marker over it would take the hover), found with plotly's own axes.
    x, y = plot.evaluate("""el => {
        const L = el._fullLayout, r = el.getBoundingClientRect();
        const px = (d, i) => [L.xaxis.d2p(d.x[i]), L.yaxis.d2p(d.y[i])];
        const [d, ...rest] = el._fullData;
        const others = rest.flatMap(o => [...o.x.keys()].map(i => px(o, i)));
        let best = 0, bestGap = -1;
        for (let i = 0; i < d.x.length; i++) {
            const [a, b] = px(d, i);
            const gap = Math.min(Infinity, ...others.map(([p, q]) => Math.hypot(a - p, b - q)));
            if (gap > bestGap) { best = i; bestGap = gap; }
        }
        const [a, b] = px(d, best);
        return [r.left + L.margin.l + a, r.top + L.margin.t + b];
    }""")
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=5)
    label = page.locator(".js-plotly-plot .hoverlayer .hovertext").first
    label.wait_for(state="visible", timeout=30_000)
    text = label.text_content()
    assert "step" in text and "reference" in text, text
    shot(plot, "umap_hover.png")
    html = save_and_check(page, lab, "04_umap_trajectories")
    assert "Plotly.newPlot" in html and 'src="https://cdn.plot.ly' not in html  # plotly.js inlined


def test_reader_study_keyed_answers_reach_the_database_and_resume_after_reload(browser, lab):
    import sqlite3
    page = open_and_run_all(browser, lab, "08_reader_study", "real vs synthetic")
    widget = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-checkbox")).first
    keys = widget.locator("input[type=text]").first
    typed = ["co4", "n2", "c5", "o1", "n3"]
    for k, answer in enumerate(typed):
        keys.click()
        keys.fill(answer)
        keys.press("Enter")
        page.wait_for_function("([el, n]) => el.innerText.includes(`item ${n} of 7`)",
                               arg=[widget.element_handle(), k + 2], timeout=60_000)
    assert "not stored" not in widget.inner_text()
    _, _, root = lab
    db = sqlite3.connect(root / "out08" / "study.db")
    rows = db.execute("SELECT a.cardiomegaly, a.opacity, a.quality FROM answers a JOIN readers r ON r.id=a.reader_id "
                      "JOIN items i ON i.id=a.item_id WHERE r.name='reader 1' ORDER BY i.position").fetchall()
    db.close()
    assert rows == [(1, 1, 4), (0, 0, 2), (1, 0, 5), (0, 1, 1), (0, 0, 3)]
    shot(widget, "reader_study.png")
    # A reloaded page, run again, resumes at the sixth item with five answered
    page.on("dialog", lambda dialog: dialog.accept())
    page.reload()
    open_and_run_all(browser, lab, "08_reader_study", "real vs synthetic", page=page)
    widget = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-checkbox")).first
    assert "item 6 of 7" in widget.inner_text()
    width = widget.locator(".progress-bar").first.evaluate("el => parseFloat(el.style.width)")
    assert abs(width - 100 * 5 / 7) < 0.1, width
    save_and_check(page, lab, "08_reader_study")
