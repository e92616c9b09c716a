"""Phantoms: exact ground truth, valid parameters, reproducible rendering."""
import dataclasses
import math

import numpy as np
import pytest

from cxr_workbench.imaging import phantom, sources
from cxr_workbench.imaging.datasets import TruthDataset
from cxr_workbench.imaging.diseases import DISEASES


def test_dataset_reproducible_and_labels_follow_the_truth():
    a, b = TruthDataset(48, 32, seed=3), TruthDataset(48, 32, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    item = a[0]
    assert item["img"].shape == (1, 32, 32) and -1 <= item["img"].min() and item["img"].max() <= 1
    assert set(a.kind) == set(phantom.KINDS)
    for i in range(48):
        assert (a.burden[i] > DISEASES['opacity'].threshold) == (a.kind[i] == "opacity")
        if a.kind[i] != "opacity":
            assert (a.ctr[i] > DISEASES['cardiomegaly'].threshold) == (a.kind[i] == "cardiomegaly")


def test_ctr_is_the_transverse_cardiac_over_the_internal_thoracic_diameter():
    # The unit heart's transverse diameter, measured on its outline, is the constant the CTR uses.
    xs = []
    for cx, _cy, a, b, t in (phantom._RA, phantom._LV):
        s = np.linspace(0, 2 * math.pi, 20001)
        xs.append(cx + a * np.cos(s) * math.cos(t) - b * np.sin(s) * math.sin(t))
    width = max(x.max() for x in xs) - min(x.min() for x in xs)
    assert width == pytest.approx(phantom._HEART_UNIT_WIDTH, rel=1e-6)
    p = phantom.PhantomParams(ctr=0.55, thorax_hw=0.65)
    assert p.heart_scale * width / (2 * p.thorax_hw) == pytest.approx(0.55)
    # and on the image: a bigger CTR darkens less of the lower lung next to the heart
    small, t_small = phantom.render(p, 64)
    big, t_big = phantom.render(dataclasses.replace(p, ctr=0.66), 64)
    assert t_small["ctr"] == pytest.approx(0.55) and t_big["cardiomegaly"]
    assert big[30:44, 12:52].mean() > small[30:44, 12:52].mean()


def test_burden_is_the_opacified_share_of_the_lung():
    clear = phantom.PhantomParams()
    def blob(r):
        return dataclasses.replace(clear, opacities=(phantom.Opacity(side=-1, u=0.5, v=0.7, radius=r,
                                                                               density=0.8),))
    _, t0 = phantom.render(clear, 64)
    _, t1 = phantom.render(blob(0.08), 64)
    _, t2 = phantom.render(blob(0.16), 64)
    assert t0["opacity_burden"] == 0 and 0 < t1["opacity_burden"] < t2["opacity_burden"] < 0.5
    # a disc of radius r covers about pi r^2 of the (normalised) image; the lung about lung_fraction * 4
    expected = math.pi * 0.16 ** 2 / (t2["lung_fraction"] * 4)
    assert t2["opacity_burden"] == pytest.approx(expected, rel=0.25)


@pytest.mark.parametrize("field,value", [("ctr", 0.95), ("rotation", 1.0), ("noise", -0.1), ("scale", float("nan"))])
def test_out_of_range_parameters_name_themselves(field, value):
    with pytest.raises(ValueError, match=f"phantom parameter {field}=.*expected a number in"):
        phantom.render(dataclasses.replace(phantom.PhantomParams(), **{field: value}), 32)
    with pytest.raises(ValueError, match="kind='fracture'"):
        phantom.sample_params(np.random.default_rng(0), "fracture")
    with pytest.raises(ValueError, match="size=8"):
        phantom.render(phantom.PhantomParams(), 8)


def test_kinds_grid_shapes():
    grid, truths = sources.kinds_grid("phantom", per_kind=2, size=32)
    assert grid.shape == (3 * 32, 2 * 32) and 0 <= grid.min() and grid.max() <= 1
    assert all(t["cardiomegaly"] for t in truths[1]) and not any(t["cardiomegaly"] for t in truths[0])


def test_clipped_edges_and_ridges_equal_the_plain_formulas():
    # The argument clipping that keeps exp and sigmoid off their slow denormal path changes nothing
    # a float32 image can hold.
    import torch
    t = torch.linspace(-50, 50, 100001, dtype=torch.float64)
    np.testing.assert_allclose(phantom._soft(t.clone(), 0.02), torch.sigmoid(-t / 0.02), rtol=0, atol=1e-13)
    q = t.abs() * 10
    np.testing.assert_allclose(phantom._decay(q), torch.exp(-q), rtol=0, atol=1e-13)
