import math

import pandas as pd
import pytest

from cxr_workbench.evaluate import paired_differences, summary_table


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
