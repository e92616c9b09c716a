"""The downstream classifier and the protocol of paper Tables 3 and 4, on films with exact truth.

"Real" images are fresh films of the kind the sets' generator learned (phantoms, or DRRs for sets
of the DRR generator: ``set.json``'s ``films``; seeds never used to train the generator or the
oracle) with exact labels: normal (N), cardiomegaly (C), opacity (O). Three columns, each its own classifier:
N vs C vs O (macro one-vs-rest AUROC), N vs C, N vs O. Rows, for each size of the disease
classes: real only; + random augmentation (MONAI transforms of real disease images: rotation,
shear, Gaussian blur, horizontal and vertical flip); + ours (augmentation sets of
``augment.make_augmentation``); + half of each. Within a column every row and seed sees the
same validation and test images. Each run's test predictions are saved, so every AUROC can be
recomputed from them (``auroc_from_file``).
"""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cxr_workbench.distributed import cluster, fan_out
from cxr_workbench.imaging.phantom import KINDS
from cxr_workbench.imaging.sources import SOURCES
from cxr_workbench.io import atomic_write, check_writable, reason, write_json, writer_lock
from cxr_workbench.model.readers import NETWORKS, make_network, save_classifier
from cxr_workbench.model.stylegan2 import MAX_SEED
from cxr_workbench.settings import setting, validate_settings
from cxr_workbench.studies.provenance import PROVENANCE, provenance

__all__ = ["COLUMNS", "ROWS", "ProtocolConfig", "PHANTOM_RESOLUTION", "CPU_SCALE", "random_augmentation", "real_data",
           "auroc", "auroc_from_file", "train_run", "run_name", "plan_runs", "load_sets", "run_protocol",
           "RESULT_KEYS", "read_results", "check_sets_fit", "chosen_on_validation", "protocol_table", "ClassifyRequest",
           "run_classify"]

COLUMNS = {"N vs C vs O": ("normal", "cardiomegaly", "opacity"), "N vs C": ("normal", "cardiomegaly"),
           "N vs O": ("normal", "opacity")}
ROWS = ("real", "rand", "ours", "ours+rand")


def _seed_count(text: str) -> tuple[int, ...]:
    """The command line's ``--seeds N``: runs per cell, seeds 0..N-1."""
    n = int(text)
    if not 1 <= n <= 100:
        raise ValueError(f"seeds={text!r}; expected a number of runs in [1, 100]")
    return tuple(range(n))


@dataclass
class ProtocolConfig:
    """Sizes of paper Table 3 (val and test, which the paper does not give, per class)."""

    n_normal: int = setting(10_000, "normal training images", low=1, high=10_000_000)
    n_disease: tuple[int, ...] = setting((1_000, 5_000), "disease training sizes, one table block each",
                                         low=1, high=10_000_000)
    n_aug: int = setting(5_000, "augmented images per run", low=1, high=10_000_000)
    n_val: int = setting(1_000, "validation images per class", low=1, high=10_000_000)
    n_test: int = setting(2_000, "test images per class", low=1, high=10_000_000)
    sigmas: tuple[float, ...] = setting((0.3,), "sigmas of the 'ours' rows (Table 4: 0.3 1.0 2.0)", low=0,
                                        high=100, open_low=True)
    seeds: tuple[int, ...] = setting((0, 1, 2, 3), "runs per cell (seeds 0..N-1; the paper's four runs)", low=0,
                                     high=2 ** 31 - 1, parse=_seed_count)
    network: str = setting("small", "classifier network", choices=NETWORKS)
    epochs: int = setting(12, "training epochs (the best validation epoch is kept)", low=1, high=1000)
    batch: int = setting(64, "images per step", low=1, high=65536)
    lr: float = setting(1e-3, "Adam step size", low=0, high=10, open_low=True)
    data_seed: int = setting(20_000_000, "seed of the fresh films (never drawn for the generator or the oracle)",
                             low=0, high=MAX_SEED)
    films: str = setting("phantom", "the real films: those the sets' generator learned (read from set.json)",
                         choices=SOURCES, cli=False)

    validate = validate_settings


# The CPU scale: the paper's ratios (10 : 1 or 5 : 5 aug) at a fiftieth of the training sizes.
PHANTOM_RESOLUTION = 64  # the real images of the protocol (real_data); sets must match them
CPU_SCALE = ProtocolConfig(n_normal=200, n_disease=(20, 100), n_aug=100, n_val=200, n_test=400)


def random_augmentation(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` random augmentations of ``images`` [M, 1, H, W] (sources drawn with replacement):
    the paper's list as MONAI transforms, each applied with probability 1/2."""
    from monai.transforms import Compose, RandAffine, RandFlip, RandGaussianSmooth, RandRotate
    t = Compose([RandRotate(range_x=math.radians(15), prob=0.5, padding_mode="border"),
                 RandAffine(shear_range=(0.15, 0.15), prob=0.5, padding_mode="border"),
                 RandGaussianSmooth(sigma_x=(0.5, 1.2), sigma_y=(0.5, 1.2), prob=0.5),
                 RandFlip(spatial_axis=0, prob=0.5), RandFlip(spatial_axis=1, prob=0.5)])
    t.set_random_state(seed)
    picks = np.random.default_rng(seed).integers(len(images), size=n)
    return torch.stack([torch.as_tensor(t(images[i])) for i in picks]).float()


def real_data(cfg: ProtocolConfig, progress: bool = False) -> dict:
    """Fresh films of ``cfg.films`` by class: ``train[kind]`` (enough for the largest size), ``val[kind]``
    and ``test[kind]``, each [N, 1, 64, 64] in [-1, 1], kinds from the rendered truth."""
    from cxr_workbench.imaging.datasets import TruthDataset
    need = {"normal": cfg.n_normal, "cardiomegaly": max(cfg.n_disease), "opacity": max(cfg.n_disease)}
    total = {k: v + cfg.n_val + cfg.n_test for k, v in need.items()}
    pools = {k: [] for k in KINDS}
    seed = cfg.data_seed
    while any(sum(map(len, pools[k])) < total[k] for k in KINDS):
        short = [max(total[k] - sum(map(len, pools[k])), 0) for k in KINDS]
        ds = TruthDataset(int(sum(short) * 1.3) + 64, PHANTOM_RESOLUTION, seed=seed,
                            weights=tuple(s + 1 for s in short), progress=progress, source=cfg.films)
        x = ds.images_tensor()
        for k in KINDS:
            pools[k].append(x[torch.from_numpy(ds.kind == k)])
        seed += 1
    out = dict(train={}, val={}, test={})
    for k in KINDS:
        x = torch.cat(pools[k])
        out["val"][k], out["test"][k] = x[:cfg.n_val], x[cfg.n_val:cfg.n_val + cfg.n_test]
        out["train"][k] = x[cfg.n_val + cfg.n_test:total[k]]
    return out


def auroc(y_true, probs) -> float:
    """Binary AUROC (probs [N, 2]: of class 1) or macro one-vs-rest AUROC (probs [N, K > 2])."""
    from sklearn.metrics import roc_auc_score
    y, p = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or len(p) != len(y):
        raise ValueError(f"probs of shape {p.shape} for {len(y)} labels; expected [N, K >= 2]")
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(roc_auc_score(y, p / p.sum(1, keepdims=True), multi_class="ovr", average="macro",
                               labels=list(range(p.shape[1]))))


def auroc_from_file(path) -> float:
    """The AUROC of a saved predictions CSV (columns y_true and p_<class> in class order)."""
    df = pd.read_csv(path)
    cols = [c for c in df.columns if c.startswith("p_")]
    if "y_true" not in df.columns or len(cols) < 2:
        raise ValueError(f"{path}: expected columns y_true and p_<class>; found {list(df.columns)}")
    return auroc(df["y_true"], df[cols].to_numpy())


def _augmented(row: str, n_aug: int) -> tuple[int, int]:
    """How many edited ("ours") and randomly augmented samples a row adds: (n_ours, n_rand)."""
    return {"real": (0, 0), "rand": (0, n_aug), "ours": (n_aug, 0), "ours+rand": (n_aug // 2, n_aug - n_aug // 2)}[row]


def _share(n: int, j: int, k: int) -> int:
    """Disease j's part of n samples split over k diseases (the first ones take the remainder)."""
    return n // k + (1 if j < n % k else 0)


def _training_set(data, column, n_disease, row, sigma, seed, *, cfg, aug):
    """Images and labels of one run: real N + real diseases, plus the row's augmentation."""
    classes = COLUMNS[column]
    diseases = classes[1:]
    xs = [data["train"]["normal"][:cfg.n_normal]] + [data["train"][d][:n_disease] for d in diseases]
    ys = [torch.full([len(x)], i) for i, x in enumerate(xs)]
    n_ours, n_rand = _augmented(row, cfg.n_aug)
    for j, d in enumerate(diseases):
        label = classes.index(d)
        ours, rand = _share(n_ours, j, len(diseases)), _share(n_rand, j, len(diseases))
        if n_ours:
            x = aug[(d, sigma)]
            if len(x) < ours:
                raise ValueError(f"the {d} set for sigma={sigma} has {len(x)} samples; this protocol needs {ours}")
            xs.append(x[:ours])
            ys.append(torch.full([ours], label))
        if n_rand:
            xs.append(random_augmentation(data["train"][d][:n_disease], rand, seed * 1000 + j))
            ys.append(torch.full([rand], label))
    return torch.cat(xs), torch.cat(ys)


def _split(data, part, classes):
    x = torch.cat([data[part][k] for k in classes])
    y = torch.cat([torch.full([len(data[part][k])], i) for i, k in enumerate(classes)])
    return x, y


def _predict(net, x, batch=256) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch]).softmax(-1) for i in range(0, len(x), batch)]).numpy()


def train_run(data: dict, aug: dict, cfg: ProtocolConfig, *, column: str, n_disease: int, row: str,
              sigma: float | None, seed: int, keep_net: bool = False) -> dict:
    """Train one classifier; the epoch with the best validation AUROC is kept. Returns the result
    row, the test predictions (a DataFrame: y_true, p_<class>) and, with ``keep_net``, the network."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    classes = COLUMNS[column]
    x, y = _training_set(data, column, n_disease, row, sigma, seed, cfg=cfg, aug=aug)
    xv, yv = _split(data, "val", classes)
    xt, yt = _split(data, "test", classes)
    net = make_network(cfg.network, len(classes))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch = -1.0, None, 0
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch):
            idx = order[i:i + cfg.batch]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = auroc(yv.numpy(), _predict(net, xv))
        if score > best:
            best, best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    probs = _predict(net, xt)
    pred = pd.DataFrame({"y_true": yt.numpy(), **{f"p_{k}": probs[:, i] for i, k in enumerate(classes)}})
    result = dict(column=column, n_disease=n_disease, row=row, sigma=sigma, seed=seed, network=cfg.network,
                  n_train=len(x), val_auroc=best, test_auroc=auroc(yt.numpy(), probs), best_epoch=best_epoch,
                  wall_s=time.perf_counter() - t0)
    return dict(result=result, predictions=pred, **({"net": net} if keep_net else {}))


def run_name(r: dict) -> str:
    """The file name of one protocol run: column, disease size, row, sigma (ours rows only) and seed."""
    col = {"N vs C vs O": "NCO", "N vs C": "NC", "N vs O": "NO"}[r["column"]]
    sig = "" if pd.isna(r["sigma"]) else f"_s{r['sigma']}"  # None, or NaN in a DataFrame: a row without an edit
    return f"{col}_d{r['n_disease']}_{r['row'].replace('+', '-')}{sig}_seed{r['seed']}"


def plan_runs(cfg: ProtocolConfig) -> list[dict]:
    """Every run of Tables 3 and 4: columns x disease sizes x rows (ours rows once per sigma, so
    that the sigma can be chosen on validation: ``chosen_on_validation``) x seeds."""
    runs = []
    for column in COLUMNS:
        for n_disease in cfg.n_disease:
            for row in ROWS:
                for sigma in (cfg.sigmas if "ours" in row else (None,)):
                    runs += [dict(column=column, n_disease=n_disease, row=row, sigma=sigma, seed=s) for s in cfg.seeds]
    return runs


def load_sets(set_dirs, sigmas, diseases=("cardiomegaly", "opacity")) -> tuple[dict, str]:
    """Augmentation sets by (disease, sigma) from set folders (their set.json says which is which),
    and the films their generator learned (``set.json``'s ``films``; phantoms when it names none):
    the protocol's real films. Sets of generators of different films are refused."""
    from cxr_workbench.studies.augment import read_set_images
    found, films = {}, {}
    for d in map(Path, set_dirs):
        if not (d / "set.json").is_file():
            raise ValueError(f"{d} holds no set.json; expected an augmentation set folder (cxr-workbench augment)")
        try:
            head = json.loads((d / "set.json").read_text())
            key = (str(head["disease"]), float(head["config"]["sigma"]))
            films[d] = str(head.get("films", "phantom"))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{d / 'set.json'}: not a set description ({type(e).__name__}: {e}); expected one "
                             "written by cxr-workbench augment") from None
        if key in found:
            raise ValueError(f"{found[key]} and {d} are both sets of {key[0]} at sigma {key[1]}; give one of them")
        if films[d] not in SOURCES:
            raise ValueError(f"{d / 'set.json'} names films={films[d]!r}; expected one of {SOURCES}")
        found[key] = d
    if len(set(films.values())) > 1:
        named = ", ".join(f"{d}: {f}" for d, f in films.items())
        raise ValueError(f"sets of generators of different films ({named}); expected sets of one kind of films "
                         "(the protocol's real films are of that kind)")
    missing = [(d, s) for d in diseases for s in sigmas if (d, float(s)) not in found]
    if missing:
        raise ValueError(f"no augmentation set for {missing}; found {sorted(found)}")
    sets = {(d, float(s)): read_set_images(found[(d, float(s))]) for d in diseases for s in sigmas}
    for key, images in sets.items():
        if images.shape[-1] != PHANTOM_RESOLUTION:
            raise ValueError(f"{found[key]}: {images.shape[-1]} px images; the protocol's phantoms are "
                             f"{PHANTOM_RESOLUTION} px (make the set with a {PHANTOM_RESOLUTION} px generator)")
    return sets, next(iter(films.values()), "phantom")


def run_protocol(cfg: ProtocolConfig, aug: dict, out_dir, *, client=None, progress: bool = True,
                 data: dict | None = None, save_models: bool = False) -> pd.DataFrame:
    """All runs of ``plan_runs`` (those already in ``out_dir`` are kept when their predictions file
    still gives their test AUROC), with ``aug`` the sets by (disease, sigma) as image tensors.
    Writes ``predictions/<run>.csv`` per run and ``results.csv`` after each; returns the results.
    With ``save_models`` each new run's classifier is also written as ``models/<run>.pt``, a reader
    (``readers.reader_from_file``)."""
    cfg.validate()
    out_dir = check_writable(out_dir)
    with writer_lock(out_dir):
        path, pred_dir = out_dir / "results.csv", out_dir / "predictions"
        pred_dir.mkdir(exist_ok=True)
        # sigmas and seeds only add runs: a folder may grow by them; anything else is another protocol
        # (films only when not phantoms, so folders from before it resume)
        settings = json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("sigmas", "seeds")
                               and (k, v) != ("films", "phantom")}, sort_keys=True)
        if (out_dir / "protocol.json").is_file() and (out_dir / "protocol.json").read_text() != settings:
            raise ValueError(f"{out_dir} holds runs of another protocol ({out_dir / 'protocol.json'}); "
                             "choose another folder")
        atomic_write(out_dir / "protocol.json", lambda f: f.write(settings), "w")
        rows = _checked_runs(read_results(path) if path.is_file() else [], pred_dir)
        done = {run_name(r) for r in rows}
        todo = [r for r in plan_runs(cfg) if run_name(r) not in done]
        check_sets_fit(cfg, aug, todo)
        if todo and data is None:
            data = real_data(cfg, progress=progress)
        shared = dict(data=data, aug=aug, cfg=cfg, keep_net=save_models)
        for _, res in fan_out(train_run, todo, shared, client, progress, desc="classifiers"):
            name = run_name(res["result"])
            if save_models:
                (out_dir / "models").mkdir(exist_ok=True)
                save_classifier(out_dir / "models" / f"{name}.pt", res["net"], network=cfg.network,
                                classes=COLUMNS[res["result"]["column"]], resolution=PHANTOM_RESOLUTION,
                                model_card=res["result"])
            atomic_write(pred_dir / f"{name}.csv", lambda f, p=res["predictions"]: p.to_csv(f, index=False), "w")
            rows.append(res["result"])
            atomic_write(path, lambda f: pd.DataFrame(rows).to_csv(f, index=False), "w")
        return pd.DataFrame(rows)


RESULT_KEYS = ("column", "n_disease", "row", "sigma", "seed", "test_auroc")


def read_results(path) -> list[dict]:
    """The finished runs of a ``results.csv``, each field checked: an edited or damaged file is refused
    naming the row and column. A real or random row's sigma is None."""
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a results table ({reason(e)})") from None
    missing = [c for c in RESULT_KEYS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected the results.csv classify writes")
    rows = frame.to_dict("records")
    whole = lambda v, low: v == int(v) and v >= low  # noqa: E731
    checks = dict(n_disease=lambda v: whole(v, 1), seed=lambda v: whole(v, 0), test_auroc=lambda v: 0 <= v <= 1,
                  sigma=lambda v: True)
    for i, r in enumerate(rows):
        where = f"{path}, row {i + 2}, column"
        for key, allowed in (("column", list(COLUMNS)), ("row", list(ROWS))):
            if r[key] not in allowed:
                raise ValueError(f"{where} {key!r}: {r[key]!r}; expected one of {allowed}")
        for key, ok in checks.items():
            value = pd.to_numeric(pd.Series([r[key]]), errors="coerce")[0]  # a number, or NaN
            if (math.isnan(value) and key != "sigma") or not ok(value):
                raise ValueError(f"{where} {key!r}: {r[key]!r}; expected the number classify wrote there")
            r[key] = value
        if "ours" in r["row"] and math.isnan(r["sigma"]):
            raise ValueError(f"{where} 'sigma': empty; expected the sigma of an {r['row']} row")
        r["n_disease"], r["seed"] = int(r["n_disease"]), int(r["seed"])
        r["sigma"] = float(r["sigma"]) if "ours" in r["row"] else None
    return rows


def check_sets_fit(cfg: ProtocolConfig, aug: dict, runs: list[dict]) -> None:
    """Refuse, before the first run, augmentation sets too small for the runs that use them."""
    for r in runs:
        if "ours" not in r["row"]:
            continue
        diseases = COLUMNS[r["column"]][1:]
        for j, d in enumerate(diseases):
            need = _share(_augmented(r["row"], cfg.n_aug)[0], j, len(diseases))  # what the run will take
            have = len(aug[(d, float(r["sigma"]))]) if (d, float(r["sigma"])) in aug else 0
            if have < need:
                raise ValueError(f"the {d} set for sigma={r['sigma']} has {have} samples; the run {run_name(r)} "
                                 f"needs {need} (n_aug={cfg.n_aug}); make a larger set or lower --n-aug")


def _checked_runs(rows: list[dict], pred_dir: Path) -> list[dict]:
    """The finished runs whose predictions file exists and gives the test AUROC recorded for the run;
    the others are run again (one line on stderr names them)."""
    good, redo = [], []
    for r in rows:
        file = pred_dir / f"{run_name(r)}.csv"
        try:
            same = file.is_file() and abs(auroc_from_file(file) - float(r["test_auroc"])) < 1e-4  # CSV rounding
        except (ValueError, KeyError, pd.errors.ParserError):
            same = False
        (good if same else redo).append(r)
    if redo:
        print(f"{pred_dir}: {len(redo)} runs whose predictions are missing, unreadable or disagree with "
              f"results.csv are run again: {[run_name(r) for r in redo][:5]}", file=sys.stderr)
    return good


def chosen_on_validation(results: pd.DataFrame) -> pd.DataFrame:
    """The "ours" rows with their sigma chosen on validation only: per column, disease size and row,
    the runs of the sigma with the best mean validation AUROC over the seeds, named
    ``<row> (val)``; their test AUROCs are never looked at in the choice."""
    ours = results[results["row"].isin(("ours", "ours+rand"))]
    if ours.empty:
        return ours
    keys = ["column", "n_disease", "row"]
    best = (ours.groupby(keys + ["sigma"])["val_auroc"].mean().reset_index()
            .sort_values("val_auroc", ascending=False).drop_duplicates(keys))
    picked = ours.merge(best[keys + ["sigma"]], on=keys + ["sigma"])
    return picked.assign(row=picked["row"] + " (val)")


def protocol_table(results: pd.DataFrame) -> pd.DataFrame:
    """Tables 3 and 4: test AUROC (x100) mean ± std over seeds per (disease size, row, sigma) and
    column, with the p-value of a paired t-test (same seeds) against random augmentation;
    '*' marks p < 0.05. ``sigma`` is text, empty for the rows without edits (real, rand). Where
    the "ours" rows ran at several sigmas, rows ``<row> (val)`` follow with the sigma chosen on
    validation (``chosen_on_validation``), named in each cell: "[sigma 1]"."""
    from scipy.stats import ttest_rel
    df = results.copy()
    if df.loc[df["row"] == "ours", "sigma"].nunique() > 1:
        chosen = chosen_on_validation(results)
        df = pd.concat([df, chosen.assign(chosen_sigma=chosen["sigma"], sigma=None)], ignore_index=True)
    out = []
    # rows without an edit (real, rand, and the sigma-chosen rows) have no sigma: kept as their own group
    for (n_d, row, sigma), g in df.groupby(["n_disease", "row", "sigma"], sort=False, dropna=False):
        entry = dict(n_disease=int(n_d), row=row, sigma="" if pd.isna(sigma) else f"{sigma:g}")
        for column in COLUMNS:
            cell = g[g["column"] == column]
            s = cell.set_index("seed")["test_auroc"] * 100
            if s.empty:
                continue
            rand = df[(df["column"] == column) & (df["n_disease"] == n_d) & (df["row"] == "rand")]
            ref = rand.set_index("seed")["test_auroc"] * 100
            common = s.index.intersection(ref.index)
            with warnings.catch_warnings():  # identical scores: p is NaN, no warning needed
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(ttest_rel(s[common], ref[common]).pvalue) if row != "rand" and len(common) >= 2 else math.nan
            mark = "*" if p < 0.05 else ""
            picked = f" [sigma {cell['chosen_sigma'].iloc[0]:g}]" if row.endswith("(val)") else ""
            entry[column] = f"{s.mean():.2f} ± {s.std():.2f}{mark}{picked}"
            entry[f"p {column}"] = p
        out.append(entry)
    order = {r: i for i, r in enumerate(ROWS + tuple(f"{r} (val)" for r in ROWS[2:]))}
    table = pd.DataFrame(out)
    table["_o"] = table["row"].map(order)
    return table.sort_values(["n_disease", "_o", "sigma"]).drop(columns="_o").reset_index(drop=True)



@dataclass
class ClassifyRequest:
    """Tables 3 and 4 as ``cxr-workbench classify`` asks for them: the augmentation set folders, the
    output folder, the paper's sizes (``full``) or the CPU scale, and ``overrides`` of
    ProtocolConfig fields. ``workers`` > 0 or a ``scheduler``: the runs fan out over Dask."""

    sets: list
    out: Path
    full: bool = False
    overrides: dict = field(default_factory=dict)
    save_models: bool = False
    workers: int = 0
    scheduler: str | None = None

    def config(self) -> ProtocolConfig:
        return replace(ProtocolConfig() if self.full else CPU_SCALE, **self.overrides).validate()


def run_classify(req: ClassifyRequest, client=None, progress: bool = True) -> tuple[pd.DataFrame, str]:
    """Run the protocol ``req`` asks for (``run_protocol``) and write ``table.txt`` (test AUROC x100,
    mean ± std over seeds, without the p-value columns) and ``provenance.json`` beside its runs.
    Returns the results and that table as text. With ``client`` the runs go to that Dask cluster;
    else to the one ``req`` asks for (``distributed.cluster``: started here and closed), or to this process."""
    aug, films = load_sets(req.sets, req.config().sigmas)
    cfg = replace(req.config(), films=films)
    with cluster(client, req.scheduler, req.workers) as client:
        results = run_protocol(cfg, aug, req.out, client=client, progress=progress, save_models=req.save_models)
    table = protocol_table(results)
    text = table[[c for c in table.columns if not c.startswith("p ")]].to_string(index=False)
    atomic_write(Path(req.out) / "table.txt", lambda f: f.write(text + "\n"), "w")
    write_json(Path(req.out) / PROVENANCE, provenance("classify", req))
    return results, text
