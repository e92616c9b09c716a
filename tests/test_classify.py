import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cxr_workbench.studies import classify
from cxr_workbench.studies.classify import (
    CPU_SCALE,
    ProtocolConfig,
    auroc,
    auroc_from_file,
    make_network,
    plan_runs,
    protocol_table,
    random_augmentation,
    real_data,
    run_name,
    run_protocol,
)

TINY = ProtocolConfig(n_normal=24, n_disease=(4, 12), n_aug=12, n_val=12, n_test=16, seeds=(0, 1), epochs=2, batch=16)


@pytest.fixture(scope="module")
def data():
    return real_data(TINY)


def fake_sets(data, sigmas=(0.3,)):
    # stand-ins for edited images: real disease images, darkened, as many as the protocol needs
    return {(d, s): data["train"][d][:TINY.n_aug] * 0.9 for d in ("cardiomegaly", "opacity") for s in sigmas}


def test_auroc_known_answers():
    assert auroc([0, 0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]]) == 1.0
    assert auroc([0, 0, 1, 1], [[0.1, 0.9], [0.4, 0.6], [0.6, 0.4], [0.8, 0.2]]) == 0.0
    # one swapped pair of four: 3/4
    assert auroc([0, 0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]) == 0.75
    # macro one-vs-rest: class 0 perfect (1.0), 1 and 2 each 0.75 -> 2.5 / 3
    y = [0, 0, 1, 1, 2, 2]
    p = np.array([[.8, .1, .1], [.7, .2, .1], [.1, .5, .4], [.1, .4, .5], [.1, .45, .45], [.1, .2, .7]])
    assert auroc(y, p) == pytest.approx((1.0 + 0.875 + 0.875) / 3)
    with pytest.raises(ValueError, match="expected \\[N, K >= 2\\]"):
        auroc([0, 1], [0.2, 0.8])


def test_networks_give_logits_and_gradients():
    for name, n in (("small", 3), ("densenet121", 2)):
        net = make_network(name, n)
        x = torch.randn(2, 1, 64, 64, requires_grad=True)
        out = net(x)
        assert out.shape == (2, n)
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="network='vgg'"):
        make_network("vgg", 3)


def test_random_augmentation_is_seeded_and_changes_images(data):
    src = data["train"]["cardiomegaly"][:4]
    a, b = random_augmentation(src, 10, seed=3), random_augmentation(src, 10, seed=3)
    assert a.shape == (10, 1, 64, 64) and torch.equal(a, b)
    assert not torch.equal(a, random_augmentation(src, 10, seed=4))
    changed = [not any(torch.allclose(x, s) for s in src) for x in a]
    assert sum(changed) >= 7  # each transform at probability 1/2: most draws change the image


def test_sets_of_the_drr_generator_bring_drrs_as_the_real_films(tmp_path):
    from cxr_workbench.imaging.datasets import TruthDataset
    from cxr_workbench.studies.classify import load_sets
    for name, films in (("a", "drr"), ("b", None)):
        (tmp_path / name).mkdir()
        head = dict(disease="opacity" if name == "a" else "cardiomegaly", config=dict(sigma=0.3))
        (tmp_path / name / "set.json").write_text(json.dumps(head | ({"films": films} if films else {})))
    with pytest.raises(ValueError, match=r"sets of generators of different films \(.*a: drr, .*b: phantom\)"):
        load_sets([tmp_path / "a", tmp_path / "b"], [0.3])
    drr = real_data(replace(TINY, films="drr"))
    # the first draw: 52 normal, 40 and 40 diseased films needed, 30 % more and 64 drawn, weighted by need
    first = TruthDataset(int(132 * 1.3) + 64, 64, seed=TINY.data_seed, weights=(53, 41, 41), source="drr")
    normal = first.images_tensor()[torch.from_numpy(first.kind == "normal")]
    torch.testing.assert_close(drr["val"]["normal"], normal[:12])


def test_real_data_are_labelled_fixed_and_disjoint(data):
    again = real_data(TINY)
    for part in ("val", "test"):
        for k in ("normal", "cardiomegaly", "opacity"):
            assert torch.equal(data[part][k], again[part][k])
    assert {k: len(v) for k, v in data["train"].items()} == dict(normal=24, cardiomegaly=12, opacity=12)
    train = torch.cat(list(data["train"].values())).flatten(1)
    test = torch.cat(list(data["test"].values())).flatten(1)
    assert torch.cdist(train, test).min() > 0


def test_training_sets_follow_the_rows(data):
    aug = fake_sets(data)
    sizes = {}
    for row in classify.ROWS:
        x, y = classify._training_set(data, "N vs C vs O", 4, row, 0.3, 0, cfg=TINY, aug=aug)
        sizes[row] = np.bincount(y.numpy(), minlength=3).tolist()
    assert sizes == {"real": [24, 4, 4], "rand": [24, 10, 10], "ours": [24, 10, 10], "ours+rand": [24, 10, 10]}
    x, y = classify._training_set(data, "N vs O", 12, "ours", 0.3, 0, cfg=TINY, aug=aug)
    assert np.bincount(y.numpy()).tolist() == [24, 24]
    small = {k: v[:3] for k, v in aug.items()}
    with pytest.raises(ValueError, match="the opacity set for sigma=0.3 has 3 samples; this protocol needs 12"):
        classify._training_set(data, "N vs O", 12, "ours", 0.3, 0, cfg=TINY, aug=small)


def test_plan_has_every_cell_of_tables_3_and_4():
    cfg = replace(CPU_SCALE, sigmas=(0.3, 1.0, 2.0))
    runs = plan_runs(cfg)
    # per column and disease size: real, rand, ours and ours+rand at 3 sigmas each: 8 cells x 4 seeds
    assert len(runs) == 3 * 2 * 8 * 4 and len({run_name(r) for r in runs}) == len(runs)
    assert CPU_SCALE.n_normal / CPU_SCALE.n_disease[0] == 10 and CPU_SCALE.n_aug == CPU_SCALE.n_disease[1]


def test_protocol_saves_predictions_and_resumes(data, tmp_path):
    res = run_protocol(TINY, fake_sets(data), tmp_path / "p", data=data, progress=False)
    assert len(res) == len(plan_runs(TINY)) == 3 * 2 * 4 * 2
    files = sorted((tmp_path / "p" / "predictions").glob("*.csv"))
    assert len(files) == len(res)
    by_name = {run_name(r): r for r in res.to_dict("records")}
    for f in files[:6]:
        assert auroc_from_file(f) == pytest.approx(by_name[f.stem]["test_auroc"], abs=1e-12)
        pred = pd.read_csv(f)
        assert len(pred) == TINY.n_test * (3 if f.name.startswith("NCO") else 2)
    # a second call finds everything done and trains nothing
    calls = []
    real_train = classify.train_run
    classify.train_run = lambda **kw: calls.append(kw) or real_train(**kw)
    try:
        again = run_protocol(TINY, fake_sets(data), tmp_path / "p", data=data, progress=False)
    finally:
        classify.train_run = real_train
    assert calls == [] and len(again) == len(res)
    # an edited and a deleted predictions file: those two runs, and only they, are run again
    edited = pd.read_csv(files[0])
    edited[edited.columns[1:]] = edited[edited.columns[1:]].to_numpy()[::-1]
    edited.to_csv(files[0], index=False)
    files[1].unlink()
    classify.train_run = lambda **kw: calls.append(kw) or real_train(**kw)
    try:
        repaired = run_protocol(TINY, fake_sets(data), tmp_path / "p", data=data, progress=False)
    finally:
        classify.train_run = real_train
    assert sorted(run_name(c) for c in calls) == sorted([files[0].stem, files[1].stem]) and len(repaired) == len(res)
    assert auroc_from_file(files[0]) == pytest.approx(by_name[files[0].stem]["test_auroc"], abs=1e-12)
    with pytest.raises(ValueError, match="runs of another protocol"):
        run_protocol(replace(TINY, epochs=3), fake_sets(data), tmp_path / "p", data=data, progress=False)
    # another seed only adds its runs
    grown = run_protocol(replace(TINY, seeds=(0, 1, 2)), fake_sets(data), tmp_path / "p", data=data, progress=False)
    assert len(grown) == len(res) * 3 // 2 and set(grown["seed"]) == {0, 1, 2}
    table = protocol_table(res)
    assert list(table["row"][:4]) == ["real", "rand", "ours", "ours+rand"]
    assert table["N vs C vs O"][0].count("±") == 1 and np.isnan(table["p N vs C"][1])


def test_protocol_config_refuses_nonsense():
    for kw, msg in ((dict(n_normal=0), "n_normal=0"), (dict(network="vgg"), "network='vgg'"),
                    (dict(n_disease=()), "n_disease=()"), (dict(lr=float("nan")), "lr=nan")):
        with pytest.raises(ValueError, match=msg):
            replace(TINY, **kw).validate()


def test_sigma_is_chosen_on_validation_never_on_test():
    from cxr_workbench.studies.classify import chosen_on_validation
    rows = []
    for seed in (0, 1):
        rows.append(dict(column="N vs O", n_disease=20, row="rand", sigma=None, seed=seed, val_auroc=0.7,
                         test_auroc=0.70 + 0.01 * seed))
        # sigma 1.0 wins on validation, sigma 0.3 on test: the choice must be 1.0
        for sigma, val, test in ((0.3, 0.75, 0.95), (1.0, 0.80, 0.72 + 0.01 * seed)):
            rows.append(dict(column="N vs O", n_disease=20, row="ours", sigma=sigma, seed=seed, val_auroc=val,
                             test_auroc=test))
    res = pd.DataFrame(rows)
    picked = chosen_on_validation(res)
    assert set(picked["sigma"]) == {1.0} and set(picked["row"]) == {"ours (val)"} and len(picked) == 2
    table = protocol_table(res).set_index("row")
    assert table.loc["ours (val)", "N vs O"] == "72.50 ± 0.71* [sigma 1]"  # paired: +2.0 on both seeds
    assert table.loc["ours (val)", "p N vs O"] == 0.0
    assert list(table.index) == ["rand", "ours", "ours", "ours (val)"]
