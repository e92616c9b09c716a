import math

import pandas as pd
import pytest

from cxr_workbench.method.evaluate import ablation_notes, paired_differences, summary_table


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
