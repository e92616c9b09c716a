"""StyleGAN2 (Karras et al. 2020) in pure PyTorch: mapping, synthesis ("skip" outputs) and a
residual discriminator.

Parameter names follow NVlabs stylegan2-ada-pytorch (``mapping.fc0.weight``,
``synthesis.b8.conv0.affine.weight`` ...), so their checkpoints map onto ours almost one to one
(see ``checkpoints.py``). No custom CUDA ops: resampling is a plain FIR convolution
(``upfirdn2d``) so the same code runs on CPU and GPU and is differentiable everywhere.

Two formulations of the modulated convolution are implemented (``modulated_conv2d``):

* ``"input"``: scale the *input* channels by the style, run one ordinary convolution shared by
  the whole batch, then scale the *output* channels by the demodulation coefficients.
* ``"grouped"``: build one weight per sample and run a grouped convolution (the textbook form).

They are mathematically identical (tests prove it); ``benchmarks/bench_modconv.py`` measures
both and ``DEFAULT_MODCONV`` keeps the faster one per device type.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_MODCONV", "UPCONV", "SQRT2", "setup_filter", "upfirdn2d", "upsample2d", "downsample2d",
           "modulated_conv2d", "FullyConnected", "Conv2d", "MAX_SEED", "z_from_seeds", "normalize_2nd_moment",
           "MappingNetwork", "SynthesisLayer", "ToRGBLayer", "SynthesisBlock", "channels_per_resolution",
           "SynthesisNetwork", "Generator", "DiscriminatorBlock", "Discriminator"]

# Faster formulation per device type, from benchmarks/bench_modconv.py (see the README figures).
DEFAULT_MODCONV = {"cpu": "input", "cuda": "input"}  # H200: grouped 1.08x (batch 12) to 3.5x (240) slower
# 2x up-convolution: "transpose" (stride-2 transposed conv, then the 4x4 FIR: a quarter of the
# multiply-adds, as NVlabs does it) or "polyphase" (four 3x3 phase kernels, one conv, pixel shuffle).
# Equal to float rounding (tests); benchmarks/bench_train.py measures both.
UPCONV = {"impl": "transpose"}

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------------------------
# Functional building blocks
# --------------------------------------------------------------------------------------------

def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR filter, normalised to unit sum: [k, k]."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the FIR filter ``f``, downsample.

    x: [N, C, H, W]; f: [kh, kw]; pad: (x0, x1, y0, y1), negative values crop.
    Same semantics as NVlabs ``upfirdn2d`` (true convolution, i.e. the filter is flipped).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    # Symmetric padding is the convolution's own (no padded copy of x); the rest is padded or cropped.
    sym = (max(min(pad[2], pad[3]), 0), max(min(pad[0], pad[1]), 0))
    rest = (pad[0] - sym[1], pad[1] - sym[1], pad[2] - sym[0], pad[3] - sym[0])
    if any(rest):
        x = F.pad(x, [max(rest[0], 0), max(rest[1], 0), max(rest[2], 0), max(rest[3], 0)])
        x = x[:, :, max(-rest[2], 0): x.shape[2] - max(-rest[3], 0),
              max(-rest[0], 0): x.shape[3] - max(-rest[1], 0)]
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip([0, 1])
    weight = f[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, padding=sym, groups=c, stride=down)  # only the kept pixels are computed


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling. [N, C, H, W] -> [N, C, 2H, 2W]."""
    k = f.shape[0]
    return upfirdn2d(x, f, up=2, pad=((k + 1) // 2, (k - 2) // 2, (k + 1) // 2, (k - 2) // 2), gain=4)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling. [N, C, H, W] -> [N, C, H/2, W/2]."""
    k = f.shape[0]
    return upfirdn2d(x, f, down=2, pad=((k - 1) // 2, k // 2, (k - 1) // 2, k // 2))


def _up_phase_kernels(w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Fold "transposed 3x3 conv (stride 2) + FIR blur (gain 4)" into 4 polyphase 3x3 kernels.

    w: [O, I, 3, 3] (applied as a transposed conv, unflipped); f: [4, 4]. Returns [O * 4, I, 3, 3],
    phase (a, b) at channel o * 4 + 2a + b, so ``pixel_shuffle(conv2d(x, K, padding=1), 2)``
    equals ``upfirdn2d(conv_transpose2d(x, w^T, stride=2), f, pad=1, gain=4)`` exactly.
    """
    o, i, k, _ = w.shape
    if k != 3 or f.shape != (4, 4):
        raise ValueError(f"polyphase up-conv needs a 3x3 kernel and a 4x4 filter, got {k}x{k} and {tuple(f.shape)}")
    g = (f * 4).flip([0, 1]).to(w)
    full = w.new_zeros(o, i, 6, 6)  # combined kernel, offsets -2..3
    for qy in range(4):
        for qx in range(4):
            full[:, :, 3 - qy:6 - qy, 3 - qx:6 - qx] += w * g[qy, qx]
    # Phase a uses combined offsets 4 - a, 2 - a, 0 - a (+2): every other tap of the flipped kernel.
    flipped = full.flip([2, 3])
    phases = [flipped[:, :, 1 - a::2, 1 - b::2] for a in (0, 1) for b in (0, 1)]
    return torch.stack(phases, 1).reshape(o * 4, i, 3, 3)


def _conv(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, up: bool, groups: int = 1) -> torch.Tensor:
    """k x k 'same' convolution, optionally fused with 2x FIR upsampling (polyphase, see above).

    w: [O, I/groups, k, k]. With ``up`` the result is [N, O/groups*groups, 2H, 2W].
    """
    k = w.shape[-1]
    if not up:
        return F.conv2d(x, w, padding=k // 2, groups=groups)
    if UPCONV["impl"] == "transpose":
        o = w.shape[0] // groups
        wt = w.reshape(groups, o, -1, k, k).transpose(1, 2).reshape(-1, o, k, k)  # [groups * I, O, k, k]
        y = F.conv_transpose2d(x, wt, stride=2, groups=groups)  # [N, O, 2H + 1, 2W + 1]
        return upfirdn2d(y, f, pad=(1, 1, 1, 1), gain=4)
    y = F.conv2d(x, _up_phase_kernels(w, f), padding=1, groups=groups)  # [N, 4 O, H, W]
    return F.pixel_shuffle(y, 2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     *, demodulate: bool = True, up: bool = False, f: torch.Tensor | None = None,
                     impl: str | None = None, bias: torch.Tensor | None = None, gain: float = 1.0) -> torch.Tensor:
    """StyleGAN2 modulated convolution, plus ``bias`` [O] when given, times ``gain``: bias and gain
    ride on the demodulation's pass (``gain * (conv + bias)``).

    x: [N, I, H, W]; weight: [O, I, k, k]; styles: [N, I]. Returns [N, O, H', W'].
    ``impl`` is ``"input"`` or ``"grouped"`` (see module docstring); None picks the faster one
    for ``x.device``.
    """
    n, i, _, _ = x.shape
    o, wi, k, _ = weight.shape
    if wi != i or styles.shape != (n, i):
        raise ValueError(f"modulated_conv2d: x has {i} channels, weight expects {wi}, "
                         f"styles has shape {tuple(styles.shape)}; expected ({n}, {i})")
    impl = impl or DEFAULT_MODCONV.get(x.device.type, "grouped")
    if up and f is None:
        raise ValueError("modulated_conv2d: up=True needs the resampling filter f")
    if impl == "input":
        dcoefs = None
        if demodulate:
            # sum_{i,k} (w_oik s_ni)^2 = (s^2) @ (sum_k w_oik^2)^T
            dcoefs = torch.rsqrt(styles.square() @ weight.square().sum([2, 3]).t() + 1e-8)  # [N, O]
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = _conv(x, weight.to(x.dtype), f, up)
        b = None if bias is None else (bias * gain).to(x.dtype)[None, :, None, None]
        if dcoefs is None:
            x = x * gain if gain != 1 else x
            return x if b is None else x + b
        scale = (dcoefs * gain).to(x.dtype)[:, :, None, None]
        return x * scale if b is None else torch.addcmul(b, x, scale)
    if impl == "grouped":
        w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum([2, 3, 4], keepdim=True) + 1e-8)
        w = w * gain if gain != 1 else w
        x = x.reshape(1, n * i, *x.shape[2:])
        x = _conv(x, w.reshape(n * o, i, k, k).to(x.dtype), f, up, groups=n)
        x = x.reshape(n, o, *x.shape[2:])
        return x if bias is None else x + (bias * gain).to(x.dtype)[None, :, None, None]
    raise ValueError(f"modulated_conv2d: impl={impl!r}; expected 'input' or 'grouped'")


# --------------------------------------------------------------------------------------------
# Layers with equalised learning rate
# --------------------------------------------------------------------------------------------

class FullyConnected(nn.Module):
    """Linear layer with equalised learning rate (weights stored at N(0, 1/lr_mult))."""

    def __init__(self,
                 in_features: int,          # input width
                 out_features: int,         # output width
                 activation: bool = False,  # leaky ReLU (slope 0.2, gain sqrt 2) after the bias?
                 lr_multiplier: float = 1.0,  # learning-rate multiplier (0.01 in the mapping net)
                 bias_init: float = 0.0):   # initial bias value (1 for style affines)
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation else x


class Conv2d(nn.Module):
    """Plain convolution with equalised learning rate and optional 2x FIR down-sampling (for D)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 bias: bool = True, activation: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.activation, self.down = activation, down
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        k = w.shape[-1]
        if self.down:
            fk = self.resample_filter.shape[0]
            p = (fk - 2 + k - 1)
            pad = ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2)
            if k == 1:  # a 1x1 conv commutes with keeping every other pixel: blur those only
                x = F.conv2d(upfirdn2d(x, self.resample_filter, down=2, pad=pad), w, self.bias)
            else:
                x = F.conv2d(upfirdn2d(x, self.resample_filter, pad=pad), w, self.bias, stride=2)
        else:
            x = F.conv2d(x, w, self.bias, padding=k // 2)
        if self.activation:  # one pass for the activation, one for both gains
            return F.leaky_relu_(x, 0.2) * (SQRT2 * gain)
        return x * gain if gain != 1 else x


MAX_SEED = 2 ** 32 - 1  # numpy RandomState seeds, as NVlabs' tools


def z_from_seeds(seeds, z_dim: int) -> torch.Tensor:
    """The z of each integer seed, [len(seeds), z_dim] (numpy RandomState, as NVlabs' tools)."""
    return torch.stack([torch.from_numpy(np.random.RandomState(int(s)).randn(z_dim)).float() for s in seeds])


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x divided by the root mean square over ``dim`` (StyleGAN's pixel norm)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------

class MappingNetwork(nn.Module):
    """z [B, z_dim] (and, when conditional, a class c) -> ws [B, num_ws, w_dim], with a running
    average of w for truncation."""

    def __init__(self,
                 z_dim: int,                   # input latent width
                 w_dim: int,                   # intermediate latent width
                 num_ws: int,                  # how many copies of w the synthesis consumes
                 num_layers: int = 8,          # depth of the MLP
                 lr_multiplier: float = 0.01,  # learning-rate multiplier of the MLP
                 w_avg_beta: float = 0.995,    # decay of the running mean of w during training
                 c_dim: int = 0):              # classes of a conditional generator (0: unconditional)
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.c_dim, self.w_avg_beta = c_dim, w_avg_beta
        if c_dim:  # as NVlabs: the class is embedded to w_dim features, normalised and put beside z
            self.embed = FullyConnected(c_dim, w_dim)
        for idx in range(num_layers):
            width = z_dim + (w_dim if c_dim else 0) if idx == 0 else w_dim
            setattr(self, f"fc{idx}", FullyConnected(width, w_dim, activation=True, lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def class_input(self, c, n: int) -> torch.Tensor | None:
        """The conditioning the MLP takes, [n, c_dim] float (None when unconditional), from ``c``:
        class indices [n] (int) or one-hot / soft rows [n, c_dim]."""
        if not self.c_dim:
            if c is not None and torch.as_tensor(c).numel():
                raise ValueError(f"mapping: a class was given ({torch.as_tensor(c).flatten()[:4].tolist()}...) but "
                                 "the generator is unconditional (c_dim = 0)")
            return None
        if c is None:
            raise ValueError(f"mapping: the generator is conditional (c_dim = {self.c_dim}); expected a class")
        c = torch.as_tensor(c, device=self.w_avg.device)
        if not c.is_floating_point():
            if c.ndim != 1 or len(c) != n or c.min() < 0 or c.max() >= self.c_dim:
                raise ValueError(f"mapping: classes {c.flatten()[:4].tolist()} of shape {tuple(c.shape)}; expected "
                                 f"{n} indices in 0..{self.c_dim - 1}")
            c = F.one_hot(c, self.c_dim)
        if tuple(c.shape) != (n, self.c_dim):
            raise ValueError(f"mapping: c has shape {tuple(c.shape)}; expected [{n}, {self.c_dim}]")
        return c.to(torch.float32)

    def forward(self, z: torch.Tensor, c=None, psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping: z has shape {tuple(z.shape)}; expected [B, {self.z_dim}]")
        x = normalize_2nd_moment(z.to(torch.float32))
        c = self.class_input(c, len(z))
        if c is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None, :].repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]
        if psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], psi)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + noise + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                impl: str | None = None) -> torch.Tensor:
        styles = self.affine(w)  # [N, I]
        # lrelu(conv + noise + bias) * sqrt(2), with the gain applied to each term before the sum:
        # one pass fewer over the activations.
        x = modulated_conv2d(x, self.weight, styles, up=self.up, f=self.resample_filter, impl=impl, bias=self.bias,
                             gain=SQRT2)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution,
                                device=x.device, dtype=x.dtype) * (self.noise_strength * SQRT2)
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * (self.noise_strength * SQRT2)
        elif noise_mode != "none":
            raise ValueError(f"noise_mode={noise_mode!r}; expected 'const', 'random' or 'none'")
        x = F.leaky_relu_(x, 0.2)
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, impl: str | None = None) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, impl=impl, bias=self.bias)
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> torgb, adding to the upsampled skip image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
            self.num_conv = 2
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x, img, ws, noise_mode="const", impl=None):
        """ws: [N, num_conv + 1, w_dim] (the torgb w is shared with the next block's conv0)."""
        if self.resolution == 4:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode, impl)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, impl)
            x = self.conv1(x, ws[:, 1], noise_mode, impl)
        y = self.torgb(x, ws[:, self.num_conv], impl)
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


def channels_per_resolution(img_resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """NVlabs' rule: channels(res) = min(channel_base // res, channel_max)."""
    log2 = int(np.log2(img_resolution))
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, log2 + 1)}


def _check_resolution(img_resolution: int) -> int:
    if not isinstance(img_resolution, int) or img_resolution < 4 or img_resolution > 1024 \
            or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution={img_resolution!r}; expected a power of two in 4..1024")
    return int(np.log2(img_resolution))


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> images [B, C, H, W] (roughly in [-1, 1])."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channels: dict[int, int],
                 conv_clamp: float | None = None):
        super().__init__()
        log2 = _check_resolution(img_resolution)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        self.num_ws = 2 * log2 - 2
        for res in self.block_resolutions:
            in_ch = channels[res // 2] if res > 4 else 0
            setattr(self, f"b{res}", SynthesisBlock(in_ch, channels[res], w_dim, res, img_channels, conv_clamp))

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", impl: str | None = None) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis: ws has shape {tuple(ws.shape)}; "
                             f"expected [B, {self.num_ws}, {self.w_dim}]")
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx: w_idx + block.num_conv + 1], noise_mode, impl)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator. ``G(z)`` = ``G.synthesis(G.mapping(z))``.

    Public surface used by the rest of the package: ``mapping(z, c, psi) -> ws [B, num_ws, w_dim]``,
    ``synthesis(ws, noise_mode) -> img [B, C, H, W]``, ``num_ws``, ``w_dim``, ``z_dim``, ``c_dim``
    (classes of a conditional generator, 0 when unconditional), ``c_shares`` (how often a conditional
    generator trained here saw each class; None when unknown), ``img_resolution``, ``img_channels``,
    ``w_avg``.
    """

    source: str | None = None  # the films it learned (phantom, drr) when trained here; set by its loader

    def __init__(self,
                 *, img_resolution: int = 64,   # output size, a power of two in 4..1024
                 img_channels: int = 1,      # 1 (grayscale radiographs) or 3
                 z_dim: int = 128,           # input latent width
                 w_dim: int = 128,           # intermediate latent width
                 mapping_layers: int = 4,    # depth of the mapping MLP (8 in the paper's StyleGAN2)
                 channel_base: int = 1024,   # channels(res) = min(channel_base // res, channel_max)
                 channel_max: int = 128,     # widest layer
                 channels: dict[int, int] | None = None,  # explicit widths; overrides the rule
                 conv_clamp: float | None = None,  # clamp of conv outputs (NVlabs' fp16 guard; their default 256)
                 c_dim: int = 0,             # classes of a conditional generator (0: unconditional)
                 c_shares: tuple[float, ...] | None = None):  # how often it saw each class (None: unknown)
        super().__init__()
        _check_resolution(img_resolution)
        if img_channels not in (1, 3):
            raise ValueError(f"img_channels={img_channels!r}; expected 1 or 3")
        channels = {int(k): int(v) for k, v in channels.items()} if channels else \
            channels_per_resolution(img_resolution, channel_base, channel_max)
        self.config = dict(img_resolution=img_resolution, img_channels=img_channels, z_dim=z_dim,
                           w_dim=w_dim, mapping_layers=mapping_layers,
                           channels={str(k): v for k, v in channels.items()})
        if conv_clamp is not None:
            self.config["conv_clamp"] = float(conv_clamp)
        if c_dim:
            self.config["c_dim"] = int(c_dim)
        if c_shares is not None:
            if len(c_shares) != c_dim or not all(v >= 0 for v in c_shares) or not sum(c_shares) > 0:
                raise ValueError(f"c_shares={c_shares!r}; expected {c_dim} shares, not negative, not all 0")
            self.config["c_shares"] = [float(v) for v in c_shares]
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, int(c_dim)
        self.c_shares = None if c_shares is None else torch.tensor(c_shares, dtype=torch.float64)
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channels, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers, c_dim=self.c_dim)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def forward(self, z: torch.Tensor, c=None, psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, c, psi=psi), noise_mode=noise_mode)


# --------------------------------------------------------------------------------------------
# Discriminator (residual)
# --------------------------------------------------------------------------------------------

class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions and a downsampling skip: one resolution of the discriminator."""
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2d(in_channels, in_channels, 3)
        self.conv1 = Conv2d(in_channels, out_channels, 3, down=True)
        self.skip = Conv2d(in_channels, out_channels, 1, bias=False, activation=False, down=True)

    def forward(self, x):
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: images [B, C, H, W] (and, when conditional, class indices
    [B]) -> logits [B, 1].

    Conditional (``c_dim`` > 0), it adds a projection term (Miyato & Koyama 2018), the inner product of
    its last features with a learned embedding of the class, and has a class head on the same features
    (``kind_logits``, for an auxiliary classification loss as in AC-GAN). Embedding and head start at
    zero, so a conditional D starts as the unconditional D whose weights it was given."""

    def __init__(self, *, img_resolution: int = 64, img_channels: int = 1, channel_base: int = 1024,
                 channel_max: int = 128, mbstd_group: int = 4, c_dim: int = 0):
        super().__init__()
        log2 = _check_resolution(img_resolution)
        ch = channels_per_resolution(img_resolution, channel_base, channel_max)
        self.config = dict(img_resolution=img_resolution, img_channels=img_channels,
                           channel_base=channel_base, channel_max=channel_max, mbstd_group=mbstd_group)
        if c_dim:
            self.config["c_dim"] = int(c_dim)
            self.embed = nn.Parameter(torch.zeros(c_dim, ch[4]))
            self.classify = nn.Parameter(torch.zeros(c_dim, ch[4]))
        self.c_dim = int(c_dim)
        self.img_resolution, self.mbstd_group = img_resolution, mbstd_group
        self.fromrgb = Conv2d(img_channels, ch[img_resolution], 1)
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(ch[res], ch[res // 2]))
        self.conv = Conv2d(ch[4] + 1, ch[4], 3)
        self.fc = FullyConnected(ch[4] * 16, ch[4], activation=True)
        self.out = FullyConnected(ch[4], 1)

    def forward(self, img: torch.Tensor, classes: torch.Tensor | None = None,
                kind_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, 1]; with ``kind_logits`` (conditional D only) also the class head's [B, c_dim]."""
        if (classes is None) != (not self.c_dim):
            raise ValueError(f"discriminator of {self.c_dim} classes given "
                             + ("no class" if classes is None else "a class"))
        x = self.fromrgb(img)
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        # Minibatch standard deviation: one extra feature map telling D about sample diversity.
        n, c, h, w = x.shape
        g = min(self.mbstd_group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean([1, 2, 3])  # [n/g]
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        x = self.conv(torch.cat([x, y], 1))
        h = self.fc(x.flatten(1))
        if classes is None:
            return self.out(h)
        scale = 1 / math.sqrt(h.shape[1])
        out = self.out(h) + (h * self.embed[classes].to(h.dtype)).sum(1, keepdim=True) * scale
        return (out, h @ self.classify.t().to(h.dtype) * scale) if kind_logits else out
