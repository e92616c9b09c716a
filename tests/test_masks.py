import pytest

from cxr_workbench.imaging.masks import PRESETS, Box, BoxChoice, choose_box, load_box, preset


def test_box_mask_and_fractions():
    b = Box(2, 3, 6, 9, resolution=16)
    m = b.mask()
    assert m.shape == (16, 16) and m.sum() == 4 * 6
    assert m[3, 2] == 1 and m[8, 5] == 1 and m[9, 5] == 0 and m[3, 6] == 0  # end exclusive
    assert Box.from_fractions(*b.fractions(), 16) == b
    big = b.at_resolution(64)
    assert (big.x0, big.y0, big.x1, big.y1) == (8, 12, 24, 36)


def test_box_json_roundtrip(tmp_path):
    b = preset("heart", 64)
    b.save(tmp_path / "box.json")
    assert Box.load(tmp_path / "box.json") == b
    with pytest.raises(ValueError, match="lacks"):
        Box.from_dict({"x0": 1})


@pytest.mark.parametrize("args,match", [
    ((0, 0, 70, 10, 64), "outside"),
    ((5, 5, 5, 10, 64), "empty"),
    ((-1, 0, 10, 10, 64), "outside"),
    ((0, 0, 3, 10, 64), "3x10 pixels"),
    ((0, 0, 64, 64, 64), "whole image"),
])
def test_bad_boxes(args, match):
    with pytest.raises(ValueError, match=match):
        Box(*args)


def test_bad_types_and_presets():
    with pytest.raises(TypeError, match="x0=1.5"):
        Box(1.5, 0, 10, 10, 64)
    with pytest.raises(ValueError, match="fx1=1.2"):
        Box.from_fractions(0, 0, 1.2, 0.5, 64)
    with pytest.raises(ValueError, match="preset 'liver' unknown"):
        preset("liver", 64)
    for name in PRESETS:
        assert preset(name, 64).mask().sum() > 16


def test_a_box_is_chosen_once_with_the_disease_it_shows(tmp_path):
    heart = choose_box("heart")
    assert heart == BoxChoice("heart", "cardiomegaly") and heart.at(64) == preset("heart", 64)
    assert choose_box(None, "opacity").disease == "opacity" and choose_box(None, "opacity").box is None
    assert choose_box(heart) is heart and choose_box(heart, "opacity").disease == "opacity"
    Box(2, 2, 10, 10, 16).save(tmp_path / "box.json")
    custom = choose_box(tmp_path / "box.json", "opacity")
    assert custom.box == Box(2, 2, 10, 10, 16) and custom.at(64) == Box(8, 8, 40, 40, 64)
    assert load_box(tmp_path / "box.json", 16) == custom.box and load_box(heart, 32) == preset("heart", 32)
    with pytest.raises(ValueError, match="box.json is not a preset, so its disease is unknown"):
        choose_box(tmp_path / "box.json")
    with pytest.raises(ValueError, match="box='kidney'; expected a preset"):
        choose_box("kidney", "opacity")
    with pytest.raises(ValueError, match="disease='gout'"):
        choose_box("heart", "gout")
    with pytest.raises(ValueError, match="box=None and disease=None"):
        choose_box(None)
