import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from cxr_workbench.model import stylegan2
from cxr_workbench.model.stylegan2 import (
    Discriminator,
    Generator,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)


def textbook_modconv(x, weight, styles, demodulate, up, f):
    """One weight per sample, built explicitly, one convolution per sample."""
    out = []
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]                      # [O, I, k, k]
        if demodulate:
            w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b:b + 1]
        if up:
            y = F.conv_transpose2d(xb, w.transpose(0, 1), stride=2)      # [1, O, 2H+1, 2W+1]
            y = upfirdn2d(y, f, pad=(1, 1, 1, 1), gain=4)
        else:
            y = F.conv2d(xb, w, padding=w.shape[-1] // 2)
        out.append(y)
    return torch.cat(out)


@pytest.mark.parametrize("impl", ["input", "grouped"])
@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("upconv", ["transpose", "polyphase"])
def test_modulated_conv_equals_textbook(impl, up, demodulate, upconv, monkeypatch):
    monkeypatch.setitem(stylegan2.UPCONV, "impl", upconv)
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 6, 8, 8), torch.randn(5, 6, 3, 3), torch.randn(3, 6)
    f = setup_filter()
    x.requires_grad_(True)
    ours = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, f=f, impl=impl)
    ref = textbook_modconv(x, weight, styles, demodulate, up, f)
    assert ours.shape == ref.shape == (3, 5, 16 if up else 8, 16 if up else 8)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    g_ours, = torch.autograd.grad(ours.square().sum(), x)
    g_ref, = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-4, rtol=1e-5)


def test_upfirdn2d_matches_direct_convolution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7))
    taps = np.array([1.0, 2.0, 4.0, 1.0])
    f2 = np.outer(taps, taps)
    f2 /= f2.sum()
    # Zero insertion by 2, pad (2, 1) both axes, true convolution, gain 4.
    up = np.zeros((10, 14))
    up[::2, ::2] = x
    ref = convolve2d(np.pad(up, ((2, 1), (2, 1))), f2 * 4, mode="valid")
    ours = upfirdn2d(torch.tensor(x)[None, None].float(), torch.tensor(f2).float(), up=2, pad=(2, 1, 2, 1), gain=4)
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (2, 1, 0, 2), (2, 2, -1, 1)])
def test_upfirdn2d_pads_and_downsamples_as_direct_convolution(pad):
    # Symmetric padding goes to the convolution, the rest is padded or cropped; down=2 computes
    # only the kept pixels. All of it must equal padding, convolving and subsampling by hand.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 8))
    f2 = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64
    padded = np.pad(x, ((max(pad[2], 0), max(pad[3], 0)), (max(pad[0], 0), max(pad[1], 0))))
    padded = padded[max(-pad[2], 0): padded.shape[0] - max(-pad[3], 0),
                    max(-pad[0], 0): padded.shape[1] - max(-pad[1], 0)]
    ref = convolve2d(padded, f2, mode="valid")
    for down in (1, 2):
        ours = upfirdn2d(torch.tensor(x)[None, None].float(), torch.tensor(f2).float(), down=down, pad=pad)
        np.testing.assert_allclose(ours[0, 0].numpy(), ref[::down, ::down], atol=1e-6)


def test_discriminator_skip_blurs_only_the_pixels_it_keeps():
    from cxr_workbench.model.stylegan2 import Conv2d
    torch.manual_seed(0)
    skip = Conv2d(3, 5, 1, bias=False, activation=False, down=True)
    x = torch.randn(2, 3, 16, 16)
    full = upfirdn2d(x, skip.resample_filter, pad=(1, 1, 1, 1))  # every pixel blurred, then stride 2
    ref = F.conv2d(full, skip.weight * skip.weight_gain, stride=2)
    torch.testing.assert_close(skip(x), ref, rtol=1e-5, atol=1e-6)


def test_upsample_preserves_constant_interior():
    x = torch.full((1, 2, 6, 6), 3.0)
    y = upsample2d(x, setup_filter())
    assert y.shape == (1, 2, 12, 12)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 3.0))


@pytest.mark.parametrize("res,channels", [(4, 1), (16, 1), (32, 3)])
def test_generator_shapes_and_gradients(res, channels):
    torch.manual_seed(0)
    G = Generator(img_resolution=res, img_channels=channels, z_dim=16, w_dim=16, mapping_layers=2, channel_max=32)
    assert G.num_ws == 2 * int(np.log2(res)) - 2
    ws = G.mapping(torch.randn(2, 16))
    assert ws.shape == (2, G.num_ws, 16)
    ws = ws.detach().requires_grad_(True)
    img = G.synthesis(ws)
    assert img.shape == (2, channels, res, res)
    img.square().mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
    # every W+ layer influences the image
    assert (ws.grad.abs().sum(dim=(0, 2)) > 0).all()


def test_generator_deterministic_and_noise_modes():
    torch.manual_seed(1)
    G = Generator(img_resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_max=16)
    with torch.no_grad():
        for layer in G.modules():
            if hasattr(layer, "noise_strength"):
                layer.noise_strength.fill_(0.5)
        z = torch.randn(2, 8)
        a, b = G(z, noise_mode="const"), G(z, noise_mode="const")
        c, d = G(z, noise_mode="random"), G(z, noise_mode="none")
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3 and (a - d).abs().max() > 1e-3
    torch.manual_seed(1)
    G2 = Generator(img_resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_max=16)
    G2.load_state_dict(G.state_dict())
    torch.testing.assert_close(G2(z), a)


def test_truncation_to_w_avg():
    G = Generator(img_resolution=8, z_dim=8, w_dim=8, mapping_layers=2, channel_max=16)
    G.mapping.w_avg.copy_(torch.arange(8.0))
    ws = G.mapping(torch.randn(3, 8), psi=0.0)
    torch.testing.assert_close(ws, torch.arange(8.0).expand(3, G.num_ws, 8))


def test_discriminator_shapes_and_gradients():
    D = Discriminator(img_resolution=16, img_channels=1, channel_max=32)
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    out = D(x)
    assert out.shape == (4, 1)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(img_resolution=48), "power of two"),
    (dict(img_resolution=2048), "power of two"),
    (dict(img_channels=2), "img_channels=2"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Generator(**kwargs)


def test_bad_ws_shape():
    G = Generator(img_resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channel_max=8)
    with pytest.raises(ValueError, match=r"ws has shape \(2, 3, 8\); expected \[B, 4, 8\]"):
        G.synthesis(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="z has shape"):
        G.mapping(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(torch.zeros(1, 4, 8), noise_mode="loud")


def test_channels_last_networks_compute_the_same_values_and_gradients():
    # Training runs G and D channels-last on CPU (faster convolutions); the arithmetic must not change.
    import copy
    torch.manual_seed(0)
    G = Generator(img_resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_max=16)
    D = Discriminator(img_resolution=16, channel_max=16)
    G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last)
    D_cl = copy.deepcopy(D).to(memory_format=torch.channels_last)
    assert G_cl.synthesis.b8.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    z = torch.randn(4, 8)
    out, out_cl = D(G(z)).sum(), D_cl(G_cl(z)).sum()
    out.backward()
    out_cl.backward()
    torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-5)
    for (name, p), p_cl in zip(list(G.named_parameters()) + list(D.named_parameters()),
                               list(G_cl.parameters()) + list(D_cl.parameters())):
        torch.testing.assert_close(p_cl.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
