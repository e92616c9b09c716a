import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_generator
from PIL import Image

from cxr_workbench.imaging.diseases import DISEASES
from cxr_workbench.imaging.masks import MIN_SIDE, Box, preset, reference_box
from cxr_workbench.method.metrics import box_leakage
from cxr_workbench.method.optimize import LOConfig
from cxr_workbench.method.pca import compute_pca
from cxr_workbench.model.checkpoints import generator_key
from cxr_workbench.model.latents import reference_latents, synthesize
from cxr_workbench.model.oracle import SeverityOracle
from cxr_workbench.model.readers import Reader
from cxr_workbench.studies import augment
from cxr_workbench.studies.augment import make_augmentation, read_manifest, read_set_images, set_quality, to_uint16

FAST = LOConfig(n=5, max_steps=3, min_steps=0)


@pytest.fixture(scope="module")
def model():
    G = tiny_generator()
    torch.manual_seed(0)
    return G, compute_pca(G, n_samples=256, progress=False), SeverityOracle(resolution=16, width=4).eval()


def make(model, out, n=5, **kw):
    G, pca, oracle = model
    return make_augmentation(G, range(10, 20), "cardiomegaly", n, FAST, out, keep_last=2, pca=pca, reader=oracle,
                             batch=2, progress=False, **kw)


def test_a_set_keeps_the_last_points_as_16_bit_pngs_with_a_manifest(model, tmp_path):
    m = make(model, tmp_path / "set")
    assert list(m.columns) == list(augment.MANIFEST_COLUMNS + augment.READER_COLUMNS + augment.LEAKAGE_COLUMNS
                                   + augment.SET_COLUMNS)
    assert len(m) == 5 and m["in_set"].all()
    assert set(m["reader"]) == {"oracle"} and (m["severity"] == m["ctr"]).all()
    assert (m["read_as"] == (m["ctr"] > 0.5)).all()
    # 5 samples at 2 per reference: seeds 10, 11 give points 4 and 5, seed 12 only point 5
    assert list(zip(m["reference"], m["point_index"])) == [(10, 4), (10, 5), (11, 4), (11, 5), (12, 5)]
    assert set(m["label"]) == {"cardiomegaly"} and set(m["method"]) == {"lo+dir"} and set(m["sigma"]) == {0.3}
    assert set(m["generator"]) == {generator_key(model[0])} and m["config_hash"].nunique() == 1
    assert json.loads(m["box"][0])["resolution"] == 16 and m["u_source"][0].startswith("auto: PC")
    png = Image.open(tmp_path / "set" / m["file"][0])
    assert png.mode == "I;16" and png.size == (16, 16)
    head = json.loads((tmp_path / "set" / "set.json").read_text())
    assert head["disease"] == "cardiomegaly" and len(head["u"]) == 8 and head["keep_last"] == 2
    # the images are the trajectory's last points, to 16 bits
    from cxr_workbench.imaging.masks import load_box
    from cxr_workbench.method.optimize import run_method
    G, pca, _ = model
    box = load_box("heart", 16)
    u = torch.tensor(head["u"])
    traj = run_method(G, "lo+dir", reference_latents(G, [10]), box, u=u, config=FAST, progress=False)
    back = read_set_images(tmp_path / "set")
    assert back.shape == (5, 1, 16, 16)
    torch.testing.assert_close(back[:2], traj.images[0, 3:], atol=1.5e-4, rtol=0)


def test_a_set_of_a_drr_generator_says_so_for_the_classifier_protocol(model, tmp_path):
    import copy
    G, pca, oracle = model
    drr = copy.deepcopy(G)
    drr.source = "drr"
    make_augmentation(drr, range(10, 12), "cardiomegaly", 2, FAST, tmp_path / "drr", keep_last=2, pca=pca,
                      reader=oracle, batch=2, progress=False)
    assert json.loads((tmp_path / "drr" / "set.json").read_text())["films"] == "drr"
    phantom = copy.deepcopy(G)
    phantom.source = "phantom"
    make((phantom, pca, oracle), tmp_path / "phantom", n=2)  # a phantom generator's set names none (older sets resume)
    assert "films" not in json.loads((tmp_path / "phantom" / "set.json").read_text())
    make(model, tmp_path / "imported", n=2)  # an imported generator's: the default's films, those its reader learned
    assert json.loads((tmp_path / "imported" / "set.json").read_text())["films"] == "drr"


def test_uint16_round_trip_is_exact_to_half_a_level():
    x = torch.linspace(-1, 1, 1001)
    back = torch.from_numpy(to_uint16(x).astype(np.float32)) / 32767.5 - 1
    assert (back - x).abs().max() <= 0.5 / 32767.5 + 1e-7
    assert to_uint16(torch.tensor([-3.0, 3.0])).tolist() == [0, 65535]


def killed_on_the_second_batch(monkeypatch, make_set):
    """Run ``make_set()`` with edit_references dying on its second batch, as a killed run would."""
    real = augment.edit_references
    calls = []

    def dies_on_the_second_batch(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(augment, "edit_references", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        make_set()
    monkeypatch.setattr(augment, "edit_references", real)


def test_a_killed_run_resumes_to_the_same_set(model, tmp_path, monkeypatch):
    whole = make(model, tmp_path / "whole")
    killed_on_the_second_batch(monkeypatch, lambda: make(model, tmp_path / "parts"))
    assert len(read_manifest(tmp_path / "parts")) == 4  # the first batch, both references
    parts = make(model, tmp_path / "parts")
    pd.testing.assert_frame_equal(parts, whole)
    for f in whole["file"]:
        assert (tmp_path / "parts" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes()
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["images", "manifest.csv", "set.json"]


def test_resume_refuses_another_generator_or_other_settings(model, tmp_path):
    G, pca, oracle = model
    make(model, tmp_path / "set")
    other = tiny_generator(mapping_layers=3)
    with pytest.raises(ValueError, match="was made by generator .* not by this one"):
        make_augmentation(other, range(10, 20), "cardiomegaly", 5, FAST, tmp_path / "set", keep_last=2,
                          pca=compute_pca(other, n_samples=256, progress=False), progress=False)
    with pytest.raises(ValueError, match="other settings.*sigma"):
        make_augmentation(
            G, range(10, 20), "cardiomegaly", 5, LOConfig(n=5, max_steps=3, min_steps=0, sigma=1.0),
            tmp_path / "set", keep_last=2, pca=pca, progress=False)
    assert len(read_manifest(tmp_path / "set")) == 5  # nothing lost


@pytest.mark.parametrize("kw, message", [
    (dict(disease="flu"), "disease='flu'"),
    (dict(keep_last=6), "keep_last=6 is larger than the trajectory's n=5"),
    (dict(n_samples=30), "10 reference seeds for 30 samples at keep_last=2; expected at least 15"),
    (dict(n_samples=0), "n_samples=0"),
    (dict(method="warp"), "method='warp'"),
])
def test_bad_requests_name_the_value(model, tmp_path, kw, message):
    G, pca, oracle = model
    args = dict(G=G, seeds=range(10, 20), disease="cardiomegaly", n_samples=5, config=FAST, out_dir=tmp_path / "s",
                keep_last=2, pca=pca, progress=False)
    with pytest.raises(ValueError, match=message):
        make_augmentation(**{**args, **kw})
    assert not (tmp_path / "s").exists()


def test_set_quality_known_answers():
    m = pd.DataFrame(dict(disease="cardiomegaly", ctr=[0.4, 0.55, 0.6, 0.7], opacity_burden=0.0,
                          plausible=[True, True, False, True]))
    assert set_quality(m) == dict(disease="cardiomegaly", n=4, intended=0.75, plausible=0.75,
                                  intended_and_plausible=0.5, edited=4, edits_passed=0.5)
    o = m.assign(disease="opacity", opacity_burden=[0.0, 0.02, 0.005, 0.3], plausible=[True, False, True, True])
    assert set_quality(o)["intended"] == 0.5 and set_quality(o)["intended_and_plausible"] == 0.25
    # a verified set: the figures of its samples, and the share of all its edits that passed
    v = m.assign(in_set=[False, True, False, True])
    assert set_quality(v) == dict(disease="cardiomegaly", n=2, intended=1.0, plausible=1.0,
                                  intended_and_plausible=1.0, edited=4, edits_passed=0.5)
    # with each sample's leakage recorded: the median over the samples in the set
    assert set_quality(v.assign(leakage=[9.0, 0.1, 9.0, 0.3]))["leakage"] == pytest.approx(0.2)


def test_latents_are_references_too(model, tmp_path):
    G, pca, oracle = model
    by_seed = make(model, tmp_path / "seeds", n=4)
    ws = reference_latents(G, [10, 11])
    by_latent = make_augmentation(G, [], "cardiomegaly", 4, FAST, tmp_path / "latents", keep_last=2, pca=pca,
                                  reader=oracle, batch=2, progress=False, latents=ws)
    assert list(by_latent["reference"]) == [0, 0, 1, 1] and list(by_seed["reference"]) == [10, 10, 11, 11]
    torch.testing.assert_close(read_set_images(tmp_path / "latents"), read_set_images(tmp_path / "seeds"))
    head = json.loads((tmp_path / "latents" / "set.json").read_text())
    assert head["references"].startswith("latents ")
    with pytest.raises(ValueError, match=r"latents of shape \(2, 8\)"):
        make_augmentation(G, [], "cardiomegaly", 4, FAST, tmp_path / "bad", pca=pca, latents=ws[:, 0])


def test_resume_refuses_another_size_or_other_references(model, tmp_path):
    G, pca, oracle = model
    make(model, tmp_path / "set", n=4)
    with pytest.raises(ValueError, match="n_samples"):
        make(model, tmp_path / "set", n=6)
    with pytest.raises(ValueError, match="references"):
        make_augmentation(G, range(30, 40), "cardiomegaly", 4, FAST, tmp_path / "set", keep_last=2, pca=pca,
                          reader=oracle, batch=2, progress=False)
    assert len(read_manifest(tmp_path / "set")) == 4  # nothing lost


def damage_missing(out, m):
    (out / m["file"][1]).unlink()


def damage_garbage(out, m):
    (out / m["file"][3]).write_bytes(b"not a png")


def damage_row_deleted(out, m):
    m.drop(index=4).to_csv(out / "manifest.csv", index=False)


def damage_row_duplicated(out, m):
    pd.concat([m, m.iloc[[0]]]).to_csv(out / "manifest.csv", index=False)


@pytest.mark.parametrize("damage", [damage_missing, damage_garbage, damage_row_deleted, damage_row_duplicated])
def test_resume_verifies_and_repairs_to_the_same_set(model, tmp_path, damage, capsys):
    whole = make(model, tmp_path / "whole")
    out = tmp_path / "damaged"
    make(model, out)
    capsys.readouterr()
    damage(out, read_manifest(out))
    repaired = make(model, out)
    assert "repaired" in capsys.readouterr().err
    pd.testing.assert_frame_equal(repaired, whole)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f.split("/")[1] for f in whole["file"])
    for f in whole["file"]:
        assert (out / f).read_bytes() == (tmp_path / "whole" / f).read_bytes()
    make(model, out)  # intact now: nothing to repair
    assert "repaired" not in capsys.readouterr().err


def test_a_failed_run_does_not_block_its_corrected_retry(model, tmp_path, monkeypatch):
    def fails(*a, **kw):
        raise FloatingPointError("went non-finite")

    monkeypatch.setattr(augment, "edit_references", fails)
    with pytest.raises(FloatingPointError):
        make(model, tmp_path / "set")
    assert (tmp_path / "set" / "set.json").is_file()
    monkeypatch.undo()
    G, pca, oracle = model
    retry = make_augmentation(G, range(10, 20), "cardiomegaly", 4, LOConfig(n=5, max_steps=3, min_steps=0, lr=0.001),
                              tmp_path / "set", keep_last=2, pca=pca, reader=oracle, batch=2, progress=False)
    assert len(retry) == 4


def test_a_manifest_naming_a_file_outside_the_set_is_refused(model, tmp_path):
    m = make(model, tmp_path / "set", n=2)
    m.loc[0, "file"] = "../../etc/passwd"
    with pytest.raises(ValueError, match="etc/passwd"):
        read_set_images(tmp_path / "set", m)


class Brightness(Reader):
    """A reader for the tests: the mean image value; 'disease' above a threshold."""
    name, resolution, diseases = "brightness", None, {"cardiomegaly": "mean", "opacity": "mean"}

    def __init__(self, threshold):
        self.threshold = threshold

    def _read(self, x):
        return {"mean": x.mean((1, 2, 3)).numpy()}

    def reads_as(self, pred, disease):
        return pred["mean"] > self.threshold


@pytest.fixture(scope="module")
def half_reader(model):
    """A reader that passes about half of the tiny generator's edits."""
    G = model[0]
    with torch.no_grad():
        means = G.synthesis(reference_latents(G, range(100, 164))).mean((1, 2, 3))
    return Brightness(float(means.median()))


def make_varied(model, reader, out, n=6, seeds=range(10, 40), **kw):
    G, pca, _ = model
    return make_augmentation(G, seeds, "opacity", n, FAST, out, keep_last=2, pca=pca, reader=reader, batch=3,
                             progress=False, points="spread", vary_box=True, verify=True, **kw)


def test_kept_points_last_or_spread_over_the_second_half():
    assert augment.kept_points(12, 4) == [8, 9, 10, 11]
    assert augment.kept_points(12, 4, "spread") == [6, 8, 9, 11]
    assert augment.kept_points(12, 2, "spread") == [6, 11] and augment.kept_points(12, 1, "spread") == [11]
    assert augment.kept_points(5, 3, "spread") == [2, 3, 4]
    with pytest.raises(ValueError, match="keep=4 points spread over the second half of n=5; expected at most 3"):
        augment.kept_points(5, 4, "spread")
    with pytest.raises(ValueError, match="points='middle'"):
        augment.kept_points(5, 1, "middle")


def test_a_verified_varied_set_holds_only_samples_that_pass(model, half_reader, tmp_path):
    m = make_varied(model, half_reader, tmp_path / "set")
    chosen = m[m["in_set"]]
    assert len(chosen) == 6 and chosen["read_as"].all() and len(m) > 6  # some edits failed and were kept aside
    assert (~m["read_as"] & m["in_set"]).sum() == 0
    # spread points: 3 and 5 of n = 5 (0-based 2 and 4); a reference's box is its own, from the opacity zones
    assert set(m["point_index"]) == {3, 5}
    boxes = {ref: json.loads(b) for ref, b in zip(m["reference"], m["box"])}
    zones = {s.split(":")[0] for s in m["u_source"]}
    assert zones <= {z for z, _ in DISEASES["opacity"].zones} and len(set(map(json.dumps, boxes.values()))) > 1
    for ref, b in boxes.items():
        zone, box = reference_box("opacity", ref, 16)
        assert b == box.to_dict()
    # references edited in order, whole batches of 3, until enough passed
    used = sorted(set(m["reference"]))
    assert used == list(range(10, 10 + len(used))) and len(used) % 3 == 0
    images = read_set_images(tmp_path / "set")
    assert images.shape == (6, 1, 16, 16)
    assert (images.mean((1, 2, 3)) > half_reader.threshold - 1e-4).all()  # 16-bit rounding
    head = json.loads((tmp_path / "set" / "set.json").read_text())
    assert head["points"] == "spread" and head["vary_box"] and head["verify"] and head["reader"] == "brightness"
    assert set(head["u"]) == {z for z, _ in DISEASES["opacity"].zones}
    q = set_quality(m)
    assert q["n"] == 6 and q["intended"] == 1.0 and q["edited"] == len(m) and 0 < q["edits_passed"] < 1
    # each sample's leakage: its change from its reference outside its own box over inside (16-bit rounding)
    chosen = m[m["in_set"]].reset_index(drop=True)
    refs = synthesize(model[0], reference_latents(model[0], chosen["reference"].tolist()))
    for j, row in chosen.iterrows():
        inside = Box(**json.loads(row["box"])).mask().bool()
        assert row["leakage"] == pytest.approx(box_leakage(images[j, 0] - refs[j, 0].clamp(-1, 1), inside), rel=0.02,
                                                abs=1e-3)
    assert q["leakage"] == pytest.approx(chosen["leakage"].median())
    # finished: a second run changes nothing
    again = make_varied(model, half_reader, tmp_path / "set")
    pd.testing.assert_frame_equal(again, m)


def test_a_killed_verified_set_resumes_to_the_same_set(model, half_reader, tmp_path, monkeypatch):
    whole = make_varied(model, half_reader, tmp_path / "whole")
    killed_on_the_second_batch(monkeypatch, lambda: make_varied(model, half_reader, tmp_path / "parts"))
    assert 0 < len(read_manifest(tmp_path / "parts")) < len(whole)
    pd.testing.assert_frame_equal(make_varied(model, half_reader, tmp_path / "parts"), whole)


def test_a_verified_set_says_when_its_references_run_out(model, tmp_path):
    never = Brightness(10.0)
    with pytest.raises(ValueError, match="0 of 12 samples from 6 references pass the label check .* expected 6"):
        make_varied(model, never, tmp_path / "set", seeds=range(10, 16))
    with pytest.raises(ValueError, match="verify=True needs a reader"):
        make_varied(model, None, tmp_path / "other")
    with pytest.raises(ValueError, match="box='heart' with vary_box=True"):
        make_varied(model, never, tmp_path / "other", box="heart")


def test_reference_boxes_follow_the_zone_weights_and_stay_in_the_image():
    from collections import Counter
    drawn = [reference_box("opacity", r, 64) for r in range(4000)]
    counts = Counter(z for z, _ in drawn)
    for zone, weight in DISEASES["opacity"].zones:
        assert abs(counts[zone] / 4000 - weight) < 0.025
    assert reference_box("opacity", 7, 64) == reference_box("opacity", 7, 64)  # the same box on a resume
    assert reference_box("opacity", 7, 64) != reference_box("opacity", 7, 64, salt=1)
    for zone, b in drawn:
        base = preset(zone, 64)
        assert 0 <= b.x0 < b.x1 <= 64 and 0 <= b.y0 < b.y1 <= 64 and min(b.width, b.height) >= MIN_SIDE
        assert 0.69 * base.width - 1 <= b.width <= 1.15 * base.width + 1
        assert abs((b.x0 + b.x1) - (base.x0 + base.x1)) / 2 <= 0.15 * base.width + 1
    assert {z for z, _ in (reference_box("cardiomegaly", r, 64) for r in range(50))} == {"heart"}


def test_diversity_known_answers():
    from cxr_workbench.method.metrics import feature_spread

    class Features:
        def predict(self, x):
            return {"features": x.flatten(1).numpy()}

    assert feature_spread(np.array([[0.0, 0.0], [3.0, 4.0]])) == (5.0, 5.0)
    spread, nearest = feature_spread(np.array([[0.0], [1.0], [3.0]]))
    assert spread == pytest.approx(2.0) and nearest == pytest.approx((1 + 1 + 2) / 3)
    real = torch.tensor([[0.0], [1.0], [3.0]])[:, :, None, None]
    copies = torch.tensor([[0.0], [0.0], [3.0], [3.0]])[:, :, None, None]  # as spread, but each has a twin
    d = augment.set_diversity(copies, real, Features())
    assert d["spread"] == pytest.approx(2.0 / 2.0) and d["nearest"] == 0.0 and d["real_nearest"] == pytest.approx(4 / 3)
    assert augment.set_diversity(real, real, Features())["nearest"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"features of shape \(1, 1\)"):
        feature_spread(np.zeros((1, 1)))


def test_a_request_makes_the_set_make_augmentation_makes_from_the_same_parts(tmp_path):
    """run_augment resolves a request once (the shipped generator and oracle, the normal references
    from seed_start) and writes, byte for byte, the set make_augmentation writes from those parts."""
    from cxr_workbench.assets import load_default_generator, load_reader, pca_for
    from cxr_workbench.method.optimize import named_config
    from cxr_workbench.studies.augment import AugmentRequest, normal_seeds, run_augment
    fast = dict(n=5, max_steps=2, min_steps=0)
    req = AugmentRequest(disease="opacity", samples=3, out=tmp_path / "req", keep_last=2, overrides=fast, batch=2,
                         seed_start=500)
    by_request = run_augment(req, progress=False)
    G, reader = load_default_generator(), load_reader("oracle")
    direct = make_augmentation(G, normal_seeds(G, reader, req.references_needed(), start=500), "opacity", 3,
                               named_config("augment", **fast), tmp_path / "direct", keep_last=2, pca=pca_for(G),
                               reader=reader, batch=2, progress=False)
    pd.testing.assert_frame_equal(by_request, direct)
    for name in ["set.json"] + list(direct["file"]):
        assert (tmp_path / "req" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()
    assert by_request["reference"].min() >= 500


@pytest.mark.parametrize("change, message", [
    (dict(compile=True, workers=2), "compile=True with Dask workers"),
    (dict(device="cuda:0", scheduler="tcp://127.0.0.1:9"), "--device cuda:0 with --workers/--scheduler"),
    (dict(keep_last=13), "keep_last=13 is larger than the trajectory's n=12"),
    (dict(vary_box=True, box="heart"), "box='heart' with vary_box=True"),
    (dict(disease="gout"), "disease='gout'"),
])
def test_a_request_is_refused_before_a_model_or_cluster_starts(tmp_path, change, message):
    from cxr_workbench.studies.augment import AugmentRequest, run_augment
    req = AugmentRequest(**{**dict(disease="opacity", samples=4, out=tmp_path / "set",
                                   checkpoint=tmp_path / "no-such-generator.pt"), **change})
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        run_augment(req, progress=False)
    assert not (tmp_path / "set").exists()
