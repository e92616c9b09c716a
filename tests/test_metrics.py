import numpy as np
import pytest
import torch

from cxr_workbench.imaging.masks import Box
from cxr_workbench.method.metrics import frechet_distance, pv_metric, trend

BOX = Box(4, 4, 12, 12, resolution=16)
N = 12


def sequence(values_in, values_out):
    m = BOX.mask()
    return torch.stack([a * m + b * (1 - m) for a, b in zip(values_in, values_out)])


def test_pv_monotone_ramp():
    # x_i = 0.1 i inside, still background: dc+ = a, dr+ = (i-1) a, so S = a, M = a + a n/2
    x = sequence([0.1 * i for i in range(N)], [0.0] * N)
    r = pv_metric(x, BOX)
    assert r.S == pytest.approx(0.1)
    assert r.M == pytest.approx(0.1 + 0.1 * N / 2)
    assert r.PV == pytest.approx(1 + N / 2)
    assert r.monotonicity == pytest.approx(1.0) and r.leakage == 0.0
    flipped = pv_metric(x, BOX, sign=-1)  # the box was meant to darken
    assert flipped.PV == pytest.approx(-(1 + N / 2)) and flipped.monotonicity == pytest.approx(-1.0)


def test_pv_zigzag():
    x = sequence([0.1 * (i % 2) for i in range(N)], [0.0] * N)
    r = pv_metric(x[:, None], BOX)  # [n, 1, H, W] accepted too
    # i = 2..12: even i: dc = +a, dr = +a -> 2a; odd i: dc = -a, dr = 0 -> -a
    assert r.S == pytest.approx(0.1)
    assert r.M == pytest.approx((6 * 0.2 - 5 * 0.1) / 11)
    assert r.PV == pytest.approx(7 / 11)


def test_pv_change_only_outside():
    x = sequence([0.0] * N, [0.1 * i for i in range(N)])
    r = pv_metric(x, BOX)
    assert r.PV == pytest.approx(-(1 + N / 2))
    assert r.leakage == float("inf")


def test_pv_two_readings_of_the_average():
    # 16 x 16 maps (256 px). x1: +1 on two box pixels; x2: one of them +1 more, and 0.5 outside.
    x = torch.zeros(3, 16, 16)
    x[1, 5, 5] = x[1, 5, 6] = 1
    x[2, 5, 5], x[2, 5, 6], x[2, 0, 0] = 2, 1, 0.5
    # Over the pixels of each sign: dc = (1 | 0), (1 | -0.5); dr = (1 | 0), (1.5 | -0.5)
    # S = mean(1, 1.5) = 1.25, M = mean(2, 1.5) = 1.75
    by_sign = pv_metric(x, BOX)
    assert (by_sign.S, by_sign.M, by_sign.PV) == pytest.approx((1.25, 1.75, 1.4))
    # Over all 256 pixels: dc = (2 | 0), (1 | -0.5); dr = (2 | 0), (3 | -0.5), all / 256
    by_all = pv_metric(x, BOX, average="all")
    assert (by_all.S, by_all.M, by_all.PV) == pytest.approx((1.75 / 256, 3.5 / 256, 2.0))
    with pytest.raises(ValueError, match="average='pixels'"):
        pv_metric(x, BOX, average="pixels")


def test_pv_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        pv_metric(torch.zeros(2, 16, 16), BOX)
    with pytest.raises(ValueError, match="box is for 16 px"):
        pv_metric(torch.zeros(4, 32, 32), BOX)
    with pytest.raises(ValueError, match="sign=0"):
        pv_metric(torch.zeros(4, 16, 16), BOX, sign=0)


def test_trend_and_frechet():
    assert trend([1, 2, 3, 5]) == pytest.approx(1.0)
    assert trend([3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # shifted mean by (1, 0, 0) and same covariance: distance = 1
    assert frechet_distance(a, a + np.array([1.0, 0, 0])) == pytest.approx(1.0, abs=1e-6)
    # N(0, I) vs N(0, 4I) in 3-d: trace(I + 4I - 2*2I) = 3
    b = rng.normal(size=(20000, 3)) * 2
    assert frechet_distance(rng.normal(size=(20000, 3)), b) == pytest.approx(3.0, abs=0.15)


def test_knn_precision_recall_known_answers():
    from cxr_workbench.method.metrics import knn_precision_recall, ks_statistic
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 2))
    assert knn_precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    collapsed = np.zeros((400, 2)) + rng.normal(scale=1e-3, size=(400, 2))  # a mode collapse at the centre
    precision, recall = knn_precision_recall(real, collapsed, k=3)
    assert precision == 1.0 and recall < 0.1  # all fakes are realistic, but they cover little of the real set
    far = real + 100.0
    assert knn_precision_recall(real, far, k=3) == (0.0, 0.0)
    assert ks_statistic([0, 1, 2, 3], [0, 1, 2, 3]) == 0.0 and ks_statistic([0, 0], [1, 1]) == 1.0
    with pytest.raises(ValueError, match="more than k=3 rows"):
        knn_precision_recall(real[:3], real, k=3)
