"""The Fréchet Radiomics Distance (frd-score, installed by `make frd`): it orders sets as a distance
must, cleans up after itself, refuses bad input, and reaches the model card."""
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch

from cxr_workbench.imaging.datasets import TruthDataset
from cxr_workbench.method import radiomics
from cxr_workbench.method.radiomics import frechet_radiomics_distance


def films(source, seed, n=16):
    return TruthDataset(n, 64, seed=seed, source=source).images_tensor()


def test_two_draws_of_drrs_are_closer_than_drrs_and_phantoms():
    before = set(Path(tempfile.gettempdir()).glob("cxr-frd-*"))
    drrs = films("drr", 1)
    same_source = frechet_radiomics_distance(films("drr", 2), drrs)
    other_source = frechet_radiomics_distance(films("phantom", 3), drrs)
    assert same_source + 1 < other_source
    assert set(Path(tempfile.gettempdir()).glob("cxr-frd-*")) == before  # its PNG folders removed
    assert frechet_radiomics_distance(drrs[:6], drrs[:6]) == float("-inf")  # log of a zero distance


@pytest.mark.parametrize("bad", [torch.zeros(1, 1, 8, 8), torch.zeros(4, 3, 8, 8),
                                 torch.full((4, 1, 8, 8), float("nan"))])
def test_bad_films_are_refused_by_shape(bad):
    with pytest.raises(ValueError, match=r"films a of shape .*expected \[N >= 2, 1, H, W\]"):
        frechet_radiomics_distance(bad, torch.zeros(4, 1, 8, 8))


def test_without_frd_score_the_install_is_named():
    with mock.patch.object(radiomics, "frd_available", return_value=False), \
            pytest.raises(ImportError, match="make frd"):
        frechet_radiomics_distance(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8))
