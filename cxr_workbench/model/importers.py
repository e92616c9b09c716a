"""Importers of other StyleGAN2 formats, read without running their code (as NVlabs keeps its
importers in ``legacy.py``, apart from the networks): rosinality's state dicts, NVlabs' network
pickles through a restricted unpickler, and TF-era NVlabs ``(G, D, Gs)`` pickles.

rosinality stylegan2-pytorch (``torch.save({"g_ema": state_dict, "latent_avg": [w_dim], ...})``)::

    style.{1..L}.weight [w, z|w], style.{i}.bias [w]          -> mapping.fc{i-1}.*
    input.input [1, C, 4, 4]                                  -> synthesis.b4.const
    conv1.conv.weight [1, O, I, 3, 3]                         -> synthesis.b4.conv1.weight
    conv1.conv.modulation.{weight,bias}                       -> synthesis.b4.conv1.affine.*
    conv1.noise.weight [1]                                    -> synthesis.b4.conv1.noise_strength
    conv1.activate.bias [O]                                   -> synthesis.b4.conv1.bias
    to_rgb1.conv.weight [1, C, I, 1, 1], .conv.modulation.*,
    to_rgb1.bias [1, C, 1, 1]                                 -> synthesis.b4.torgb.*
    convs.{2j}.* / convs.{2j+1}.* (j = 0.. for 8, 16, ... px)  -> synthesis.b{res}.conv0 / conv1
    to_rgbs.{j}.*                                             -> synthesis.b{res}.torgb
    noises.noise_{l} [1, 1, res, res]                         -> the matching layer's noise_const
    latent_avg [w_dim] (top level of the file)                -> mapping.w_avg
    (convs.*.conv.blur.kernel and to_rgbs.*.upsample.kernel are the fixed [1,3,3,1] filters; ignored)

NVlabs stylegan2-ada-pytorch network pickle (``{"G_ema": Generator, ...}``), "skip" architecture::

    mapping.fc{i}.{weight,bias}, mapping.w_avg                -> same names
    mapping.embed.{weight,bias} (conditional, c_dim > 0)      -> same names
    synthesis.b{res}.const / conv0 / conv1 / torgb .*         -> same names
    (*.resample_filter buffers are the fixed filter; ignored)

TF-era NVlabs pickles (StyleGAN2 and StyleGAN2-ADA in TensorFlow: a ``(G, D, Gs)`` tuple of
``dnnlib.tflib.network.Network``): the variables of ``Gs`` and its components are plain numpy
arrays, named ``mapping/Dense0/weight``, ``synthesis/8x8/Conv0_up/weight`` ...; they are converted
as NVlabs' ``legacy.py`` does (``nvlabs_from_tf``) and then loaded as an NVlabs ``G_ema``. The
embedded build source is never run.

Bare state dicts load too: ``torch.save(g_ema.state_dict())`` of rosinality (keys ``style.*``,
``input.input``) and ``torch.save(G_ema.state_dict())`` of NVlabs (keys ``mapping.fc*``,
``synthesis.b*``), recognised by their keys. A state dict does not record NVlabs' ``conv_clamp``
(an argument, not a weight): it loads without clamping, which changes nothing unless an activation
passes the clamp (256 by default). A whole pickled module (``torch.save(G_ema)``) is refused: reading
it would run code.

The pickle is read by a restricted unpickler: tensors are rebuilt with
``torch.load(weights_only=True)`` and the persistent-class records of ``torch_utils.persistence``
are read as plain data; their embedded source code is never executed and any other global
becomes an inert placeholder.
"""
from __future__ import annotations

import codecs
import io
import math
import pickle
import re
import warnings
from collections import OrderedDict

import numpy as np
import torch

from cxr_workbench.model.stylegan2 import Generator

__all__ = ["rosinality_key_map", "generator_from_rosinality", "PersistentRecord", "read_nvlabs_pickle",
           "tf_variables", "nvlabs_from_tf", "collect_module_attribute", "collect_module_tensors",
           "generator_from_nvlabs"]

# --------------------------------------------------------------------------------------------
# Key mapping shared by both importers
# --------------------------------------------------------------------------------------------

def _load_mapped(G: Generator, mapped: dict[str, torch.Tensor], source: str) -> Generator:
    """Copy ``mapped`` (our names) into G, insisting on an exact, shape-correct match."""
    ours = G.state_dict()
    missing = sorted(set(ours) - set(mapped))
    extra = sorted(set(mapped) - set(ours))
    if missing or extra:
        raise KeyError(f"{source}: parameters missing from the checkpoint: {missing[:10]}; "
                       f"checkpoint parameters with no counterpart: {extra[:10]}")
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}; expected {tuple(ours[k].shape)}")
    G.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()})
    return G


def _layer_at(res: int, j: int) -> str:
    return f"synthesis.b{res}." + ("const" if j < 0 else ["conv0", "conv1"][j])


def rosinality_key_map(img_resolution: int, n_mapping: int) -> dict[str, str | None]:
    """rosinality name -> our name (None: a fixed buffer we recompute)."""
    m: dict[str, str | None] = {}
    for i in range(n_mapping):
        m[f"style.{i + 1}.weight"] = f"mapping.fc{i}.weight"
        m[f"style.{i + 1}.bias"] = f"mapping.fc{i}.bias"
    m["input.input"] = "synthesis.b4.const"

    def modulated(src: str, dst: str):
        m[f"{src}.conv.weight"] = f"{dst}.weight"
        m[f"{src}.conv.modulation.weight"] = f"{dst}.affine.weight"
        m[f"{src}.conv.modulation.bias"] = f"{dst}.affine.bias"

    def styled(src: str, dst: str, noise_idx: int, up: bool):
        modulated(src, dst)
        m[f"{src}.noise.weight"] = f"{dst}.noise_strength"
        m[f"{src}.activate.bias"] = f"{dst}.bias"
        m[f"noises.noise_{noise_idx}"] = f"{dst}.noise_const"
        if up:
            m[f"{src}.conv.blur.kernel"] = None

    def torgb(src: str, dst: str, up: bool):
        modulated(src, dst)
        m[f"{src}.bias"] = f"{dst}.bias"
        if up:
            m[f"{src}.upsample.kernel"] = None

    styled("conv1", "synthesis.b4.conv1", 0, False)
    torgb("to_rgb1", "synthesis.b4.torgb", False)
    for j, log2 in enumerate(range(3, int(math.log2(img_resolution)) + 1)):
        res = 2 ** log2
        styled(f"convs.{2 * j}", f"synthesis.b{res}.conv0", 2 * j + 1, True)
        styled(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", 2 * j + 2, False)
        torgb(f"to_rgbs.{j}", f"synthesis.b{res}.torgb", True)
    return m


def generator_from_rosinality(sd: dict, latent_avg: torch.Tensor | None = None,
                              source: str = "rosinality checkpoint") -> Generator:
    """Build our Generator from a rosinality ``g_ema`` state dict (see module docstring);
    ``source`` names it in messages."""
    if "input.input" not in sd or "style.1.weight" not in sd:
        raise KeyError(f"{source}: rosinality state dict lacks 'input.input' or 'style.1.weight'")
    if "iwt.ll" in sd or any(k.endswith((".iwt.ll", ".dwt.ll")) for k in sd):  # Haar wavelet filters
        raise ValueError(f"{source}: a SWAGAN (wavelet) generator from rosinality's swagan.py; only StyleGAN2 "
                         "generators (their model.py) are supported")
    n_mapping = len({k.split(".")[1] for k in sd if re.fullmatch(r"style\.\d+\.weight", k)})
    noise_res = [v.shape[-1] for k, v in sd.items() if k.startswith("noises.noise_")]
    n_up = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
    img_resolution = max(noise_res) if noise_res else 4 * 2 ** n_up
    w_dim, z_dim = sd["style.1.weight"].shape[0], sd["style.1.weight"].shape[1]
    img_channels = sd["to_rgb1.conv.weight"].shape[1]
    # The width of each resolution is read off its convolution's weight [1, out, in, k, k], so any
    # channel_multiplier (and any hand-edited width) loads without being told.
    channels = {4: sd["conv1.conv.weight"].shape[1]}
    for j in range(int(math.log2(img_resolution)) - 2):
        key = f"convs.{2 * j}.conv.weight"
        if key not in sd:
            raise KeyError(f"{source}: {key!r} is missing (the width of the {8 << j} px block)")
        channels[8 << j] = sd[key].shape[1]
    G = Generator(img_resolution=img_resolution, img_channels=img_channels, z_dim=z_dim, w_dim=w_dim,
                  mapping_layers=n_mapping, channels=channels)
    names = rosinality_key_map(img_resolution, n_mapping)
    unknown = sorted(k for k in sd if k not in names)
    if unknown:
        raise KeyError(f"{source}: keys with no counterpart in a StyleGAN2: {unknown[:10]}")
    mapped = {}
    for src, dst in names.items():
        if dst is None:
            continue
        if src not in sd:
            raise KeyError(f"{source}: {src!r} is missing (needed for {dst})")
        v = sd[src]
        if dst.endswith(("conv0.weight", "conv1.weight", "torgb.weight")):
            v = v[0]  # [1, O, I, k, k] -> [O, I, k, k]
        elif dst.endswith("noise_strength"):
            v = v.reshape([])
        elif dst.endswith("noise_const"):
            v = v[0, 0]
        elif dst.endswith("torgb.bias"):
            v = v.reshape(-1)
        elif dst == "synthesis.b4.const":
            v = v[0]
        mapped[dst] = v
    mapped["mapping.w_avg"] = latent_avg.reshape(-1) if latent_avg is not None else torch.zeros(w_dim)
    G = _load_mapped(G, mapped, source)
    if latent_avg is None:
        # As rosinality's mean_latent(4096): truncation needs the mean w, and zeros are not it.
        warnings.warn(f"{source} has no 'latent_avg'; using the mean of the mapping over 4096 z", stacklevel=2)
        with torch.no_grad():
            z = torch.randn(4096, z_dim, generator=torch.Generator().manual_seed(0))
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    return G


# --------------------------------------------------------------------------------------------
# NVlabs network pickles, read without their code
# --------------------------------------------------------------------------------------------

class PersistentRecord:
    """What an NVlabs ``persistence`` object unpickles to here: its class name and state."""

    def __init__(self, meta: dict):
        self.class_name = meta.get("class_name") if isinstance(meta, dict) else None
        self.state = meta.get("state", {}) if isinstance(meta, dict) else {}


class _Inert:
    """Stands in for any global the pickle names that we do not trust: holds data, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return _Inert(*args, **kwargs)


def _inert_global(module: str, name: str):
    return type(f"Inert[{module}.{name}]", (_Inert,), {"global_name": (module, name)})


def _is_tf_network(obj) -> bool:
    """An object that unpickled from a ``dnnlib.tflib.network.Network`` (TF-era NVlabs)."""
    return isinstance(obj, _Inert) and getattr(obj, "global_name", None) == ("dnnlib.tflib.network", "Network") \
        and isinstance(getattr(obj, "state", None), dict)


def _load_storage_bytes(b: bytes):
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


# numpy's own rebuilders of arrays and scalars, found where this numpy keeps them
_NP_RECONSTRUCT, _NP_SCALAR = np.ndarray((0,)).__reduce__()[0], np.float32(0).__reduce__()[0]


class _RestrictedUnpickler(pickle.Unpickler):
    SAFE = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): lambda data, *args: data,
        ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *args: data,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("collections", "OrderedDict"): OrderedDict,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
        ("dnnlib.util", "EasyDict"): dict,
        # numpy arrays (the variables of TF-era pickles): rebuilt from their raw bytes, nothing run
        ("numpy.core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
        ("numpy.core.multiarray", "scalar"): _NP_SCALAR,
        ("numpy._core.multiarray", "scalar"): _NP_SCALAR,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        return self.SAFE.get((module, name)) or _inert_global(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r} in network pickle")


def read_nvlabs_pickle(path) -> tuple[dict[str, torch.Tensor], float | None]:
    """Parameters and buffers of ``G_ema`` from an NVlabs pickle, by their module path, and the
    ``conv_clamp`` its synthesis layers were built with (None: no clamp)."""
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except Exception as e:  # whatever a corrupt stream raises inside the unpickler
        raise ValueError(f"{path}: could not be read as an NVlabs network pickle (truncated or corrupt?): "
                         f"{type(e).__name__}: {str(e)[:120]}") from None
    if isinstance(data, tuple) and len(data) == 3 and all(_is_tf_network(n) for n in data):
        return nvlabs_from_tf(data[2], str(path))  # (G, D, Gs): Gs is the moving average, as G_ema
    if not isinstance(data, dict) or "G_ema" not in data:
        raise ValueError(f"{path}: no 'G_ema' entry; not an NVlabs stylegan2-ada-pytorch network pickle "
                         "(nor a TF-era (G, D, Gs) one)")
    clamps = {c for c in collect_module_attribute(data["G_ema"], "conv_clamp") if c is not None}
    if len(clamps) > 1:
        raise ValueError(f"{path}: layers use different conv_clamp values {sorted(clamps)}; expected one")
    if clamps and not isinstance(next(iter(clamps)), (int, float)):
        raise ValueError(f"{path}: conv_clamp={next(iter(clamps))!r}; expected a number")
    try:
        tensors = collect_module_tensors(data["G_ema"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return tensors, (float(clamps.pop()) if clamps else None)


def tf_variables(net, prefix: str = "") -> dict:
    """{scoped name: numpy array} of a TF-era network record and its components, named as NVlabs'
    ``legacy.py`` collects them (``mapping/Dense0/weight``, ``synthesis/4x4/Conv/weight``, ...)."""
    out = {}
    for name, value in net.state.get("variables") or []:
        out[prefix + str(name)] = value
    for name, comp in (net.state.get("components") or {}).items():
        if _is_tf_network(comp):
            out.update(tf_variables(comp, f"{prefix}{name}/"))
    return out


def nvlabs_from_tf(net, source: str) -> tuple[dict[str, torch.Tensor], float | None]:
    """A TF-era NVlabs generator record (``Gs`` of a ``(G, D, Gs)`` pickle) as the parameters of an
    NVlabs PyTorch ``G_ema``, converted as their ``legacy.py`` does: dense weights transposed, conv
    weights [kh, kw, I, O] -> [O, I, kh, kw] (the up-convolutions' kernels also flipped), 1 added to
    the modulation biases (TF adds it at run time), noise inputs as constants. Also the
    ``conv_clamp`` its kwargs name (None: no clamp)."""
    tf = tf_variables(net)
    kwargs = net.state.get("static_kwargs") or {}
    if any(k.startswith("synthesis/ToRGB_lod") for k in tf):
        raise ValueError(f"{source}: a TF generator with architecture 'orig'; only 'skip' (the default) is supported")
    if any(re.fullmatch(r"synthesis/\d+x\d+/Skip/weight", k) for k in tf):
        raise ValueError(f"{source}: a TF generator with architecture 'resnet'; only 'skip' (the default) is supported")
    if any(k.startswith("mapping/LabelConcat/") for k in tf):
        raise ValueError(f"{source}: a conditional generator of the original TF StyleGAN2 (LabelConcat); only the "
                         "StyleGAN2-ADA conditioning (LabelEmbed) is supported, as in NVlabs' legacy.py")
    res = sorted({int(m.group(1)) for k in tf if (m := re.fullmatch(r"synthesis/(\d+)x\1/.*", k))})
    if not res or "dlatent_avg" not in tf:
        raise ValueError(f"{source}: a TF network without synthesis blocks or dlatent_avg; expected the Gs of a "
                         "StyleGAN2 (G, D, Gs) pickle")

    def get(name):
        if name not in tf:
            raise KeyError(f"{source}: TF variable {name!r} is missing")
        return np.asarray(tf[name], dtype=np.float32)

    def conv(name, flip=False):
        w = get(name)
        return (w[::-1, ::-1] if flip else w).transpose(3, 2, 0, 1)

    sd = {"mapping.w_avg": get("dlatent_avg")}
    if "mapping/LabelEmbed/weight" in tf:
        sd["mapping.embed.weight"] = get("mapping/LabelEmbed/weight").T
        sd["mapping.embed.bias"] = get("mapping/LabelEmbed/bias")
    for i in range(len([k for k in tf if re.fullmatch(r"mapping/Dense\d+/weight", k)])):
        sd[f"mapping.fc{i}.weight"] = get(f"mapping/Dense{i}/weight").T
        sd[f"mapping.fc{i}.bias"] = get(f"mapping/Dense{i}/bias")
    sd["synthesis.b4.const"] = get("synthesis/4x4/Const/const")[0]

    def layer(dst, src, noise, flip=False):
        sd[f"{dst}.weight"] = conv(f"{src}/weight", flip)
        sd[f"{dst}.bias"] = get(f"{src}/bias")
        sd[f"{dst}.noise_const"] = get(f"synthesis/noise{noise}")[0, 0]
        sd[f"{dst}.noise_strength"] = get(f"{src}/noise_strength").reshape([])
        sd[f"{dst}.affine.weight"] = get(f"{src}/mod_weight").T
        sd[f"{dst}.affine.bias"] = get(f"{src}/mod_bias") + 1

    for r in res:
        log2 = int(math.log2(r))
        if r == 4:
            layer("synthesis.b4.conv1", "synthesis/4x4/Conv", 0)
        else:
            layer(f"synthesis.b{r}.conv0", f"synthesis/{r}x{r}/Conv0_up", 2 * log2 - 5, flip=True)
            layer(f"synthesis.b{r}.conv1", f"synthesis/{r}x{r}/Conv1", 2 * log2 - 4)
        sd[f"synthesis.b{r}.torgb.weight"] = conv(f"synthesis/{r}x{r}/ToRGB/weight")
        sd[f"synthesis.b{r}.torgb.bias"] = get(f"synthesis/{r}x{r}/ToRGB/bias")
        sd[f"synthesis.b{r}.torgb.affine.weight"] = get(f"synthesis/{r}x{r}/ToRGB/mod_weight").T
        sd[f"synthesis.b{r}.torgb.affine.bias"] = get(f"synthesis/{r}x{r}/ToRGB/mod_bias") + 1
    clamp = kwargs.get("conv_clamp") if isinstance(kwargs, dict) else None
    if clamp is not None and not isinstance(clamp, (int, float)):
        raise ValueError(f"{source}: conv_clamp={clamp!r}; expected a number")
    return {k: torch.from_numpy(v.copy()) for k, v in sd.items()}, \
        (float(clamp) if clamp is not None else None)


def collect_module_attribute(record, name: str) -> list:
    """The values of attribute ``name`` over a record tree (each module's own ``__dict__``)."""
    state = getattr(record, "state", None)
    if not isinstance(state, dict):
        return []
    out = [state[name]] if name in state else []
    for child in (state.get("_modules") or {}).values():
        out += collect_module_attribute(child, name)
    return out


def collect_module_tensors(record, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk a PersistentRecord (or inert nn.Module) tree and return {dotted name: tensor}."""
    state = getattr(record, "state", None)
    if not isinstance(state, dict):
        raise ValueError(f"network pickle: {prefix or 'G_ema'} is not a module record")
    out = {}
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v
    for k, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(collect_module_tensors(child, f"{prefix}{k}."))
    return out


def generator_from_nvlabs(sd: dict[str, torch.Tensor], conv_clamp: float | None = None,
                          source: str = "NVlabs network pickle") -> Generator:
    """Build our Generator from NVlabs ``G_ema`` tensors (see module docstring); ``conv_clamp``
    as their layers apply it (their default 256); ``source`` names them in messages."""
    if any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in sd):
        raise ValueError(f"{source}: a StyleGAN3 (alias-free, -T or -R) generator; only StyleGAN2 generators are "
                         "supported (stylegan3's code also trains StyleGAN2 networks: --cfg=stylegan2)")
    if any(".skip." in k or ".fromrgb." in k for k in sd if k.startswith("synthesis")):
        raise ValueError(f"{source}: only the NVlabs 'skip' generator architecture is supported")
    n_mapping = len([k for k in sd if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    res_list = sorted({int(m.group(1)) for k in sd if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    if not res_list:
        raise KeyError(f"{source}: G_ema has no synthesis.b{{res}} blocks")
    img_resolution = res_list[-1]
    if any(f"synthesis.b{r}.torgb.weight" not in sd for r in res_list):
        raise ValueError(f"{source}: NVlabs generator architecture 'orig' (no ToRGB in every block) is not "
                         "supported; expected the default 'skip'")
    channels = {r: sd[f"synthesis.b{r}.conv1.weight"].shape[0] for r in res_list}
    w_dim = sd["mapping.fc0.weight"].shape[0]
    c_dim = sd["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in sd else 0
    if c_dim and sd["mapping.embed.weight"].shape[0] != w_dim:
        raise ValueError(f"{source}: the class embedding has {sd['mapping.embed.weight'].shape[0]} features; only "
                         f"NVlabs' default embed_features = w_dim = {w_dim} is supported")
    G = Generator(img_resolution=img_resolution, img_channels=sd["synthesis.b4.torgb.weight"].shape[0],
                  z_dim=sd["mapping.fc0.weight"].shape[1] - (w_dim if c_dim else 0), w_dim=w_dim,
                  mapping_layers=n_mapping, channels=channels, conv_clamp=conv_clamp, c_dim=c_dim)
    mapped = {k: v for k, v in sd.items() if not k.endswith("resample_filter")}
    return _load_mapped(G, mapped, source)
