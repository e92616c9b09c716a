"""Property-based fuzzing of the readers of untrusted files: box JSON, direction files,
checkpoints (our format, rosinality, NVlabs pickles), films (PNG, JPEG, DICOM), latents, CT volumes
and labelmaps, reader-study databases, tunings (tuned.pt), provenance records and edit sets read back. Whatever the
bytes, the answer is a valid object or one ValueError; nothing else escapes and nothing is executed."""
import io
import json
import pickle
import sys
import types
from collections import OrderedDict
from unittest import mock

import pytest
import torch
from conftest import tiny_generator
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cxr_workbench.imaging.masks import Box
from cxr_workbench.method.directions import resolve_direction
from cxr_workbench.model.checkpoints import load_generator, save_generator

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=6), max_leaves=12)
box_like = st.fixed_dictionaries({k: st.one_of(st.integers(-5, 80), st.floats(-5, 80), st.text(max_size=3), st.none())
                                  for k in ("x0", "y0", "x1", "y1", "resolution")})


@FUZZ
@given(st.one_of(json_values, box_like))
def test_box_reader(tmp_path, value):
    path = tmp_path / "box.json"
    path.write_text(json.dumps(value))
    try:
        box = Box.load(path)
    except ValueError as e:
        assert str(path) in str(e)
    else:
        assert 0 <= box.x0 < box.x1 <= box.resolution and 0 <= box.y0 < box.y1 <= box.resolution


@FUZZ
@given(st.binary(max_size=400))
def test_box_reader_bytes(tmp_path, data):
    (tmp_path / "b.json").write_bytes(data)
    with pytest.raises(ValueError, match="b.json"):
        Box.load(tmp_path / "b.json")


def mutations(max_edits=6):
    return st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=max_edits)


def mutate(data: bytes, edits, cut) -> bytes:
    b = bytearray(data[:max(1, int(len(data) * cut))])
    for where, value in edits:
        b[int(where * len(b))] = value
    return bytes(b)


@pytest.fixture(scope="module")
def direction_bytes():
    buf = io.BytesIO()
    torch.save({"u": torch.arange(16.0), "source": "fuzz"}, buf)
    return buf.getvalue()


@FUZZ
@given(edits=mutations(), cut=st.floats(0.05, 1.0))
@example(edits=[(0.8306383044754521, 64)], cut=1.0)  # zip64 "version needed" 6.4: zipfile raised NotImplementedError
def test_direction_reader(tmp_path, direction_bytes, edits, cut):
    (tmp_path / "u.pt").write_bytes(mutate(direction_bytes, edits, cut))
    try:
        u, _ = resolve_direction(str(tmp_path / "u.pt"), None, 16)
    except ValueError as e:
        assert "u.pt" in str(e)
    else:
        assert u.shape == (16,) and abs(float(u.norm()) - 1) < 1e-5


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    """Our checkpoint, and an NVlabs-style network pickle of the same tiny generator."""
    d = tmp_path_factory.mktemp("ckpt")
    G = tiny_generator()
    ours = save_generator(d / "g.pt", G).read_bytes()
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Record:
        def __init__(self, module):
            self.state = dict(_parameters=OrderedDict(module._parameters),
                              _buffers=OrderedDict((k, v) for k, v in module._buffers.items()
                                                   if k not in module._non_persistent_buffers_set),
                              _modules=OrderedDict((k, Record(m)) for k, m in module._modules.items()),
                              conv_clamp=None)

        def __reduce__(self):
            return _reconstruct_persistent_obj, (dict(type="class", version=4, class_name="X", state=self.state),)

    with mock.patch.dict(sys.modules, {"torch_utils": types.ModuleType("torch_utils"),
                                       "torch_utils.persistence": persistence}):
        nvlabs = pickle.dumps({"G_ema": Record(G)}, protocol=4)
    return dict(ours=ours, nvlabs=nvlabs)


@FUZZ
@given(kind=st.sampled_from(["ours", "nvlabs"]), edits=mutations(), cut=st.floats(0.05, 1.0),
       fmt=st.sampled_from(["auto", "rosinality", "nvlabs", "workbench"]))
def test_checkpoint_reader(tmp_path, checkpoint_bytes, kind, edits, cut, fmt):
    path = tmp_path / "net.pkl"
    path.write_bytes(mutate(checkpoint_bytes[kind], edits, cut))
    try:
        G = load_generator(path, format=fmt)
    except ValueError as e:
        assert "net.pkl" in str(e)
    else:
        assert G.img_resolution == 16


def test_the_unmutated_files_load(tmp_path, checkpoint_bytes):
    for kind, data in checkpoint_bytes.items():
        (tmp_path / kind).write_bytes(data)
        assert load_generator(tmp_path / kind).img_resolution == 16


# --------------------------------------------------------------------------------------------
# Films, latents, CT volumes and study databases (issue 34): mutated files are read or refused in
# one ValueError naming the file; nothing else escapes.
# --------------------------------------------------------------------------------------------

SMALL_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def refused_naming(path, read):
    """``read()`` returns, or raises one ValueError naming ``path`` in a single line."""
    try:
        return read()
    except ValueError as e:
        assert str(path) in str(e) and "\n" not in str(e), str(e)


@pytest.fixture(scope="module")
def film_bytes(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from cxr_workbench.imaging.datasets import save_dicom
    folder = tmp_path_factory.mktemp("films")
    ramp = (np.add.outer(np.arange(48), np.arange(40)) * 40).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "a.png")
    Image.fromarray((ramp // 16).astype(np.uint8)).save(folder / "a.jpg", quality=90)
    save_dicom(folder / "a.dcm", ramp.astype(np.float32) / ramp.max())
    return {s: (folder / f"a{s}").read_bytes() for s in (".png", ".jpg", ".dcm")}


@SMALL_FUZZ
@given(st.sampled_from([".png", ".jpg", ".dcm"]), mutations(), st.floats(0.05, 1.0))
def test_film_reader(tmp_path, film_bytes, suffix, edits, cut):
    from cxr_workbench.imaging.datasets import read_image
    path = tmp_path / f"film{suffix}"
    path.write_bytes(mutate(film_bytes[suffix], edits, cut))
    img = refused_naming(path, lambda: read_image(path))
    if img is not None:
        assert img.ndim == 2 and img.dtype.name == "float32" and 0 <= img.min() and img.max() <= 1


@SMALL_FUZZ
@given(mutations(), st.floats(0.05, 1.0))
def test_latents_reader(tmp_path, edits, cut):
    from cxr_workbench.studies.films import read_inverted
    G = tiny_generator()
    buf = io.BytesIO()
    torch.save(dict(ws=torch.randn(2, G.num_ws, G.w_dim), images=["a.png", "b.png"]), buf)
    path = tmp_path / "latents.pt"
    path.write_bytes(mutate(buf.getvalue(), edits, cut))
    ws = refused_naming(path, lambda: read_inverted(path, G).ws)
    if ws is not None:
        assert ws.shape[1:] == (G.num_ws, G.w_dim) and torch.isfinite(ws).all()


@pytest.fixture(scope="module")
def ct_bytes(tmp_path_factory):
    import nibabel as nib
    from test_drr import synthetic_ct
    folder = tmp_path_factory.mktemp("ct")
    hu, lab = synthetic_ct((24, 20, 18))
    affine = __import__("numpy").diag([-8.0, 8.0, 10.0, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), folder / "ct.nii")
    nib.save(nib.Nifti1Image(lab, affine), folder / "mask.nii")
    return (folder / "ct.nii").read_bytes(), (folder / "mask.nii").read_bytes()


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the CT's bytes, shown only on a failure
@SMALL_FUZZ
@given(st.booleans(), mutations(), st.floats(0.05, 1.0))
@example(False, [(0.18, 90)], 0.18)  # a labelmap whose affine names no third axis: nibabel's error, no file named
def test_ct_reader(tmp_path, ct_bytes, which, edits, cut):
    from cxr_workbench.imaging import ct
    volume, labels = ct_bytes
    (tmp_path / "ct.nii").write_bytes(mutate(volume, edits, cut) if which else volume)
    (tmp_path / "mask.nii").write_bytes(labels if which else mutate(labels, edits, cut))
    loaded = refused_naming(tmp_path, lambda: ct.load_ct(*ct.ct_files(tmp_path)))
    if loaded is not None:
        hu, lab, voxel = loaded
        assert hu.shape == lab.shape and all(0.1 <= v <= 10 for v in voxel)


@pytest.fixture(scope="module")
def dicom_ct(tmp_path_factory):
    """A small CT as a DICOM series with its labelmap: {file name: bytes}."""
    from test_drr import synthetic_ct, write_dicom_ct
    folder = write_dicom_ct(tmp_path_factory.mktemp("dicom"), *synthetic_ct((24, 20, 18)))
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@SMALL_FUZZ
@given(st.integers(0, 17), mutations(), st.floats(0.05, 1.0))
def test_dicom_ct_reader(tmp_path, dicom_ct, slice_index, edits, cut):
    """One slice of a DICOM series damaged: read, or refused in one line naming the folder."""
    from cxr_workbench.imaging import ct
    victim = f"slice{slice_index:04d}.dcm"
    for name, data in dicom_ct.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(mutate(data, edits, cut) if name.name == victim else data)
    loaded = refused_naming(tmp_path, lambda: ct.load_ct(*ct.ct_files(tmp_path)))
    if loaded is not None:
        hu, lab, voxel = loaded
        assert hu.shape == lab.shape and all(0.1 <= v <= 10 for v in voxel)



@pytest.fixture(scope="module")
def study_bytes(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from cxr_workbench.studies import reader_study as rs
    folder = tmp_path_factory.mktemp("study")
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(folder / "i.png")
    db = rs.open_study_db(folder / "study.db")
    rs.create_study(db, "s", [dict(path=folder / "i.png", source="real", cardiomegaly=1, opacity=0)])
    rs.add_reader(db, "ann")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return (folder / "study.db").read_bytes()


@SMALL_FUZZ
@given(st.booleans(), mutations(12), st.floats(0.05, 1.0))
@example(False, [(1 / 3, 0)], 0.99999)  # an index that lost a row: SQLite's quick check passed it
def test_study_database_reader(tmp_path, study_bytes, readonly, edits, cut):
    from cxr_workbench.studies import reader_study as rs
    path = tmp_path / "study.db"
    path.write_bytes(mutate(study_bytes, edits, cut))
    db = refused_naming(path, lambda: rs.open_study_db(path, readonly=readonly))
    if db is not None:
        try:
            rs.next_item(db, "s", "ann")  # what was read is usable, or refused by name
        except ValueError:
            pass
        db.close()


@pytest.fixture(scope="module")
def tuning(tmp_path_factory):
    """A tiny generator, pivots, and the bytes of a tuning of it for them."""
    from cxr_workbench.method.tune import save_tuning
    G = tiny_generator()
    tuned = tiny_generator()
    with torch.no_grad():
        for p in tuned.synthesis.parameters():
            p.add_(0.01)
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)), None)
    path, _ = save_tuning(tmp_path_factory.mktemp("tuning") / "tuned.pt", G, tuned, ws)
    return G, ws, path.read_bytes()


@FUZZ
@given(edits=mutations(), cut=st.floats(0.05, 1.0))
def test_tuning_reader(tmp_path, tuning, edits, cut):
    """A damaged tuned.pt is refused naming the file; one that loads is the tuning as saved."""
    from cxr_workbench.method.tune import load_tuning
    from cxr_workbench.model.checkpoints import generator_key
    G, ws, data = tuning
    (tmp_path / "tuned.pt").write_bytes(mutate(data, edits, cut))
    try:
        tuned = load_tuning(tmp_path / "tuned.pt", G, ws)
    except ValueError as e:
        assert "tuned.pt" in str(e)
    else:
        assert generator_key(tuned) == torch.load(io.BytesIO(data), weights_only=True)["tuned"]


@FUZZ
@given(st.one_of(json_values, st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_provenance_reader(tmp_path, value):
    """Whatever provenance.json holds, replay reads a record with a kind and a request or says why not."""
    from cxr_workbench.studies.provenance import read_provenance
    (tmp_path / "provenance.json").write_text(value if isinstance(value, str) else json.dumps(value))
    try:
        prov = read_provenance(tmp_path)
    except ValueError as e:
        assert "provenance.json" in str(e)
    else:
        assert isinstance(prov["request"], dict) and "kind" in prov


def _edit_set(folder, metrics: dict) -> None:
    """An edit set of one reference, written by hand: provenance, metrics and latents."""
    folder.mkdir(exist_ok=True)
    (folder / "provenance.json").write_text(json.dumps(dict(kind="edit", request=dict(seeds=[3]), generator=dict(
        path="g.pt", sha256="0" * 64))))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    torch.save(dict(w_ref=torch.zeros(1, 4, 8), points=torch.ones(1, 12, 4, 8)), folder / "latents.pt")


EDIT_METRICS = dict(request=dict(method="lo+dir"), disease="cardiomegaly",
                    box=dict(x0=20, y0=30, x1=44, y1=50, resolution=64),
                    trajectory=dict(config=dict(sigma=0.3, layers=[0, 1, 2, 3])), per_reference=[dict(PV=1.5)])


@FUZZ
@given(field=st.sampled_from(["request", "disease", "box", "trajectory", "per_reference", None]),
       value=st.one_of(json_values, box_like))
def test_edit_set_reader(tmp_path, field, value):
    """Whatever an edit set's metrics.json holds, figures read the set back or refuse it naming the file."""
    from cxr_workbench.studies.edit import read_edit_set
    metrics = value if field is None else {**EDIT_METRICS, field: value}
    _edit_set(tmp_path / "set", metrics)
    try:
        es = read_edit_set(tmp_path / "set")
    except ValueError as e:
        assert "metrics.json" in str(e)
    else:
        assert es.points.shape == (1, 12, 4, 8) and len(es.rows) == 1 and es.box.resolution == 64


def test_the_unmutated_edit_set_reads(tmp_path):
    from cxr_workbench.studies.edit import read_edit_set
    _edit_set(tmp_path / "set", EDIT_METRICS)
    es = read_edit_set(tmp_path / "set")
    assert (es.method, es.disease, es.seeds, es.config.sigma, es.config.layers) == ("lo+dir", "cardiomegaly", [3],
                                                                                     0.3, (0, 1, 2, 3))


@pytest.mark.parametrize("latents, message", [
    (dict(w_ref=torch.zeros(1, 4, 8).to_sparse(), points=torch.ones(1, 12, 4, 8)), "w_ref: a sparse_coo tensor"),
    (dict(w_ref=torch.zeros(1, 4, 8), points=torch.ones(1, 12, 4, 8, device="meta")), "points: a meta tensor"),
    (dict(w_ref=torch.zeros(1, 4, 8, dtype=torch.int64), points=torch.ones(1, 12, 4, 8)), "w_ref: a torch.int64"),
    (dict(w_ref=torch.zeros(1, 4, 8), points=torch.ones(1, 0, 4, 8)), "points: latents of shape \\(1, 0, 4, 8\\)"),
    (dict(w_ref=torch.zeros(1, 4, 8), points=torch.ones(2, 12, 4, 8)), "w_ref \\(1, 4, 8\\), points \\(2, 12, 4, 8\\)"),
    (dict(w_ref=torch.zeros(1, 4, 8), points=torch.full((1, 12, 4, 8), float("inf"))), "points: .*expected finite"),
    ([torch.zeros(1, 4, 8)], "w_ref: NoneType"),
])
def test_an_edit_sets_broken_latents_are_refused_naming_the_file(tmp_path, latents, message):
    from cxr_workbench.studies.edit import read_edit_set
    _edit_set(tmp_path / "set", EDIT_METRICS)
    torch.save(latents, tmp_path / "set" / "latents.pt")
    with pytest.raises(ValueError, match=f"latents.pt: {message}"):
        read_edit_set(tmp_path / "set")


@pytest.mark.parametrize("damage", ["vr", "cut"])
def test_a_damaged_dicom_header_is_refused_naming_the_file(tmp_path, film_bytes, damage):
    # found by test_film_reader on clean machines: pydicom's parser raises NotImplementedError for a
    # VR it does not know and BytesLengthException for a value cut short, first in the file meta
    # group (read before dcmread), then anywhere it parses an element late
    from cxr_workbench.imaging.datasets import read_image
    data = film_bytes[".dcm"]
    at = data.index(b"\x02\x00\x00\x00UL", 128)  # (0002,0000), explicit VR
    path = tmp_path / f"bad_{damage}.dcm"
    path.write_bytes(data[:at + 4] + b"AL" + data[at + 6:] if damage == "vr" else data[:int(0.15 * len(data))])
    with pytest.raises(ValueError, match=f"bad_{damage}.dcm"):
        read_image(path)
