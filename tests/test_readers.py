"""Readers as plug-ins: the oracle at any image size, classifiers (ours, TorchScript, MONAI by name)
with their readings, verdicts and refusals."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_generator

from cxr_workbench.assets import (
    DRR_DATA_DIR,
    SHIPPED,
    generator_or_default,
    load_default_oracle,
    load_reader,
    oracle_for,
    pca_for,
)
from cxr_workbench.imaging.datasets import TruthDataset
from cxr_workbench.imaging.masks import load_box
from cxr_workbench.method.evaluate import measure
from cxr_workbench.method.optimize import LOConfig, run_method
from cxr_workbench.model.latents import reference_latents
from cxr_workbench.model.readers import ClassifierReader, OracleReader, make_network, save_classifier
from cxr_workbench.studies.classify import ProtocolConfig, real_data, run_protocol


@pytest.fixture(scope="module")
def phantoms():
    return TruthDataset(8, 64, seed=3).images_tensor()


def test_the_oracle_reads_any_size_and_colour_through_its_64_px_view(phantoms):
    oracle = load_default_oracle()
    reader = OracleReader(oracle)
    want = oracle.predict(phantoms)
    big = F.interpolate(phantoms, scale_factor=4, mode="nearest")  # 256 px; area averaging gives phantoms back
    for images in (big, big.repeat(1, 3, 1, 1), phantoms):
        got = reader.predict(images)
        np.testing.assert_allclose(got["ctr"], want["ctr"], atol=1e-5)
        np.testing.assert_allclose(got["opacity_burden"], want["opacity_burden"], atol=1e-5)
    assert reader.severity("opacity") == "opacity_burden"
    assert (reader.reads_as(want, "cardiomegaly") == (want["ctr"] > 0.5)).all()
    assert (reader.plausible(want) == want["plausible"]).all()


def test_a_shipped_generator_by_name_is_read_by_the_oracle_of_its_own_films():
    drr, phantom = generator_or_default("drr"), generator_or_default("phantom")
    imported = tiny_generator(img_resolution=64)
    assert (drr.source, phantom.source, imported.source) == ("drr", "phantom", None)
    for G, films in ((drr, "drr"), (phantom, "phantom"), (imported, "drr")):  # imported: the default's
        assert load_reader("oracle", G).oracle.source == films
        assert oracle_for(G).source == films
    assert pca_for(drr).generator_key == torch.load(DRR_DATA_DIR / "pca.pt", weights_only=True)["generator_key"]
    # a DRR generator read by the phantom oracle would score every edit wrongly without a word
    with pytest.raises(ValueError, match="oracle of phantom films, the generator learned drr films"):
        load_reader(str(SHIPPED["phantom"] / "oracle.pt"), drr)
    assert load_reader(str(DRR_DATA_DIR / "oracle.pt"), drr).oracle.source == "drr"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small protocol run by classify, its classifiers saved."""
    cfg = ProtocolConfig(n_normal=24, n_disease=(12,), n_aug=12, n_val=12, n_test=16, seeds=(0,), epochs=2, batch=16)
    data = real_data(cfg)
    aug = {(d, 0.3): data["train"][d][:12] * 0.9 for d in ("cardiomegaly", "opacity")}
    out = tmp_path_factory.mktemp("protocol")
    results = run_protocol(cfg, aug, out, data=data, progress=False, save_models=True)
    return out, results, data


def test_a_classifier_saved_by_classify_reads_as_it_predicted(trained):
    out, results, data = trained
    assert len(list((out / "models").glob("*.pt"))) == len(results) == 3 * 4
    reader = load_reader(str(out / "models" / "NCO_d12_real_seed0.pt"))
    assert isinstance(reader, ClassifierReader) and reader.classes == ("normal", "cardiomegaly", "opacity")
    test = torch.cat([data["test"][k] for k in reader.classes])
    pred = reader.predict(test)
    saved = pd.read_csv(out / "predictions" / "NCO_d12_real_seed0.csv")
    for c in reader.classes:  # the same probabilities the protocol recorded for its test images
        np.testing.assert_allclose(pred[f"p_{c}"], saved[f"p_{c}"], atol=1e-5)
    assert reader.severity("opacity") == "p_opacity" and not reader.plausibility
    assert (reader.reads_as(pred, "opacity") == (pred["kind"] == 2)).all()
    assert (reader.reads_normal(pred) == (pred["kind"] == 0)).all()
    two = load_reader(str(out / "models" / "NC_d12_real_seed0.pt"))
    with pytest.raises(ValueError, match="does not read opacity \\(it reads \\['cardiomegaly'\\]\\)"):
        two.severity("opacity")


def test_measure_takes_a_reader(trained):
    out, _, _ = trained
    reader = load_reader(str(out / "models" / "NCO_d12_real_seed0.pt"))
    G = tiny_generator()
    traj = run_method(G, "linear", reference_latents(G, [0, 1]), load_box("heart", 16),
                      u=torch.ones(8), config=LOConfig(n=4, max_steps=2), progress=False)
    rows = measure(traj, load_box("heart", 16), "cardiomegaly", reader)
    probs = [reader.predict(traj.sequence(r))["p_cardiomegaly"] for r in range(2)]
    for row, p in zip(rows, probs):
        assert row["severity"] == "p_cardiomegaly" and np.isnan(row["plausible_fraction"])
        assert row["severity_change"] == pytest.approx(float(p[-1] - p[0]), abs=1e-6)


def test_torchscript_and_monai_readers(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classes = ["normal", "opacity"]
            self.resolution = 32
            self.fc = torch.nn.Linear(32 * 32, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    torch.jit.script(net).save(str(tmp_path / "ts.pt"))
    reader = load_reader(str(tmp_path / "ts.pt"))
    assert reader.classes == ("normal", "opacity") and reader.resolution == 32 and reader.name == "torchscript ts.pt"
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    want = net(F.interpolate(x, size=(32, 32), mode="area")).softmax(-1).detach().numpy()
    np.testing.assert_allclose(reader.predict(x)["p_opacity"], want[:, 1], atol=1e-6)
    with pytest.raises(ValueError, match="does not read cardiomegaly"):
        reader.severity("cardiomegaly")

    from monai.networks.nets import DenseNet121
    dn = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()
    torch.save(dn.state_dict(), tmp_path / "dn.pt")
    reader = load_reader(f"monai:DenseNet121:{tmp_path / 'dn.pt'}:normal,cardiomegaly")
    with torch.no_grad():
        want = dn(x).softmax(-1).numpy()
    np.testing.assert_allclose(reader.predict(x)["p_cardiomegaly"], want[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="dn.pt does not fit DenseNet121 with 3 classes"):
        load_reader(f"monai:DenseNet121:{tmp_path / 'dn.pt'}")
    with pytest.raises(ValueError, match="monai.networks.nets has no network 'Nope'"):
        load_reader(f"monai:Nope:{tmp_path / 'dn.pt'}")


def test_reader_files_are_checked(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="reader .*junk.pt could not be read"):
        load_reader(str(tmp_path / "junk.pt"))
    with pytest.raises(FileNotFoundError, match="reader .*none.pt: no such file"):
        load_reader(str(tmp_path / "none.pt"))
    net = make_network("small", 2)
    save_classifier(tmp_path / "c.pt", net, network="small", classes=["normal", "normal"], resolution=64)
    with pytest.raises(ValueError, match="expected at least two different names"):
        load_reader(str(tmp_path / "c.pt"))
    save_classifier(tmp_path / "d.pt", net, network="small", classes=["a", "b"], resolution=64)
    with pytest.raises(ValueError, match="name no disease"):
        load_reader(str(tmp_path / "d.pt"))


def test_a_reader_that_sees_no_normal_film_is_an_error_not_an_endless_search():
    from cxr_workbench.studies.augment import normal_seeds

    class Everything(torch.nn.Module):  # reads every film as opacity
        def forward(self, x):
            return torch.tensor([[0.0, 0.0, 9.0]]).repeat(len(x), 1)

    G = tiny_generator()
    with pytest.raises(ValueError, match="sick reads 0 of the 512 seeds from 7 as normal; expected 2"):
        normal_seeds(G, ClassifierReader(Everything(), name="sick"), 2, start=7, scan=512)
