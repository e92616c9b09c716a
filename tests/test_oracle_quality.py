import numpy as np
import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.model.oracle import OracleConfig, SeverityOracle, corrupt, load_oracle, save_oracle, train_oracle
from cxr_workbench.studies.quality import fd_by_kind, fd_by_kind_text, model_card_markdown, quality_figures


def test_oracle_shapes_and_roundtrip(tmp_path):
    torch.manual_seed(0)
    oracle = SeverityOracle(resolution=32, width=8).eval()
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    out = oracle(x)
    assert out["ctr"].shape == (5,) and out["kind_logits"].shape == (5, 3) and out["features"].shape == (5, 32)
    save_oracle(tmp_path / "o.pt", oracle)
    again = load_oracle(tmp_path / "o.pt")
    pred_a, pred_b = oracle.predict(x), again.predict(x)
    np.testing.assert_allclose(pred_a["ctr"], pred_b["ctr"], atol=1e-6)
    with pytest.raises(ValueError, match="expected \\[B, 1, 32, 32\\]"):
        oracle(torch.zeros(2, 1, 16, 16))


def test_corruptions_change_every_image():
    x = torch.linspace(-1, 1, 32)[None, None, :, None].expand(6, 1, 32, 32).clone()
    y = corrupt(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert ((y - x).abs().flatten(1).amax(1) > 0.1).all()


def test_small_oracle_learns_ctr():
    torch.manual_seed(0)
    oracle, report, _ = train_oracle(OracleConfig(n_train=1500, n_val=300, resolution=32, epochs=3, batch=64),
                                     progress=False)
    # predicting the mean CTR everywhere gives ~0.07 MAE on this mix; the oracle must beat it
    assert report.ctr_mae < 0.05, report
    assert report.kind_accuracy > 0.6, report


def test_quality_figures_and_card():
    G = tiny_generator(mapping_layers=1, channel_max=8)
    oracle = SeverityOracle(resolution=16, width=4).eval()
    q = quality_figures(G, oracle, n=64)
    for key in ("fd_generated_vs_films", "fd_init_vs_films", "fd_films_vs_films"):
        assert np.isfinite(q[key]) and q[key] >= -1e-6
    # two draws of phantoms are closer to each other than an untrained generator is to them
    assert q["fd_films_vs_films"] < q["fd_init_vs_films"]
    md = model_card_markdown(dict(training_data="x", kimg=1, wall_time_s=3600, machine="m", quality=q))
    assert "generator at initialisation" in md and "| shipped generator |" in md
    assert f"FD within each kind the oracle reads (its kind head sorts both sets): {fd_by_kind_text(q)}." in md


def test_fd_by_kind_finds_the_kind_a_generator_draws_wrong():
    rng = np.random.default_rng(0)
    def draw(counts, shift):  # features [N, 4] by kind; the opacity kind's first feature moved by `shift`
        kind = np.repeat(np.arange(3), counts)
        feats = rng.normal(size=(len(kind), 4))
        feats[kind == 2, 0] += shift
        return dict(features=feats, kind=kind)
    films, second = draw((4000, 4000, 4000), 0), draw((4000, 4000, 4000), 0)
    by_kind = fd_by_kind(films, draw((4000, 5, 4000), 3.0), second)
    assert by_kind["normal"]["generated"] < 0.02 and by_kind["normal"]["films"] < 0.02
    assert abs(by_kind["opacity"]["generated"] - 9.0) < 0.3  # the squared shift of the means
    # 5 cardiomegaly samples cannot carry a 4-feature covariance: no figure rather than a wrong one
    assert by_kind["cardiomegaly"]["generated"] is None and by_kind["cardiomegaly"]["n_generated"] == 5
    assert "cardiomegaly - (floor" in fd_by_kind_text(dict(fd_by_kind=by_kind))
