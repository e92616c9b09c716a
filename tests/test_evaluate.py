import math

import pandas as pd
import pytest

from cxr_workbench.method.evaluate import ablation_notes, direction_alignment, paired_differences, summary_table


def table():
    rows = []
    for seed, (lo, lodir) in enumerate([(1.0, 3.0), (2.0, 3.0), (4.0, 3.0)]):
        rows += [dict(sigma=0.3, disease="opacity", method="lo", seed=seed, PV=lo),
                 dict(sigma=0.3, disease="opacity", method="lo+dir", seed=seed, PV=lodir)]
    return pd.DataFrame(rows)


def test_summary_table_mean_and_std():
    t = summary_table(table(), "PV")
    assert t.loc[(0.3, "lo"), "opacity"] == f"{7 / 3:.3f} ± {pd.Series([1.0, 2.0, 4.0]).std():.3f}"
    assert t.loc[(0.3, "lo+dir"), "opacity"] == "3.000 ± 0.000"
    with pytest.raises(ValueError, match="metric='AUC'"):
        summary_table(table(), "AUC")


def test_paired_differences_known_answer():
    row = paired_differences(table(), "PV").iloc[0]
    # differences per seed: 2, 1, -1
    assert row["mean"] == pytest.approx(2 / 3) and row["std"] == pytest.approx(pd.Series([2, 1, -1]).std())
    assert row["positive"] == pytest.approx(2 / 3) and row["seeds"] == 3 and 0 < row["p"] <= 1
    one = paired_differences(table().query("seed == 0"), "PV").iloc[0]
    assert one["seeds"] == 1 and math.isnan(one["p"])
    with pytest.raises(ValueError, match="'linear' is not in the table"):
        paired_differences(table(), "PV", method="linear")


def ablation_frame():
    """Two references per cell; PV falls and leakage rises with sigma, LO + direction 1 above LO."""
    rows = []
    for method, lift in (("lo", 0.0), ("lo+dir", 1.0)):
        for sigma, pv, leak in ((0.3, 3.0, 0.1), (2.0, 1.0, 0.5)):
            for seed, jitter in ((0, -0.5), (1, 0.5)):
                rows.append(dict(disease="cardiomegaly", method=method, sigma=sigma, seed=seed, PV=pv + lift + jitter,
                                 severity_trend=0.5, leakage=leak))
    return pd.DataFrame(rows)


def test_ablation_notes_quote_the_numbers():
    assert ablation_notes(ablation_frame()) == [
        "cardiomegaly: LO + direction has PV 4.00 at sigma 0.3 (Baseline LO 3.00); from sigma 0.3 to 2 its PV goes "
        "4.00 -> 2.00 and its leakage 0.10 -> 0.50."]


def test_sigma_ablation_figure_has_a_panel_per_metric_and_a_line_per_method():
    from cxr_workbench.studies.figures import sigma_ablation_figure
    fig = sigma_ablation_figure(ablation_frame())
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["cardiomegaly: PV", "cardiomegaly: severity_trend",
                                              "cardiomegaly: leakage"]
    pv = axes[0].get_lines()
    assert len(pv) == 2 and list(pv[1].get_ydata()) == [4.0, 2.0] and list(pv[1].get_xdata()) == [0.3, 2.0]


def test_direction_alignment_known_answers():
    import torch

    from cxr_workbench.method.optimize import LOConfig, Trajectory
    w_ref = torch.zeros(2, 3, 4)
    u = torch.tensor([1.0, 0, 0, 0])
    along = w_ref[:, None] + torch.arange(1, 5.)[None, :, None, None] * u           # straight along u
    zigzag = along.clone()
    zigzag[1, :, :, 1] = torch.tensor([1.0, -1, 1, -1])[:, None]  # reference 1 steps across u as much as along
    traj = Trajectory("lo", w_ref, zigzag, torch.zeros(2, 1, 8, 8), torch.zeros(2, 4, 1, 8, 8), LOConfig())
    got = direction_alignment(traj, u)
    expected_zigzag = (1 / math.sqrt(2) + 3 / math.sqrt(5)) / 4  # first step (1, 1), then (1, +-2)
    assert got[0].item() == pytest.approx(1.0) and got[1].item() == pytest.approx(expected_zigzag)
    assert direction_alignment(traj, -u)[0].item() == pytest.approx(-1.0)
    # on the layers named only; a per-layer u is read per layer
    per_layer = torch.zeros(3, 4)
    per_layer[0, 0] = 1.0
    assert direction_alignment(traj, per_layer, layers=[0])[0].item() == pytest.approx(1.0)
