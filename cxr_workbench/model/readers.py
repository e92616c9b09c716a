"""Readers: whatever reads the diseases off an image, as a plug-in.

A reader maps images [N, C, H, W] in [-1, 1] to named readings (numpy arrays [N]) and says, for
each disease it reads, which reading measures it (its trend along an edit is the severity trend)
and when an image counts as showing it. Everything that reads an image — the metrics of an edit
(``evaluate.measure``), the labels and reference choice of augmentation sets, the machine reader
of a reader study — takes a reader, so the phantom oracle can be replaced by a network that means
something on a user's films:

* ``oracle``: the shipped severity oracle of the films the generator learned (CTR, opacity burden,
  kind, plausibility; ``assets.load_reader``), or another one trained by ``cxr-workbench oracle``
  (a path; refused for a generator of other films);
* a classifier saved by ``cxr-workbench classify --save-models`` (a path): the probability of each
  class; an image shows a disease when the disease is the classifier's answer (its most probable
  class);
* a user's network: a TorchScript file (``torch.jit.load``; TorchScript is a program: load only
  files you trust, as you would run your own code), or a MONAI network by name with a weights file
  read weights-only, ``monai:DenseNet121:weights.pt[:normal,cardiomegaly,opacity]``. Either maps
  [N, 1, R, R] in [-1, 1] to one logit per class; the class names default to ``normal,
  cardiomegaly, opacity``. A TorchScript module may carry ``classes`` (list of names) and
  ``resolution`` (int) attributes.

Images of another size than the reader's are resized (area averaging down, bilinear up) and
colour images averaged to grey, so the 64 px oracle also reads a 256 px generator's images (a
phantom rendered at 256 px and reduced reads as the 64 px one does; on other images it reads what
a 64 px view shows).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr_workbench.imaging.diseases import DISEASES, check_disease, reads_as
from cxr_workbench.io import zip_entries

__all__ = ["DEFAULT_CLASSES", "reader_input", "Reader", "OracleReader", "ClassifierReader", "as_reader",
           "READER_SPECS", "NETWORKS", "make_network", "save_classifier", "reader_from_file", "monai_reader"]

DEFAULT_CLASSES = ("normal", "cardiomegaly", "opacity")


def reader_input(images: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """images [N, C, H, W] (or [N, H, W]) as a reader takes them: [N, 1, R, R] float, grey, at
    ``resolution`` (None: as they are)."""
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"reader input has shape {tuple(images.shape)}; expected [N, C, H, W]")
    x = images.float().mean(1, keepdim=True) if images.shape[1] != 1 else images.float()
    if resolution is None or x.shape[-2:] == (resolution, resolution):
        return x
    if x.shape[-1] > resolution:
        return F.interpolate(x, size=(resolution, resolution), mode="area")
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


class Reader:
    """Named readings of images; see the module docstring. Subclasses set ``name``, ``diseases``
    ({disease: reading}), ``resolution`` (None: any size) and ``plausibility`` (whether a bool
    ``plausible`` reading is among the readings), and implement ``_read`` and ``reads_as``."""

    name: str
    diseases: dict[str, str]
    resolution: int | None
    plausibility: bool = False

    def _read(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> dict[str, np.ndarray]:
        """Readings of images [N, C, H, W] in [-1, 1], in chunks of ``batch``."""
        x = reader_input(images, self.resolution)
        parts = [self._read(x[i:i + batch]) for i in range(0, len(x), batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def severity(self, disease: str) -> str:
        """The reading that grows with ``disease``."""
        if check_disease(disease) not in self.diseases:
            raise ValueError(f"reader {self.name} does not read {disease} (it reads {sorted(self.diseases)}); "
                             "choose a reader that does")
        return self.diseases[disease]

    def reads_as(self, pred: dict, disease: str) -> np.ndarray:
        """Where ``pred`` (this reader's readings) shows ``disease``: bool [N]."""
        raise NotImplementedError

    def reads_normal(self, pred: dict) -> np.ndarray:
        """Where ``pred`` shows none of the diseases this reader reads: bool [N]."""
        return ~np.any([self.reads_as(pred, d) for d in self.diseases], axis=0)

    def plausible(self, pred: dict) -> np.ndarray:
        """Whether each image looks like a chest film: bool [N] (all True for a reader that does
        not judge it)."""
        n = len(next(iter(pred.values())))
        return np.asarray(pred["plausible"], bool) if self.plausibility else np.ones(n, bool)


class OracleReader(Reader):
    """The severity oracle as a reader: its readings and the thresholds of ``diseases.DISEASES``."""

    plausibility = True

    def __init__(self, oracle, name: str = "oracle"):
        self.oracle, self.name = oracle, name
        self.resolution = oracle.resolution
        self.diseases = {d: spec.reading for d, spec in DISEASES.items()}

    def _read(self, x):
        return self.oracle.predict(x)

    def reads_as(self, pred, disease):
        return reads_as(pred, disease)  # the disease table's thresholds, as for the phantoms' truth


class ClassifierReader(Reader):
    """A network giving one logit per class, [N, 1, R, R] -> [N, K], as a reader: readings
    ``p_<class>`` (softmax) and ``kind`` (the most probable class's index)."""

    def __init__(self, net, classes=DEFAULT_CLASSES, resolution: int | None = None, name: str = "classifier"):
        classes = tuple(str(c) for c in classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"reader {name}: classes {list(classes)}; expected at least two different names")
        self.net, self.classes, self.resolution, self.name = net, classes, resolution, name
        self.diseases = {c: f"p_{c}" for c in classes if c in DISEASES}
        if not self.diseases:
            raise ValueError(f"reader {name}: classes {list(classes)} name no disease; expected some of "
                             f"{sorted(DISEASES)}")

    def _read(self, x):
        logits = self.net(x.to(_device_of(self.net)))
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ValueError(f"reader {self.name} gave outputs of shape {tuple(logits.shape)}; expected "
                             f"[{len(x)}, {len(self.classes)}] (one logit per class {list(self.classes)})")
        probs = logits.float().softmax(-1).cpu().numpy()
        return {"kind": probs.argmax(1), **{f"p_{c}": probs[:, i] for i, c in enumerate(self.classes)}}

    def reads_as(self, pred, disease):
        self.severity(disease)
        return np.asarray(pred["kind"]) == self.classes.index(disease)


def _device_of(net) -> torch.device:
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def as_reader(reader) -> Reader | None:
    """A Reader from a Reader, a SeverityOracle (wrapped) or None (none)."""
    from cxr_workbench.model.oracle import SeverityOracle
    if reader is None or isinstance(reader, Reader):
        return reader
    if isinstance(reader, SeverityOracle):
        return OracleReader(reader)
    raise TypeError(f"reader {reader!r}; expected a Reader, a SeverityOracle or None")


READER_SPECS = ("oracle (the shipped severity oracle of the generator's films), a .pt written by cxr-workbench "
                "oracle or classify --save-models, a TorchScript .pt, or monai:NAME:WEIGHTS[:class,class,...]")

NETWORKS = ("small", "densenet121")


def make_network(name: str, n_classes: int) -> torch.nn.Module:
    """MONAI classifier networks: ``densenet121`` (2D, one channel in, as in common chest X-ray
    practice) or ``small``, a DenseNet of three short blocks sized for CPU (37 K parameters)."""
    from monai.networks.nets import DenseNet, DenseNet121
    if name == "densenet121":
        return DenseNet121(spatial_dims=2, in_channels=1, out_channels=n_classes)
    if name == "small":
        return DenseNet(spatial_dims=2, in_channels=1, out_channels=n_classes, init_features=16, growth_rate=12,
                        block_config=(3, 3, 3), bn_size=2)
    raise ValueError(f"network={name!r}; expected one of {NETWORKS}")


def save_classifier(path, net, *, network: str, classes, resolution: int, model_card: dict | None = None,
                    overwrite: bool = True) -> Path:
    """A trained classifier in our format (kind "classifier"), readable by ``reader_from_file``."""
    from cxr_workbench.model.checkpoints import save_checkpoint
    config = dict(network=network, classes=list(classes), resolution=int(resolution))
    return save_checkpoint(path, dict(kind="classifier", config=config, weights=net.state_dict(),
                                      model_card=model_card or {}), overwrite)


def reader_from_file(path) -> Reader:
    """The reader in a file: an oracle or classifier of ours, or TorchScript (see the module docstring)."""
    from cxr_workbench.io import torch_load
    from cxr_workbench.model.checkpoints import FORMAT
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reader {path}: no such file; expected {READER_SPECS}")
    if _is_torchscript(path):
        return _torchscript_reader(path)
    data = torch_load(path, "reader")
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("kind") not in ("oracle", "classifier"):
        raise ValueError(f"reader {path}: neither an oracle nor a classifier of cxr-workbench, nor TorchScript; "
                         f"expected {READER_SPECS}")
    if data["kind"] == "oracle":
        from cxr_workbench.model.oracle import load_oracle
        return OracleReader(load_oracle(path), name=f"oracle {path.name}")
    try:
        cfg = data["config"]
        net = make_network(cfg["network"], len(cfg["classes"]))
        net.load_state_dict(data["weights"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"reader {path}: a damaged classifier file ({type(e).__name__}: {str(e)[:120]})") from None
    return ClassifierReader(net.eval().requires_grad_(False), cfg["classes"], cfg["resolution"],
                            name=f"classifier {path.name}")


def monai_reader(spec: str) -> Reader:
    """``monai:NAME:WEIGHTS[:class,class,...]``: a network of ``monai.networks.nets`` built for 2D
    single-channel input and one output per class, its weights read weights-only."""
    from cxr_workbench.io import torch_load
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[1] or not parts[2]:
        raise ValueError(f"reader {spec!r}; expected monai:NAME:WEIGHTS or monai:NAME:WEIGHTS:class,class,...")
    name, weights = parts[1], Path(parts[2])
    classes = tuple(parts[3].split(",")) if len(parts) == 4 else DEFAULT_CLASSES
    import monai.networks.nets as nets
    build = getattr(nets, name, None)
    if not callable(build):
        raise ValueError(f"reader {spec!r}: monai.networks.nets has no network {name!r}")
    if not weights.is_file():
        raise FileNotFoundError(f"reader {spec!r}: weights file {weights} does not exist")
    net = build(spatial_dims=2, in_channels=1, out_channels=len(classes))
    try:
        net.load_state_dict(torch_load(weights, "reader weights"))
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise ValueError(f"reader {spec!r}: {weights} does not fit {name} with {len(classes)} classes ({first})") \
            from None
    return ClassifierReader(net.eval().requires_grad_(False), classes, None, name=f"monai {name} {weights.name}")


def _is_torchscript(path: Path) -> bool:
    return any(i.filename.split("/", 1)[-1].startswith("code/") for i in zip_entries(path) or ())


def _torchscript_reader(path: Path) -> Reader:
    import warnings
    try:
        with warnings.catch_warnings():  # torch's deprecation notice is for authors, not for a reader's user
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # a damaged archive
        raise ValueError(f"reader {path}: not a loadable TorchScript file ({type(e).__name__})") from None
    classes = tuple(getattr(net, "classes", DEFAULT_CLASSES))
    resolution = getattr(net, "resolution", None)
    return ClassifierReader(net, classes, int(resolution) if resolution else None, name=f"torchscript {path.name}")
