"""ipywidgets user interfaces: PC browser, ROI drawer, optimisation runner.

Every widget keeps its state in plain attributes and ipywidgets traits, so it can be driven from
Python (tests do exactly that) as well as by the mouse. Images are shown as PNG bytes in
``ipywidgets.Image``; nothing here needs a running browser to compute.
"""
from __future__ import annotations

import io
import threading
from dataclasses import replace
from pathlib import Path

import ipywidgets as ipw
import torch
from PIL import Image

from cxr_workbench.imaging.diseases import DISEASES, check_disease
from cxr_workbench.imaging.masks import PRESETS, Box, preset
from cxr_workbench.imaging.strips import display_scale, strip_image
from cxr_workbench.method.directions import save_direction
from cxr_workbench.method.optimize import METHOD_LABELS, LOConfig, run_method
from cxr_workbench.method.pca import WPCA, pc_strip, rank_pcs_for_box
from cxr_workbench.model.latents import apply_direction, synthesize
from cxr_workbench.studies.figures import loss_figure

__all__ = ["png_bytes", "figure_png", "PCBrowser", "ROIDrawer", "OptimizationRunner", "PerThreadDB",
           "ReaderStudyWidget"]


def png_bytes(img: Image.Image) -> bytes:
    """A uint8 image as PNG bytes (for ipywidgets.Image)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


class PCBrowser:
    """Browse PCs of W around a reference: sliders in units of each PC's sigma, a layer range,
    the PC ranking for a box, a strip preview of one PC, its sign, and "use as u"."""

    def __init__(self, G, pca: WPCA, w_ref: torch.Tensor, box: Box | None = None, n_sliders: int = 12,
                 direction_path=None):
        self.G, self.pca, self.box = G, pca, box
        self.w_ref = w_ref.reshape(1, G.num_ws, G.w_dim)
        self.direction_path = Path(direction_path) if direction_path else None
        self.u: torch.Tensor | None = None
        self.u_source = ""
        n_sliders = min(n_sliders, len(pca.components))
        # A redraw takes ~60 ms (benchmarks/bench_slider.py): fast enough to follow the slider live.
        wide = dict(layout=ipw.Layout(width="330px"), style={"description_width": "70px"})
        self.sliders = [ipw.FloatSlider(value=0.0, min=-3, max=3, step=0.25, description=f"PC {k}",
                                        continuous_update=True, readout_format="+.2f", **wide)
                        for k in range(n_sliders)]
        self.layers = ipw.IntRangeSlider(value=(0, G.num_ws - 1), min=0, max=G.num_ws - 1, description="W+ layers",
                                         **wide)
        self.pc = ipw.Dropdown(options=list(range(len(pca.components))), value=0, description="strip PC")
        self.sign = ipw.ToggleButtons(options=[("+u", 1), ("-u", -1)], value=1, description="sign")
        self.use = ipw.Button(description="use as u", button_style="success")
        self.image = ipw.Image(format="png")
        self.strip = ipw.Image(format="png")
        self.ranking = ipw.HTML()
        self.status = ipw.HTML()
        for s in self.sliders:
            s.observe(lambda _: self.redraw(), "value")
        self.layers.observe(lambda _: self.refresh(), "value")
        self.pc.observe(lambda _: self.draw_strip(), "value")
        self.sign.observe(lambda _: self.draw_strip(), "value")
        self.use.on_click(lambda _: self.use_direction())
        units = ipw.HTML("<small>sliders in standard deviations (σ) of each PC over W</small>")
        self.widget = ipw.HBox([ipw.VBox([self.image, self.status]),
                                ipw.VBox([self.layers, units, *self.sliders], layout=ipw.Layout(min_width="340px")),
                                ipw.VBox([self.pc, self.sign, self.strip, self.use, self.ranking])])
        self.refresh()

    @property
    def layer_list(self) -> list[int]:
        lo, hi = self.layers.value
        return list(range(lo, hi + 1))

    def current_ws(self) -> torch.Tensor:
        """W+ latent after the slider moves: [1, num_ws, w_dim]."""
        ws = self.w_ref.clone()
        for k, s in enumerate(self.sliders):
            if s.value:
                amount = s.value * float(self.pca.std[k])
                ws = apply_direction(ws, self.pca.direction(k), [amount], self.layer_list)[:, 0]
        return ws

    def redraw(self):
        img = synthesize(self.G, self.current_ws())
        self.current_image = img[0]
        self.image.value = png_bytes(strip_image([img], self.box, scale=display_scale(self.G.img_resolution)))

    def draw_strip(self, sigmas=(-3, -1.5, 0, 1.5, 3)):
        imgs = pc_strip(self.G, self.w_ref[0], self.pca, self.pc.value, sigmas=sigmas, layers=self.layer_list,
                        sign=self.sign.value)
        self.strip_images = imgs
        self.strip.value = png_bytes(strip_image([imgs], self.box, scale=display_scale(self.G.img_resolution, 128)))

    def draw_ranking(self, n_pcs: int = 10):
        if self.box is None:
            self.rows = []
            self.ranking.value = "<i>draw a box to rank PCs by how local they are to it</i>"
            return
        self.rows = rank_pcs_for_box(self.G, self.w_ref, self.pca, self.box, n_pcs=n_pcs, layers=self.layer_list)
        body = "".join(f"<tr><td>{r['pc']}</td><td>{r['inside_share']:.2f}</td><td>{r['lift']:.2f}</td>"
                       f"<td>{'+u' if r['brightens'] > 0 else '-u'} brightens</td></tr>" for r in self.rows[:6])
        self.ranking.value = ("<b>PCs local to the box</b><table><tr><th>PC</th><th>share</th><th>lift</th>"
                              f"<th>sign</th></tr>{body}</table>")

    def set_box(self, box: Box | None):
        self.box = box
        self.refresh()

    def refresh(self):
        self.redraw()
        self.draw_strip()
        self.draw_ranking()

    def pick(self, pc: int | None = None, sign: int | None = None, disease: str = "cardiomegaly") -> torch.Tensor:
        """Choose PC ``pc`` (None: the most box-local) with ``sign`` (None: the sign that changes the
        box the way ``disease`` does) and hand it on as u (see ``use_direction``)."""
        if (pc is None or sign is None) and not self.rows:
            raise ValueError("pick(pc=None or sign=None) needs a box to rank PCs; give both pc and sign")
        k = self.rows[0]["pc"] if pc is None else int(pc)
        if sign is None:
            ranked = self.rows if any(r["pc"] == k for r in self.rows) else rank_pcs_for_box(
                self.G, self.w_ref, self.pca, self.box, n_pcs=k + 1, layers=self.layer_list)
            row = next(r for r in ranked if r["pc"] == k)
            sign = DISEASES[check_disease(disease)].sign * row["brightens"]
        self.pc.value, self.sign.value = k, sign
        return self.use_direction()

    def use_direction(self) -> torch.Tensor:
        """Hand PC ``pc`` with ``sign`` to the next step (and save it for the CLI, if a path is set)."""
        k, sign = self.pc.value, self.sign.value
        self.u = self.pca.direction(k, sign)
        self.u_source = f"PC {k} (sign {sign:+d})"
        msg = f"u = {self.u_source}"
        if self.direction_path is not None:
            save_direction(self.direction_path, self.u, source=self.u_source)
            msg += f", saved to {self.direction_path}"
        self.status.value = msg
        return self.u


class ROIDrawer:
    """Draw the box on the reference image (mouse, via jupyter-bbox-widget), pick a preset, or type
    pixel coordinates; all three stay in sync. Invalid boxes are reported, never applied."""

    def __init__(self, image: torch.Tensor, box: Box | None = None, json_path="box.json"):
        from jupyter_bbox_widget import BBoxWidget
        self.resolution = image.shape[-1]
        self.scale = display_scale(self.resolution)  # screen px per generator px; boxes stay in generator px
        self._image = image
        self.box: Box | None = None
        self.fields = {k: ipw.BoundedIntText(min=0, max=self.resolution, description=k,
                                             layout=ipw.Layout(width="140px"))
                       for k in ("x0", "y0", "x1", "y1")}
        self.presets = ipw.Dropdown(options=["(custom)"] + list(PRESETS), value="(custom)", description="preset")
        self.message = ipw.HTML()
        self.path = ipw.Text(value=str(json_path), description="JSON")
        self.save_button, self.load_button = ipw.Button(description="save"), ipw.Button(description="load")
        self.canvas = BBoxWidget(image="data:image/png;base64," + self._encode(), classes=[], hide_buttons=True)
        self.canvas.add_class("cxr-roi")  # one kind of box: the widget's class chooser is hidden below
        self._syncing = False
        self._observers = []
        for f in self.fields.values():
            f.observe(lambda _: self._from_fields(), "value")
        self.presets.observe(lambda ch: self.set_preset(ch["new"]) if ch["new"] != "(custom)" and not self._syncing
                             else None, "value")
        self.canvas.observe(lambda _: self._from_canvas(), "bboxes")
        self.save_button.on_click(lambda _: self.save())
        self.load_button.on_click(lambda _: self.load())
        hide_classes = ipw.HTML("<style>.cxr-roi .classes {display: none}</style>")
        self.widget = ipw.HBox([self.canvas, ipw.VBox([self.presets, *self.fields.values(), self.message,
                                                   self.path, ipw.HBox([self.save_button, self.load_button]),
                                                   hide_classes])])
        if box is not None:
            self.set_box(box)

    def _encode(self) -> str:
        import base64
        return base64.b64encode(png_bytes(strip_image([self._image[None]], None, scale=self.scale))).decode()

    def on_change(self, callback):
        """Call ``callback(box)`` whenever a new box is applied (e.g. to hand it to a runner)."""
        self._observers.append(callback)

    def set_box(self, box: Box, preset_name: str = "(custom)"):
        """Apply a box everywhere (fields, canvas, preset name) and tell the observers."""
        box = box.at_resolution(self.resolution)
        self.box = box
        self._syncing = True
        try:
            for k in self.fields:
                self.fields[k].value = getattr(box, k)
            s = self.scale
            self.canvas.bboxes = [dict(x=box.x0 * s, y=box.y0 * s, width=box.width * s, height=box.height * s,
                                       label="")]  # exactly one box on the canvas
            self.presets.value = preset_name
        finally:
            self._syncing = False
        self.message.value = f"box {box.x0},{box.y0} - {box.x1},{box.y1} ({box.width}x{box.height} px)"
        for callback in self._observers:
            callback(box)

    def set_preset(self, name: str):
        self.set_box(preset(name, self.resolution), preset_name=name)

    def _try(self, make):
        try:
            box = make()
        except (ValueError, TypeError) as e:
            self.message.value = f"<span style='color:#b00'>{e}</span>"
            return
        self.set_box(box)

    def _from_fields(self):
        if not self._syncing:
            self._try(lambda: Box(*(int(self.fields[k].value) for k in ("x0", "y0", "x1", "y1")), self.resolution))

    def _from_canvas(self):
        if self._syncing or not self.canvas.bboxes:
            return
        b, s = self.canvas.bboxes[-1], self.scale
        # A box of no size: a click, or a drag just begun (the widget sends the new box on mouse
        # down, then again on mouse up). Keep the current box and leave the canvas alone: setting
        # it now would drop the box being drawn under the mouse.
        if b["width"] < max(s, 2) or b["height"] < max(s, 2):
            return
        self._try(lambda: Box(round(b["x"] / s), round(b["y"] / s), round((b["x"] + b["width"]) / s),
                              round((b["y"] + b["height"]) / s), self.resolution))

    def save(self):
        if self.box is None:
            self.message.value = "<span style='color:#b00'>no valid box to save</span>"
            return None
        return self.box.save(self.path.value)

    def load(self):
        self._try(lambda: Box.load(self.path.value))


class OptimizationRunner:
    """Method and hyper-parameters, run/stop, progress, live loss plot and strip; Baseline LO and
    LO + direction (and linear translation) side by side when ``compare`` is ticked."""

    def __init__(self, G, w_ref: torch.Tensor, box: Box, u: torch.Tensor | None = None,
                 config: LOConfig | None = None, update_every: int = 10):
        self.G, self.w_ref, self.box, self.u = G, w_ref.reshape(-1, G.num_ws, G.w_dim), box, u
        cfg = config or LOConfig()
        self.update_every = update_every
        self.method = ipw.Dropdown(options=["lo+dir", "lo"], value="lo+dir" if u is not None else "lo",
                                 description="method")
        self.compare = ipw.Checkbox(value=False, description="side by side (LO, linear, LO + dir)",
                                    style={"description_width": "initial"}, layout=ipw.Layout(width="auto"))
        self.sigma = ipw.FloatText(value=cfg.sigma, description="sigma")
        self.theta = ipw.FloatText(value=cfg.theta_deg, description="theta' (deg)")
        self.c = ipw.FloatText(value=cfg.c, description="c")
        self.max_steps = ipw.IntText(value=cfg.max_steps, description="max steps")
        self.run_button = ipw.Button(description="run", button_style="primary")
        self.stop_button = ipw.Button(description="stop", button_style="warning")
        self.progress = ipw.IntProgress(min=0, max=cfg.max_steps, description="step")
        self.loss_plot = ipw.Image(format="png", layout=ipw.Layout(width="400px", height="auto"))
        self.strip = ipw.Image(format="png", layout=ipw.Layout(max_width="100%", height="auto", object_fit="contain"))
        for img in (self.loss_plot, self.strip):  # hidden until drawn: an empty image shows as a broken one
            img.layout.display = "none"
            img.observe(lambda _, img=img: setattr(img.layout, "display", None), "value")
        self.message = ipw.HTML()
        self.base_config = cfg
        self.results: dict = {}
        self.on_done: list = []  # called with the results after each run that ends without an error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.run_button.on_click(lambda _: self.run(block=False))
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = ipw.VBox([ipw.HBox([self.method, self.compare]),
                              ipw.HBox([self.sigma, self.theta, self.c, self.max_steps]),
                                ipw.HBox([self.run_button, self.stop_button, self.progress]), self.message,
                                self.loss_plot, self.strip])

    def config(self) -> LOConfig:
        return replace(self.base_config, sigma=float(self.sigma.value), theta_deg=float(self.theta.value),
                       c=float(self.c.value), max_steps=int(self.max_steps.value))

    def _callback(self, label, offset):
        history = {k: [] for k in ("image", "spring1", "spring2", "angle", "total")}

        def cb(step, info):
            self.progress.value = offset + step
            for k in history:
                history[k].append(info[k])
            small = display_scale(self.G.img_resolution, 128)
            self.strip.value = png_bytes(strip_image([info["images"][0]], self.box, scale=small, labels=[label]))
            self.loss_plot.value = figure_png(loss_figure(history, title=f"{label} (every {self.update_every} steps)"))
            self.message.value = f"{label}: step {step}, loss {info['total']:.4f}"
            return self._stop.is_set()
        return cb

    def _run(self):
        try:
            cfg = self.config()
            self.progress.max = cfg.max_steps
            methods = ["lo", "lo+dir"] if self.compare.value else [self.method.value]
            if any(m == "lo+dir" for m in methods) and self.u is None:
                raise ValueError("LO + direction needs a direction u (pick one in the PC browser)")
            self.results = {}
            if self.compare.value and self.u is not None:
                methods.insert(1, "linear")
            optimised = [m for m in methods if m != "linear"]
            self.progress.max = cfg.max_steps * len(optimised)
            for m in methods:
                offset = cfg.max_steps * optimised.index(m) if m in optimised else 0
                self.results[m] = run_method(self.G, m, self.w_ref, self.box, u=self.u, config=cfg, progress=False,
                                             callback=self._callback(METHOD_LABELS[m], offset),
                                             callback_every=self.update_every)
                if m != "linear":  # the whole curve, and the bar at the end of this method's share
                    self.loss_plot.value = figure_png(loss_figure(self.results[m].history, title=METHOD_LABELS[m]))
                    self.progress.value = offset + cfg.max_steps
                if self._stop.is_set():
                    break
            self.progress.value = self.progress.max  # finished (early convergence included)
            order = [m for m in ("lo", "linear", "lo+dir") if m in self.results]
            self.strip.value = png_bytes(strip_image([self.results[m].sequence(0) for m in order], self.box,
                                                     scale=display_scale(self.G.img_resolution, 128),
                                                     labels=[METHOD_LABELS[m] for m in order]))
            self.message.value = "; ".join(f"{m}: {t.steps} steps, {t.status}, {t.wall_time:.1f} s"
                                           for m, t in self.results.items())
            for done in self.on_done:
                done(self.results)
        except Exception as e:  # shown in the widget: a background thread has nowhere else to report
            self.message.value = f"<span style='color:#b00'>{type(e).__name__}: {e}</span>"
            self.error = e

    def stop(self):
        """Ask a running optimisation to stop at its next update (the stop button)."""
        self._stop.set()

    def wait(self, timeout: float | None = None):
        """Wait for a run started with ``block=False``; returns the results."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.results

    def set_box(self, box: Box, u: torch.Tensor | None = None):
        """Use a new box (and the direction chosen for it) from the next run on."""
        self.box = box
        if u is not None:
            self.u = u
        self.message.value = f"box {box.x0},{box.y0} - {box.x1},{box.y1} will be used by the next run"

    def run(self, block: bool = True):
        """Run with the current settings; in a thread when ``block`` is False (the run button)."""
        if self._thread is not None and self._thread.is_alive():
            self.message.value = "already running"
            return
        self._stop.clear()
        self.error = None
        if block:
            self._run()
        else:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self.results


class PerThreadDB:
    """An SQLite connection to a study database per thread: widget events may arrive on another
    thread than the one that built the widget (ipykernel 7), and a connection serves only the thread
    that opened it."""

    def __init__(self, path):
        self.db_path, self._local = path, threading.local()

    @property
    def db(self):
        """This thread's connection to the study database."""
        db = getattr(self._local, "db", None)
        if db is None:
            from cxr_workbench.studies.reader_study import open_study_db
            db = self._local.db = open_study_db(self.db_path)
        return db


class ReaderStudyWidget(PerThreadDB):
    """One reader working through a blinded study (``reader_study``): the film, its position and
    the reader's progress; cardiomegaly / opacity / neither and a quality 1-5; **submit**. For
    speed, type keys in the box and press Enter: ``c`` cardiomegaly, ``o`` opacity, ``n`` neither,
    a digit for the quality (``co4``: both diseases, quality 4). The source and truth of an item
    are never shown. Every answer is in the database as soon as it is submitted. **back** shows
    the previous answered item with the answer given; submitting then stores a revision (the
    latest counts) and returns to the first unanswered item.

    Widget events may reach the callbacks on another thread than the one that built the widget
    (ipykernel 7 does this), and an SQLite connection serves only the thread that opened it: each
    thread gets its own connection. A failed entry says why in the message line and clears the
    ticks, so the next answer cannot be stored with a stale label."""

    KEYS_HELP = "keys: c = cardiomegaly, o = opacity, n = neither, 1-5 = quality; Enter submits (e.g. co4)"

    def __init__(self, db_path, study: str, reader: str):
        from cxr_workbench.studies import reader_study as rs
        self._rs = rs
        super().__init__(db_path)
        self.study, self.reader = study, reader
        rs.reader_id(self.db, reader)  # a reader that does not exist is named now, not at the first answer
        self.image = ipw.Image(format="png", layout=ipw.Layout(width="320px", height="320px"))
        self.cardiomegaly = ipw.Checkbox(description="cardiomegaly (c)")
        self.opacity = ipw.Checkbox(description="opacity (o)")
        self.neither = ipw.Checkbox(description="neither (n)")
        self.quality = ipw.ToggleButtons(options=list(rs.QUALITY), value=None, description="quality",
                                         style={"button_width": "36px"})
        self.submit_button = ipw.Button(description="submit", button_style="primary")
        self.back_button = ipw.Button(description="back", tooltip="revise the previous answer")
        self.keys = ipw.Text(placeholder="e.g. co4 then Enter", description="keys", continuous_update=False)
        self.progress = ipw.IntProgress(min=0, description="read")
        self.message = ipw.HTML()
        self.submit_button.on_click(lambda _: self.submit())
        self.back_button.on_click(lambda _: self.back())
        self.keys.observe(lambda ch: self.type_keys(ch["new"]) if ch["new"] else None, "value")
        self.widget = ipw.HBox([self.image, ipw.VBox([self.progress, self.cardiomegaly, self.opacity, self.neither,
                                                      self.quality, ipw.HBox([self.back_button,
                                                                              self.submit_button]), self.keys,
                                                      ipw.HTML(f"<small>{self.KEYS_HELP}</small>"), self.message])])
        self.item, self.revising = None, False
        self.show_next()

    def clear(self):
        for box in (self.cardiomegaly, self.opacity, self.neither):
            box.value = False
        self.quality.value = None

    def failed(self, error: Exception):
        """Show what went wrong where the reader looks, and clear the ticks."""
        self.clear()
        self.message.value = f"<span style='color:#b00'>not stored: {type(error).__name__}: {error}</span>"

    def _show(self, item: dict):
        self.item = item
        with Image.open(item["path"]) as im:
            self.image.value = png_bytes(im.convert("L").resize((320, 320), Image.BILINEAR))

    def show_next(self):
        """Show the reader's first unanswered item (where a resumed session starts)."""
        item = self._rs.next_item(self.db, self.study, self.reader)
        done, total = self._rs.progress(self.db, self.study, self.reader)
        self.progress.max, self.progress.value = total, done
        self.clear()
        self.revising = False
        if item is None:
            self.item = None
            self.message.value = f"<b>done</b>: all {total} items answered. Thank you."
            return
        self._show(item)
        self.message.value = f"item {item['position'] + 1} of {total}"

    def back(self):
        """Show the answered item before the one shown, ticked as answered, for revision."""
        before = None if self.item is None else self.item["position"]
        item = self._rs.previous_item(self.db, self.study, self.reader, before)
        if item is None:
            self.message.value = "<span style='color:#b00'>no earlier answer to revise</span>"
            return
        self._show(item)
        self.revising = True
        self.cardiomegaly.value, self.opacity.value = item["cardiomegaly"], item["opacity"]
        self.neither.value = not (item["cardiomegaly"] or item["opacity"])
        self.quality.value = item["quality"]
        self.message.value = (f"revising item {item['position'] + 1} of {self.progress.max}: change the answer "
                              "and submit, or press back again")

    def submit(self):
        if self.item is None:
            return
        c, o, none = self.cardiomegaly.value, self.opacity.value, self.neither.value
        if none == (c or o):
            self.message.value = "<span style='color:#b00'>choose a disease, or neither (not both)</span>"
            return
        if self.quality.value is None:
            self.message.value = "<span style='color:#b00'>rate the quality 1-5</span>"
            return
        try:
            self._rs.submit(self.db, self.study, self.reader, self.item["id"], c, o, self.quality.value,
                            revise=self.revising)
            self.show_next()
        except Exception as e:  # noqa: BLE001 - a widget callback's error would otherwise reach only a log
            self.failed(e)

    def type_keys(self, text: str):
        """Answer with keys (see KEYS_HELP) and submit."""
        text = text.strip().lower()
        self.keys.value = ""
        bad = set(text) - set("con12345")
        digits = [ch for ch in text if ch.isdigit()]
        if bad or len(digits) != 1:
            self.clear()
            self.message.value = f"<span style='color:#b00'>keys {text!r}: {self.KEYS_HELP}</span>"
            return
        self.cardiomegaly.value, self.opacity.value, self.neither.value = "c" in text, "o" in text, "n" in text
        self.quality.value = int(digits[0])
        self.submit()
