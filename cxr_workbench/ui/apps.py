"""Apps without code (issue 35, item 1): the editor, the PC browser, the reader study and the
severity quiz, each one widget built here and served by Voila from a two-cell notebook written
for the run (a title, and the call that builds the widget; Voila shows outputs, never code).

``cxr-workbench app NAME`` checks its inputs, writes the notebook into a folder of its own and
runs Voila on it, bound to localhost unless asked otherwise (the apps have no authentication).
Each browser tab gets its own kernel; answers of many students meet in one SQLite database,
which takes one writer at a time and loses none (``reader_study``).
"""
from __future__ import annotations

import copy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import ipywidgets as ipw
import nbformat

__all__ = ["APPS", "LOCALHOST", "editor_app", "pc_browser_app", "reader_app", "quiz_app", "app_notebook",
           "check_host", "serve"]

LOCALHOST = ("127.0.0.1", "localhost", "::1")


def _title(text: str, help_text: str):
    return ipw.HTML(f"<h3 style='margin:4px 0'>{text}</h3><p style='margin:0 0 8px 0'>{help_text}</p>")


def _warm_compiled(G, runner, w_ref, box, u, status) -> None:
    """Compile a copy of G for the runner while the eager one serves: the first runs answer at
    once, the later ones in about half the time (``devices.compile_synthesis``)."""
    from cxr_workbench.devices import compile_synthesis
    from cxr_workbench.method.optimize import run_method
    fast = compile_synthesis(copy.deepcopy(G))
    cfg = replace(runner.config(), max_steps=2, min_steps=2)
    for method in ("lo+dir", "lo"):  # the shapes of a run of either method
        run_method(fast, method, w_ref, box, u=u, config=cfg, progress=False)
    runner.G = fast
    status.value = "<small>generator compiled: edits now take about half the time</small>"


def editor_app(generator=None, seed: int = 0, box: str = "heart", disease: str | None = None,
               direction: str = "auto", settings: str = "interactive", out_dir=None, compile: bool = True):
    """Draw a box on a generated film and edit inside it: LO + direction (or Baseline LO, or all
    three side by side) with the editor's fast setting (``settings``: a name of
    ``optimize.NAMED_CONFIGS``), the strip drawn while it optimises, PV, severity trend and
    leakage after each run. ``compile``: compile a copy of the generator in the background when a
    C++ compiler is there. Returns the widget."""
    from cxr_workbench.assets import generator_or_default, oracle_for, pca_for
    from cxr_workbench.method.evaluate import measure
    from cxr_workbench.method.optimize import NAMED_CONFIGS, named_config
    from cxr_workbench.method.plans import plan_edit
    from cxr_workbench.model.latents import reference_latents
    from cxr_workbench.ui.widgets import OptimizationRunner, ROIDrawer
    G = generator_or_default(generator)
    pca, oracle = pca_for(G), oracle_for(G)
    out = Path(out_dir or tempfile.mkdtemp(prefix="cxr-editor-"))
    w_ref = reference_latents(G, [seed])
    plan = plan_edit(G, pca, box=box, disease=disease, direction=direction)
    drawer = ROIDrawer(G.synthesis(w_ref)[0].detach(), box=plan.box, json_path=str(out / "box.json"))
    runner = OptimizationRunner(G, w_ref, plan.box, u=plan.u, config=named_config(settings))
    chooser = ipw.Dropdown(options=sorted(NAMED_CONFIGS), value=settings, description="settings")
    readings, status = ipw.HTML(), ipw.HTML()
    state = dict(box=plan.box, disease=plan.disease)

    def new_box(b):
        p = plan_edit(G, pca, box=b, disease=state["disease"], direction=direction)  # a drawn box names no disease
        state.update(box=p.box, disease=p.disease)
        runner.set_box(p.box, p.u)

    def use_settings(change):
        runner.base_config = named_config(change["new"])
        runner.max_steps.value = runner.base_config.max_steps

    def show_readings(results):
        rows = []
        for method, traj in results.items():
            m = measure(traj, state["box"], state["disease"], oracle)[0]
            rows.append(f"<tr><td>{method}</td><td>{m['PV']:.2f}</td><td>{m['severity_trend']:.2f}</td>"
                        f"<td>{m['leakage']:.3f}</td><td>{traj.wall_time:.1f} s</td></tr>")
        readings.value = ("<table><tr><th>method</th><th>PV</th><th>severity trend</th><th>leakage</th>"
                          "<th>time</th></tr>" + "".join(rows) + "</table>")

    drawer.on_change(new_box)
    chooser.observe(use_settings, "value")
    runner.on_done.append(show_readings)
    if compile and shutil.which("g++") is not None:
        status.value = "<small>compiling the generator in the background (edits work meanwhile)</small>"
        threading.Thread(target=_warm_compiled, args=(G, runner, w_ref, plan.box, plan.u, status), daemon=True).start()
    note = ("<small>settings <b>interactive</b> optimises 4 of the 12 points and places the others between them: "
            "a strip in seconds; <b>ours</b> is the full setting of the CLI and notebooks. On the shipped generator "
            "a heart edit's PV, trend and leakage are within 10 % of the full setting's; a lung opacity edit is "
            "weaker (PV about 0.8x, and the oracle reads some films moving the other way): use <b>ours</b> for a "
            "figure or a table (benchmarks/bench_interactive.py, docs/method.md).</small>")
    return ipw.VBox([_title("Edit inside a box", f"Draw a box on the film (or pick a preset), then press <b>run</b>. "
                            f"Disease: {plan.disease}; direction: {plan.u_source}."),
                     drawer.widget, ipw.HBox([chooser, status]), ipw.HTML(note), runner.widget, readings])


def pc_browser_app(generator=None, seed: int = 0, box: str = "heart"):
    """The principal components of W around a generated film: sliders, ranking for the box, a
    strip of one PC. Returns the widget."""
    from cxr_workbench.assets import generator_or_default, pca_for
    from cxr_workbench.imaging.masks import load_box
    from cxr_workbench.model.latents import reference_latents
    from cxr_workbench.ui.widgets import PCBrowser
    G = generator_or_default(generator)
    browser = PCBrowser(G, pca_for(G), reference_latents(G, [seed])[0], box=load_box(box, G.img_resolution))
    return ipw.VBox([_title("Principal components of W", "Move a slider: the film redraws along that PC. "
                            "The ranking lists the PCs that change the box most."), browser.widget])


def _signed_in(what: str, make) -> ipw.VBox:
    """A name field and **start**; the widget ``make(name)`` builds then takes the page."""
    name = ipw.Text(placeholder="your name", description="name", continuous_update=False)
    start = ipw.Button(description="start", button_style="primary")
    message = ipw.HTML()
    sign_in = ipw.HBox([name, start])
    page = ipw.VBox([sign_in, message])

    def begin(_=None):
        # the field's value arrives as start's click blurs it, then the click: both call begin
        if page.children[0] is not sign_in:
            return
        if not name.value.strip():
            message.value = "<span style='color:#b00'>type your name first</span>"
            return
        try:
            page.children = [make(name.value.strip())]
        except ValueError as e:
            message.value = f"<span style='color:#b00'>{e}</span>"
    start.on_click(begin)
    name.observe(begin, "value")  # Enter in the field starts too
    return ipw.VBox([_title(what, "Type your name and press <b>start</b>; you can leave and come back: "
                            "your answers are kept."), page])


def reader_app(db, study: str):
    """The blinded reader study for several readers: each signs in by name and answers
    (``widgets.ReaderStudyWidget``). Returns the widget."""
    from cxr_workbench.studies import reader_study as rs
    from cxr_workbench.ui.widgets import ReaderStudyWidget
    rs.study_id(rs.open_study_db(db), study)  # a study that is not there is named now

    def make(name):
        rs.ensure_reader(rs.open_study_db(db), name)
        return ReaderStudyWidget(db, study, name).widget
    return _signed_in(f"Reader study {study!r}", make)


def quiz_app(db, quiz: str, teacher: bool = False, out_dir="quiz_scores"):
    """The severity quiz: students sign in by name and answer; ``teacher``: the class's answers
    and scores instead, with a CSV export to ``out_dir``. Returns the widget."""
    from cxr_workbench.studies import quiz as qz
    from cxr_workbench.studies.reader_study import open_study_db
    from cxr_workbench.ui.quiz_widgets import ClassView, QuizWidget
    qz.quiz_id(open_study_db(db), quiz)
    if teacher:
        return ipw.VBox([_title(f"Quiz {quiz!r}: the class", "Press <b>refresh</b> as answers come in."),
                         ClassView(db, quiz, out_dir).widget])
    return _signed_in(f"Severity quiz {quiz!r}", lambda name: QuizWidget(db, quiz, name).widget)


APPS = {"editor": editor_app, "pc-browser": pc_browser_app, "reader": reader_app, "quiz": quiz_app}


def app_notebook(name: str, params: dict):
    """The notebook Voila serves for app ``name``: a title cell and one call with ``params``."""
    if name not in APPS:
        raise ValueError(f"app {name!r}; expected one of {sorted(APPS)}")
    call = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(f"# cxr-workbench: {name}"),
        nbformat.v4.new_code_cell(f"from cxr_workbench.ui.apps import APPS\n\nAPPS[{name!r}]({call})")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def check_host(host: str, allow_remote: bool) -> str:
    """``host`` when it is localhost or the user asked for another (``allow_remote``)."""
    if host not in LOCALHOST and not allow_remote:
        raise ValueError(f"--host {host}: the apps have no authentication, so they bind to localhost only; "
                         "pass --allow-remote to serve them to your network on purpose")
    return host


def serve(name: str, params: dict, *, port: int = 8866, host: str = "127.0.0.1", allow_remote: bool = False,
          run_dir=None) -> int:
    """Write app ``name``'s notebook into ``run_dir`` (default: a new temporary folder, removed
    afterwards) and run Voila on it until interrupted. Returns Voila's exit status."""
    check_host(host, allow_remote)
    own = run_dir is None
    folder = Path(tempfile.mkdtemp(prefix="cxr-app-") if own else run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(app_notebook(name, params), path)
    cmd = [sys.executable, "-m", "voila", str(path), f"--port={port}", f"--Voila.ip={host}", "--no-browser",
           "--Voila.port_retries=0"]
    print(f"serving the {name} app at http://{'localhost' if host in LOCALHOST else host}:{port}/ "
          "(Ctrl+C stops it)", flush=True)
    # stopped by SIGTERM as by Ctrl+C: Voila and its kernels go too, and the folder is removed (the
    # handler is in place before Voila starts, so no SIGTERM falls between the two)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    proc = None
    try:
        proc = subprocess.Popen(cmd)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
