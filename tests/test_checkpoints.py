import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.model.checkpoints import load_generator, model_card, save_generator
from cxr_workbench.model.importers import rosinality_key_map
from cxr_workbench.model.stylegan2 import Generator


def small_G(seed=0, **kw):
    G = tiny_generator(**kw).requires_grad_(True)
    torch.manual_seed(seed)
    with torch.no_grad():  # make every parameter matter in the comparisons
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.normal_()
    return G.eval()


def test_roundtrip_our_format(tmp_path):
    G = small_G()
    path = save_generator(tmp_path / "g.pt", G, model_card={"kimg": 12.5, "machine": "test"})
    H = load_generator(path)
    z = torch.randn(3, 8)
    torch.testing.assert_close(H(z, psi=0.7), G(z, psi=0.7))
    assert model_card(path) == {"kimg": 12.5, "machine": "test"}
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt"]  # no temporary left behind
    with pytest.raises(FileExistsError, match="exists"):
        save_generator(path, G, overwrite=False)


def test_truncated_and_unknown_files(tmp_path):
    path = save_generator(tmp_path / "g.pt", small_G())
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_generator(tmp_path / "cut.pt")
    (tmp_path / "junk.bin").write_bytes(b"hello, not a checkpoint")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        load_generator(tmp_path / "junk.bin")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        load_generator(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "missing.pt")


# ------------------------------------------------------------------ rosinality


def rosinality_state_dict(size, style_dim, n_mlp, channel_multiplier, img_channels=3, seed=0):
    """A state dict laid out exactly as rosinality's Generator (written from their model.py)."""
    g = torch.Generator().manual_seed(seed)
    def r(*s):
        return torch.randn(*s, generator=g)
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier}
    sd = {}
    for i in range(1, n_mlp + 1):
        sd[f"style.{i}.weight"], sd[f"style.{i}.bias"] = r(style_dim, style_dim), r(style_dim)
    sd["input.input"] = r(1, ch[4], 4, 4)

    def styled(name, cin, cout, up):
        sd[f"{name}.conv.weight"] = r(1, cout, cin, 3, 3)
        sd[f"{name}.conv.modulation.weight"], sd[f"{name}.conv.modulation.bias"] = r(cin, style_dim), r(cin)
        if up:
            sd[f"{name}.conv.blur.kernel"] = r(4, 4)
        sd[f"{name}.noise.weight"] = r(1)
        sd[f"{name}.activate.bias"] = r(cout)

    def torgb(name, cin, up):
        sd[f"{name}.conv.weight"] = r(1, img_channels, cin, 1, 1)
        sd[f"{name}.conv.modulation.weight"], sd[f"{name}.conv.modulation.bias"] = r(cin, style_dim), r(cin)
        sd[f"{name}.bias"] = r(1, img_channels, 1, 1)
        if up:
            sd[f"{name}.upsample.kernel"] = r(4, 4)

    styled("conv1", ch[4], ch[4], False)
    torgb("to_rgb1", ch[4], False)
    sd["noises.noise_0"] = r(1, 1, 4, 4)
    res, j = 8, 0
    while res <= size:
        styled(f"convs.{2 * j}", ch[res // 2], ch[res], True)
        styled(f"convs.{2 * j + 1}", ch[res], ch[res], False)
        torgb(f"to_rgbs.{j}", ch[res], True)
        sd[f"noises.noise_{2 * j + 1}"] = r(1, 1, res, res)
        sd[f"noises.noise_{2 * j + 2}"] = r(1, 1, res, res)
        res, j = res * 2, j + 1
    return sd


def test_rosinality_import_complete_and_shape_correct(tmp_path):
    sd = rosinality_state_dict(size=64, style_dim=16, n_mlp=3, channel_multiplier=1)
    latent_avg = torch.randn(16)
    torch.save({"g_ema": sd, "latent_avg": latent_avg, "args": {}}, tmp_path / "rosi.pt")
    G = load_generator(tmp_path / "rosi.pt")  # the widths come from the weights
    assert (G.img_resolution, G.img_channels, G.w_dim, G.z_dim, G.num_ws) == (64, 3, 16, 16, 10)
    ours = G.state_dict()
    names = rosinality_key_map(64, 3)
    used = {dst for dst in names.values() if dst}
    assert used | {"mapping.w_avg"} == set(ours)  # every parameter of ours comes from theirs
    assert set(names) == set(sd)                  # every key of theirs is accounted for
    torch.testing.assert_close(ours["synthesis.b8.conv0.weight"], sd["convs.0.conv.weight"][0])
    torch.testing.assert_close(ours["synthesis.b64.torgb.bias"], sd["to_rgbs.3.bias"].flatten())
    torch.testing.assert_close(ours["synthesis.b32.conv1.noise_const"], sd["noises.noise_6"][0, 0])
    torch.testing.assert_close(ours["mapping.fc2.weight"], sd["style.3.weight"])
    torch.testing.assert_close(ours["mapping.w_avg"], latent_avg)
    assert G.synthesis(G.mapping(torch.randn(1, 16))).shape == (1, 3, 64, 64)


def test_rosinality_errors_name_the_key(tmp_path):
    sd = rosinality_state_dict(size=8, style_dim=8, n_mlp=2, channel_multiplier=2)
    bad = dict(sd)
    del bad["convs.1.activate.bias"]
    torch.save({"g_ema": bad}, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="convs.1.activate.bias"):
        load_generator(tmp_path / "missing.pt")
    extra = {**sd, "convs.9.extra": torch.zeros(1)}
    torch.save({"g_ema": extra}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="convs.9.extra"):
        load_generator(tmp_path / "extra.pt")
    shaped = {**sd, "to_rgb1.conv.modulation.bias": torch.zeros(7)}
    torch.save({"g_ema": shaped}, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"synthesis.b4.torgb.affine.bias has shape \(7,\)"):
        load_generator(tmp_path / "shape.pt")
    swagan = {**sd, "iwt.ll": torch.ones(2, 2), "to_rgbs.0.iwt.ll": torch.ones(2, 2)}
    torch.save({"g_ema": swagan}, tmp_path / "swagan.pt")
    with pytest.raises(ValueError, match="swagan.pt: a SWAGAN"):
        load_generator(tmp_path / "swagan.pt")


@pytest.mark.parametrize("multiplier", [1, 2])
def test_rosinality_widths_come_from_the_weights(tmp_path, multiplier, capsys):
    sd = rosinality_state_dict(size=64, style_dim=8, n_mlp=1, channel_multiplier=multiplier)
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(8)}, tmp_path / "cm.pt")
    G = load_generator(tmp_path / "cm.pt")
    assert G.synthesis.b64.conv1.weight.shape[:2] == (256 * multiplier, 256 * multiplier)
    assert G.synthesis.b32.conv1.weight.shape[0] == 512
    from cxr_workbench.ui.cli import main  # and through the command line
    assert main(["sample", "--checkpoint", str(tmp_path / "cm.pt"), "--seeds", "0-1",
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert "3 channels averaged to grey" in capsys.readouterr().out


def test_a_generator_file_is_read_once(tmp_path, monkeypatch):
    from cxr_workbench.model import checkpoints
    sd = rosinality_state_dict(size=8, style_dim=8, n_mlp=2, channel_multiplier=2)
    torch.save({"g_ema": sd, "latent_avg": torch.ones(8)}, tmp_path / "rosi.pt")
    save_generator(tmp_path / "ours.pt", small_G())
    reads = []
    real = checkpoints.torch_load
    monkeypatch.setattr(checkpoints, "torch_load", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    for name in ("rosi.pt", "ours.pt"):
        load_generator(tmp_path / name)  # the format is told by the content it then loads
    assert reads == [tmp_path / "rosi.pt", tmp_path / "ours.pt"]


def test_bare_state_dicts_load_and_whole_modules_are_refused_with_the_way_out(tmp_path):
    sd = rosinality_state_dict(size=16, style_dim=8, n_mlp=2, channel_multiplier=2)
    torch.save({"g_ema": sd, "latent_avg": torch.ones(8)}, tmp_path / "wrapped.pt")
    torch.save(sd, tmp_path / "bare.pt")  # torch.save(g_ema.state_dict())
    with pytest.warns(UserWarning, match="bare.pt has no 'latent_avg'"):
        bare = load_generator(tmp_path / "bare.pt")
    wrapped = load_generator(tmp_path / "wrapped.pt")
    w = wrapped.mapping(torch.randn(2, 8))
    torch.testing.assert_close(bare.synthesis(w), wrapped.synthesis(w))
    # NVlabs: G_ema.state_dict() (their names are ours, plus the fixed resampling filters)
    G = small_G(seed=4)
    state = {**G.state_dict(), "synthesis.b8.conv0.resample_filter": torch.ones(4, 4)}
    torch.save(state, tmp_path / "nv_state.pt")
    H = load_generator(tmp_path / "nv_state.pt")
    z = torch.randn(2, 8)
    torch.testing.assert_close(H(z, psi=0.5), G(z, psi=0.5))
    torch.save(G, tmp_path / "whole.pt")  # a pickled module: never unpickled, and the message says what to do
    with pytest.raises(ValueError, match=r"whole.pt .*torch.save\(G_ema.state_dict\(\), path\)"):
        load_generator(tmp_path / "whole.pt")


# ------------------------------------------------------------------ NVlabs pickles


@pytest.fixture
def fake_nvlabs(monkeypatch, tmp_path):
    """Modules that pickle the way torch_utils.persistence does, without NVlabs' code."""
    marker = tmp_path / "EXECUTED"
    persistence = types.ModuleType("torch_utils.persistence")
    package = types.ModuleType("torch_utils")
    package.persistence = persistence

    def _reconstruct_persistent_obj(meta):  # what NVlabs would run: exec(module_src)
        raise AssertionError("must never be called")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    class Record:
        def __init__(self, module):
            self.state = dict(training=False, init_kwargs={"evil": Evil()},
                              _parameters=OrderedDict(module._parameters), _buffers=OrderedDict(
                                  (k, v) for k, v in module._buffers.items()
                                  if k not in module._non_persistent_buffers_set),
                              _modules=OrderedDict((k, Record(m)) for k, m in module._modules.items()))
            self.name = type(module).__name__

        def __reduce__(self):
            meta = dict(type="class", version=4, class_name=self.name, state=self.state,
                        module_src=f"import os\nos.system('touch {marker}')\n")
            return (_reconstruct_persistent_obj, (meta,))

    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)
    return Record, marker


def test_nvlabs_pickle_import_runs_nothing(tmp_path, fake_nvlabs):
    Record, marker = fake_nvlabs
    G = small_G(seed=3)
    rec = Record(G)
    # NVlabs layers also carry their fixed resampling filters as buffers
    rec.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_buffers"]["resample_filter"] = torch.ones(4, 4)
    with open(tmp_path / "net.pkl", "wb") as f:
        pickle.dump({"G": rec, "D": None, "G_ema": rec, "training_set_kwargs": {"path": "x"}}, f)
    H = load_generator(tmp_path / "net.pkl")
    assert not marker.exists()
    z = torch.randn(2, 8)
    torch.testing.assert_close(H(z, psi=0.5), G(z, psi=0.5))


def test_stylegan3_pickles_are_named(tmp_path, fake_nvlabs):
    Record, _ = fake_nvlabs
    rec = Record(small_G())
    synthesis = rec.state["_modules"]["synthesis"].state
    synthesis["_modules"] = {"input": Record(torch.nn.Linear(2, 2)), "L0_36_512": Record(torch.nn.Linear(2, 2))}
    with open(tmp_path / "sg3.pkl", "wb") as f:
        pickle.dump({"G_ema": rec}, f)
    with pytest.raises(ValueError, match="sg3.pkl: a StyleGAN3"):
        load_generator(tmp_path / "sg3.pkl")


def test_nvlabs_pickle_errors(tmp_path, fake_nvlabs):
    Record, _ = fake_nvlabs
    G = small_G()
    rec = Record(G)
    conv1 = rec.state["_modules"]["synthesis"].state["_modules"]["b16"].state["_modules"]["conv1"]
    del conv1.state["_parameters"]["bias"]
    with open(tmp_path / "net.pkl", "wb") as f:
        pickle.dump({"G_ema": rec}, f)
    with pytest.raises(ValueError, match="synthesis.b16.conv1.bias"):
        load_generator(tmp_path / "net.pkl")
    with open(tmp_path / "nog.pkl", "wb") as f:
        pickle.dump({"D": 1}, f)
    with pytest.raises(ValueError, match="no 'G_ema'"):
        load_generator(tmp_path / "nog.pkl")
    data = (tmp_path / "net.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[:200])
    with pytest.raises(ValueError, match="truncated"):
        load_generator(tmp_path / "cut.pkl")


def test_rosinality_files_as_their_train_py_writes_them(tmp_path, capsys):
    import argparse
    sd = rosinality_state_dict(size=8, style_dim=8, n_mlp=2, channel_multiplier=2)
    args = argparse.Namespace(size=8, latent=8, n_mlp=2, channel_multiplier=2)
    torch.save({"g_ema": sd, "args": args, "latent_avg": torch.ones(8)}, tmp_path / "run.pt")
    torch.testing.assert_close(load_generator(tmp_path / "run.pt").w_avg, torch.ones(8))
    torch.save({"g_ema": sd}, tmp_path / "noavg.pt")
    with pytest.warns(UserWarning, match="latent_avg"):
        G = load_generator(tmp_path / "noavg.pt")
    with torch.no_grad():
        mean = G.mapping(torch.randn(20000, 8))[:, 0].mean(0)
    assert G.w_avg.abs().sum() > 0 and (G.w_avg - mean).abs().max() < 0.05  # the mean w, not zeros
    from cxr_workbench.ui.cli import main  # the command line says it in one line, not Python's two
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "noavg.pt"), "--out", str(tmp_path / "g.png")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"cxr-workbench sample: note: {tmp_path / 'noavg.pt'} has no 'latent_avg'; using the mean of the mapping "
        "over 4096 z"]
    torch.save({"g_ema": sd, "latent_avg": torch.ones(8)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert load_generator(tmp_path / "old.pt").img_resolution == 8  # pre-zip torch file, not a pickle


def test_loader_errors_are_one_value_error(tmp_path):
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        load_generator(tmp_path / "folder.pt")
    (tmp_path / "x.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="x.pt") as info:
        load_generator(tmp_path / "x.pt", format="rosinality")
    assert "weights_only=False" not in str(info.value)
    torch.save({"g_ema": {"style.1.weight": "text"}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="odd.pt"):
        load_generator(tmp_path / "odd.pt")


def test_nvlabs_conv_clamp_and_orig_architecture(tmp_path, fake_nvlabs):
    Record, _ = fake_nvlabs
    G = small_G(seed=5)
    clamped = Generator(**{**G.config, "conv_clamp": 0.5})
    clamped.load_state_dict(G.state_dict())
    rec = Record(G)

    def layers(r):
        yield r
        for child in r.state["_modules"].values():
            yield from layers(child)
    for r in layers(rec):
        if r.name in ("SynthesisLayer", "ToRGBLayer"):
            r.state["conv_clamp"] = 0.5
    with open(tmp_path / "net.pkl", "wb") as f:
        pickle.dump({"G_ema": rec}, f)
    H = load_generator(tmp_path / "net.pkl")
    z = torch.randn(3, 8)
    torch.testing.assert_close(H(z), clamped.eval()(z))
    assert (H(z) - G(z)).abs().max() > 1e-3  # the clamp acts
    assert H.config["conv_clamp"] == 0.5
    del rec.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["torgb"]
    with open(tmp_path / "orig.pkl", "wb") as f:
        pickle.dump({"G_ema": rec}, f)
    with pytest.raises(ValueError, match="'orig'.*not supported"):
        load_generator(tmp_path / "orig.pkl")


# ------------------------------------------------------------------ conditional generators


def nvlabs_mapping(sd, z, c, lr=0.01):
    """NVlabs' MappingNetwork written out from its weights: normalise z, embed c (lr 1),
    normalise it, concatenate, then the fc layers (lr 0.01, leaky ReLU times sqrt 2)."""
    def norm(x):
        return x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    e_w = sd["mapping.embed.weight"]
    y = norm(c @ (e_w / e_w.shape[1] ** 0.5).T + sd["mapping.embed.bias"])
    x = torch.cat([norm(z), y], 1)
    i = 0
    while f"mapping.fc{i}.weight" in sd:
        w = sd[f"mapping.fc{i}.weight"]
        x = torch.nn.functional.leaky_relu(x @ (w * lr / w.shape[1] ** 0.5).T + sd[f"mapping.fc{i}.bias"] * lr, 0.2)
        x = x * 2 ** 0.5
        i += 1
    return x


def test_conditional_mapping_is_nvlabs_and_classes_are_checked():
    from cxr_workbench.model.latents import reference_latents
    G = small_G(seed=4, c_dim=3)
    assert G.config["c_dim"] == 3 and G.mapping.fc0.weight.shape[1] == 8 + 8  # z beside the embedded class
    z = torch.randn(5, 8)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0]), 3).float()
    want = nvlabs_mapping(G.state_dict(), z, c)
    torch.testing.assert_close(G.mapping(z, c)[:, 0], want)
    torch.testing.assert_close(G.mapping(z, torch.tensor([0, 1, 2, 1, 0]))[:, 0], want)  # indices = one-hot
    assert not torch.allclose(G.mapping(z, torch.zeros(5, dtype=torch.long)), G.mapping(z, torch.ones(5).long()))
    with pytest.raises(ValueError, match="conditional \\(c_dim = 3\\); expected a class"):
        G.mapping(z)
    with pytest.raises(ValueError, match="expected 5 indices in 0..2"):
        G.mapping(z, torch.full([5], 3))
    with pytest.raises(ValueError, match="class=3; expected a class in 0..2"):
        reference_latents(G, [0], label=3)
    torch.testing.assert_close(reference_latents(G, [7, 8], label=2)[1], reference_latents(G, [8], label=2)[0])
    with pytest.raises(ValueError, match="class=1; expected 0: the generator is unconditional"):
        reference_latents(small_G(), [0], label=1)
    with pytest.raises(ValueError, match="the generator is unconditional"):
        small_G().mapping(z, torch.zeros(5, dtype=torch.long))


def test_conditional_generators_load_and_save(tmp_path, fake_nvlabs):
    Record, _ = fake_nvlabs
    G = small_G(seed=5, c_dim=4)
    with open(tmp_path / "cond.pkl", "wb") as f:
        pickle.dump({"G_ema": Record(G)}, f)
    H = load_generator(tmp_path / "cond.pkl")
    assert H.c_dim == 4
    z, c = torch.randn(3, 8), torch.tensor([3, 0, 2])
    torch.testing.assert_close(H(z, c, psi=0.6), G(z, c, psi=0.6))
    save_generator(tmp_path / "ours.pt", H)
    torch.testing.assert_close(load_generator(tmp_path / "ours.pt")(z, c), G(z, c))
    from cxr_workbench.model.latents import sample_grid
    from cxr_workbench.ui.cli import main
    assert main(["sample", "--checkpoint", str(tmp_path / "cond.pkl"), "--class", "2", "--seeds", "0-3",
                 "--out", str(tmp_path / "grid.png")]) == 0
    from PIL import Image
    assert (np.asarray(Image.open(tmp_path / "grid.png")) == sample_grid(H, range(4), label=2)).all()
    assert not (sample_grid(H, range(4), label=2) == sample_grid(H, range(4), label=0)).all()
    every = sample_grid(H, range(10), cols=2, label=None)  # row r of class r % 4, as cards show them
    for r in range(5):
        row = sample_grid(H, range(2 * r, 2 * r + 2), cols=2, label=r % 4)
        assert (every[r * row.shape[0]:(r + 1) * row.shape[0]] == row).all()
    assert main(["sample", "--checkpoint", str(tmp_path / "cond.pkl"), "--class", "4", "--out",
                 str(tmp_path / "bad.png")]) == 2
    assert main(["sample", "--checkpoint", "phantom", "--class", "1", "--out", str(tmp_path / "bad.png")]) == 2


def test_class_direction_points_from_the_other_classes_to_class_k():
    from cxr_workbench.method.directions import choose_direction
    from cxr_workbench.method.searches import class_direction
    G = small_G(seed=6, c_dim=2)
    z = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
    gap = G.mapping(z, torch.ones(4096).long())[:, 0].mean(0) - G.mapping(z, torch.zeros(4096).long())[:, 0].mean(0)
    u = class_direction(G, 1)
    torch.testing.assert_close(u, gap / gap.norm())
    chosen = choose_direction(G, None, None, "class:0", "cardiomegaly")
    torch.testing.assert_close(chosen.u, -u)
    assert chosen.description.startswith("class:0: toward class 0") and chosen.inside_share is None
    with pytest.raises(ValueError, match="class=2; expected a class in 0..1"):
        class_direction(G, 2)
    with pytest.raises(ValueError, match="the generator has 0 classes"):
        class_direction(small_G(), 0)


# ------------------------------------------------------------------ TF-era NVlabs pickles (G, D, Gs)


@pytest.fixture
def fake_tflib(monkeypatch, tmp_path):
    """A ``dnnlib.tflib.network.Network`` that pickles its state the way the TF code does (a dict with
    name, static_kwargs, components, build_module_src and variables as numpy arrays)."""
    import numpy as np
    marker = tmp_path / "EXECUTED"
    mod = types.ModuleType("dnnlib.tflib.network")

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    class Network:
        def __init__(self, name, variables, components=None, **static_kwargs):
            self.name, self.variables, self.components, self.static_kwargs = name, variables, components or {}, \
                static_kwargs

        def __getstate__(self):
            return dict(version=4, name=self.name, static_kwargs=dict(self.static_kwargs, hook=Evil()),
                        components=self.components, build_module_src=f"import os\nos.system('touch {marker}')\n",
                        build_func_name="G_main",
                        variables=[(k, np.asarray(v, dtype=np.float32)) for k, v in self.variables.items()])
    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    mod.Network = Network
    for name in ("dnnlib", "dnnlib.tflib"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", mod)
    return Network, marker


def tf_networks(G, Network, **kwargs):
    """The Gs a TF StyleGAN2(-ADA) would hold for G: legacy.py's conversion run backwards."""
    import math
    sd = {k: v.numpy() for k, v in G.state_dict().items()}
    mapping = {}
    for i in range(G.mapping.num_layers):
        mapping[f"Dense{i}/weight"] = sd[f"mapping.fc{i}.weight"].T
        mapping[f"Dense{i}/bias"] = sd[f"mapping.fc{i}.bias"]
    if G.c_dim:
        mapping["LabelEmbed/weight"] = sd["mapping.embed.weight"].T
        mapping["LabelEmbed/bias"] = sd["mapping.embed.bias"]
    syn = {"4x4/Const/const": sd["synthesis.b4.const"][None]}

    def layer(src, dst, noise, flip=False):
        w = sd[f"{src}.weight"].transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
        syn[f"{dst}/weight"] = w[::-1, ::-1] if flip else w
        syn[f"{dst}/bias"], syn[f"{dst}/noise_strength"] = sd[f"{src}.bias"], sd[f"{src}.noise_strength"]
        syn[f"{dst}/mod_weight"], syn[f"{dst}/mod_bias"] = sd[f"{src}.affine.weight"].T, sd[f"{src}.affine.bias"] - 1
        syn[f"noise{noise}"] = sd[f"{src}.noise_const"][None, None]

    for r in G.synthesis.block_resolutions:
        b, log2 = f"synthesis.b{r}", int(math.log2(r))
        if r == 4:
            layer(f"{b}.conv1", "4x4/Conv", 0)
        else:
            layer(f"{b}.conv0", f"{r}x{r}/Conv0_up", 2 * log2 - 5, flip=True)
            layer(f"{b}.conv1", f"{r}x{r}/Conv1", 2 * log2 - 4)
        syn[f"{r}x{r}/ToRGB/weight"] = sd[f"{b}.torgb.weight"].transpose(2, 3, 1, 0)
        syn[f"{r}x{r}/ToRGB/bias"], syn[f"{r}x{r}/ToRGB/mod_weight"] = sd[f"{b}.torgb.bias"], \
            sd[f"{b}.torgb.affine.weight"].T
        syn[f"{r}x{r}/ToRGB/mod_bias"] = sd[f"{b}.torgb.affine.bias"] - 1
    comps = dict(mapping=Network("G_mapping", mapping), synthesis=Network("G_synthesis", syn))
    Gs = Network("G", {"dlatent_avg": sd["mapping.w_avg"], "lod": 0.0}, comps, resolution=G.img_resolution,
                 label_size=G.c_dim, **kwargs)
    return Network("G", {}, {}), Network("D", {}), Gs


@pytest.mark.parametrize("c_dim", [0, 3])
def test_tf_era_pickles_convert_as_legacy_py_and_run_nothing(tmp_path, fake_tflib, c_dim):
    Network, marker = fake_tflib
    G = small_G(seed=7, c_dim=c_dim)
    with torch.no_grad():  # every parameter distinct from its init, the up-convolution kernels asymmetric
        G.synthesis.b8.conv0.weight.add_(torch.linspace(0, 1, 9).reshape(3, 3))
    with open(tmp_path / "network-snapshot.pkl", "wb") as f:
        pickle.dump(tf_networks(G, Network), f, protocol=4)
    H = load_generator(tmp_path / "network-snapshot.pkl")
    assert not marker.exists() and H.c_dim == c_dim
    z = torch.randn(3, 8)
    c = torch.tensor([2, 0, 1]) if c_dim else None
    torch.testing.assert_close(H(z, c, psi=0.7), G(z, c, psi=0.7), atol=1e-5, rtol=1e-5)
    assert H.config.get("conv_clamp") is None


def test_tf_era_pickles_other_architectures_are_named(tmp_path, fake_tflib):
    Network, _ = fake_tflib
    G_, D, Gs = tf_networks(small_G(), Network, conv_clamp=256)
    with open(tmp_path / "clamp.pkl", "wb") as f:
        pickle.dump((G_, D, Gs), f, protocol=4)
    assert load_generator(tmp_path / "clamp.pkl").config["conv_clamp"] == 256.0
    Gs.components["synthesis"].variables["ToRGB_lod0/weight"] = torch.zeros(1, 1, 16, 1).numpy()
    with open(tmp_path / "orig.pkl", "wb") as f:
        pickle.dump((G_, D, Gs), f, protocol=4)
    with pytest.raises(ValueError, match="orig.pkl: a TF generator with architecture 'orig'"):
        load_generator(tmp_path / "orig.pkl")
    del Gs.components["synthesis"].variables["ToRGB_lod0/weight"]
    del Gs.components["synthesis"].variables["8x8/Conv1/bias"]
    with open(tmp_path / "cut.pkl", "wb") as f:
        pickle.dump((G_, D, Gs), f, protocol=4)
    with pytest.raises(ValueError, match="TF variable 'synthesis/8x8/Conv1/bias' is missing"):
        load_generator(tmp_path / "cut.pkl")
