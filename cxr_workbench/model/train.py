"""StyleGAN2 training: non-saturating logistic loss, lazy R1, style mixing, generator EMA.

With ``condition="kind"`` G and D are told each film's kind (normal, cardiomegaly, opacity): G
embeds it beside z (as NVlabs' conditional StyleGAN2), D adds a projection term. A GAN told nothing
draws films between the kinds (faint opacities in normal lungs) and too few heavy opacities; told the
kind it need not cover three modes with one continuous latent. Fakes take the kinds of random
training films, so D sees each kind as often among fakes as among films, however the run draws
them (``kind_shares``); G draws W as a whole by the quality sets' mix (``KIND_MIX``, its
``c_shares``), so a run may draw more of a rare kind to learn it better without drawing it more often
afterwards.
D's projection term alone learned the cardiomegaly kind within 30 kimg but had not told normal from
opacity after 60 (its features barely see opacities), so D also learns to classify real films by kind
and G's films must read as the kind they were drawn for (``kind_weight``; AC-GAN, Odena et al. 2017,
with D's classifier trained on real films only).

Runs on CPU (the shipped default was trained that way) and uses a GPU with bf16 autocast when
one is present. The run directory holds ``snapshot.pt`` (everything needed to resume, written
atomically), ``generator.pt`` (the EMA generator in our format) and one sample grid per snapshot.
Path-length regularisation is left out: it costs a third of the step on CPU and matters little
at 64 px.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxr_workbench.devices import pick_device
from cxr_workbench.imaging import phantom, sources
from cxr_workbench.imaging.datasets import KIND_MIX, TruthDataset
from cxr_workbench.imaging.diseases import KINDS
from cxr_workbench.io import held_set, reason, save_png, writer_lock
from cxr_workbench.model.checkpoints import machine_description, read_checkpoint, save_checkpoint
from cxr_workbench.model.latents import sample_grid
from cxr_workbench.model.stylegan2 import MAX_SEED, Discriminator, Generator
from cxr_workbench.settings import setting, validate_settings

__all__ = ["TrainConfig", "RESUME_FREE", "OTHER_SOURCE", "train", "Run", "start_run", "training_step",
           "write_snapshot"]


def _power_of_two(r) -> bool:
    return r & (r - 1) == 0


@dataclass
class TrainConfig:
    """Training settings; NVlabs' StyleGAN2 values where they fit a 64 px network on a CPU."""

    resolution: int = setting(64, "image size", low=16, high=1024, rule=_power_of_two,
                              expected="a power of two in [16, 1024]")
    z_dim: int = setting(128, "latent z size", low=1, high=4096)
    w_dim: int = setting(128, "latent w size", low=1, high=4096)
    mapping_layers: int = setting(4, "mapping network layers", low=1, high=16)
    channel_base: int = setting(1024, "channels(res) = min(channel_base // res, channel_max)", low=1, high=2 ** 20)
    channel_max: int = setting(128, "the most channels of any layer", low=1, high=4096)
    batch: int = setting(32, "images per step", low=1, high=4096)
    lr: float = setting(0.0025, "Adam step size, betas (0, 0.99), as StyleGAN2", low=0, high=1, open_low=True)
    r1_gamma: float = setting(0.05, "R1 weight, ~ 0.0002 * res^2 / batch (NVlabs' auto rule) rounded up",
                              low=0, high=1e6)
    r1_interval: int = setting(16, "lazy R1: every this many steps", low=1, high=1000)
    style_mixing: float = setting(0.9, "probability of style mixing", low=0, high=1)
    ema_kimg: float = setting(10.0, "generator EMA half-life, thousands of images", low=0, high=1e6, open_low=True)
    ema_rampup: float = setting(0.05, "EMA ramp-up (0: none)", low=0, high=1e6)
    kimg: float = setting(200.0, "training length, thousands of images", low=0, high=1e6, open_low=True)
    snapshot_kimg: float = setting(10.0, "a snapshot every this many thousand images", low=0, high=1e6,
                                   open_low=True)
    dataset_size: int = setting(20000, "films rendered once and reused", low=1, high=10_000_000)
    kind_shares: tuple[float, ...] = setting(KIND_MIX, "shares of normal, cardiomegaly and opacity films "
                                             "drawn for training (the quality sets' mix)", low=0, high=1,
                                             rule=lambda v: len(v) == 3 and sum(v) > 0,
                                             expected="three shares (normal, cardiomegaly, opacity), not all 0")
    seed: int = setting(0, "seed of the films, the weights and every draw", low=0, high=MAX_SEED)
    source: str = setting("phantom", "where the training films come from", choices=sources.SOURCES)
    ct: str = setting("", "a CT folder (NIfTI volume or DICOM series, and labelmap) for --source drr; "
                          "empty: the shipped CT",
                      expected="a folder path")
    init: str = setting("", "a generator file of ours (or a shipped one's name: phantom, drr) to start from: its D "
                            "too when it holds one, as a shipped generator does; empty: new weights",
                        expected="a file path")
    phantom_version: int = setting(phantom.VERSION, "the phantoms the run learns; a new rendering is a new run",
                                   low=1, cli=False)
    condition: str = setting("none", "what G and D are told of each film: nothing, or its kind (normal, "
                             "cardiomegaly, opacity: a kind-conditional generator)", choices=("none", "kind"))
    kind_weight: float = setting(1.0, "with --condition kind: weight of the kind classification (AC-GAN) that D "
                                      "learns on real films and G's films must pass", low=0, high=1e3)
    drr_version: int = setting(sources.version("drr"), "the DRRs the run learns; a new rendering is a new run",
                               low=1, cli=False)

    validate = validate_settings

    def generator_kwargs(self) -> dict:
        classes = dict(c_dim=len(KINDS), c_shares=KIND_MIX) if self.condition == "kind" else {}
        return dict(img_resolution=self.resolution, img_channels=1, z_dim=self.z_dim, w_dim=self.w_dim,
                    mapping_layers=self.mapping_layers, channel_base=self.channel_base,
                    channel_max=self.channel_max, **classes)


# Settings that do not change what the network learns: they may differ on resume.
RESUME_FREE = ("kimg", "snapshot_kimg")


# Settings of the source a run does not use (a phantom run resumes after the DRRs change, and back).
OTHER_SOURCE = dict(phantom=("ct", "drr_version"), drr=("phantom_version",))


def _config_difference(a: dict, b: dict) -> dict:
    free = RESUME_FREE + OTHER_SOURCE[b.get("source", "phantom")]
    # runs from before these settings: phantoms, new weights, the default mix of kinds
    a = dict(dict(source="phantom", ct="", init="", kind_shares=KIND_MIX, condition="none",
                  kind_weight=1.0), **a)
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if k not in free and a.get(k) != b.get(k)}


def train(cfg: TrainConfig, run_dir, *, images: torch.Tensor | None = None, kinds: torch.Tensor | None = None,
          resume: bool = True, device: str | None = None, progress: bool = True, stop_after_kimg: float | None = None,
          threads: int | None = None, amp: bool | None = None, stop_after_s: float | None = None,
          channels_last: bool | None = None) -> Path:
    """Train (or resume) a StyleGAN2 on ``images`` [N, 1, R, R] in [-1, 1] (films of ``cfg.source``
    by default), with ``kinds`` [N] (indices into ``diseases.KINDS``) for ``condition="kind"``.

    ``stop_after_kimg`` / ``stop_after_s`` end this call early after so many images or seconds, with a
    snapshot (the run stays resumable), for budgeted sessions.
    ``threads``: CPU threads (None: torch's default; on a shared machine one thread per free core
    is faster than two fighting for one). ``amp``: bf16 autocast for G and D (None: on CUDA only;
    the mapping and w_avg stay fp32). ``channels_last``: G and D in the channels-last memory layout
    (None: on CPU only, where oneDNN's convolutions run it faster; the same arithmetic, so it may
    change between stretches of one run). A resumed run continues exactly as an uninterrupted one
    (every RNG state is in the snapshot). Returns the path of the EMA generator checkpoint.
    """
    cfg.validate()
    sources.check_films(cfg.source, cfg.ct or None)  # a missing CT folder is named before the run folder is made
    if cfg.init:
        _init_file(Path(cfg.init), cfg)  # and so is an --init file that cannot start this run
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r}; expected a positive integer")
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        with writer_lock(run_dir):  # one trainer per run folder; a dead one's temporaries are removed
            run = start_run(cfg, Path(run_dir), images=images, kinds=kinds, resume=resume, device=device, amp=amp,
                            progress=progress, channels_last=channels_last)
            return _loop(run, progress=progress, stop_after_kimg=stop_after_kimg, stop_after_s=stop_after_s)
    finally:
        torch.set_num_threads(before)


@dataclass
class Run:
    """A training run in memory: the networks, their optimisers, the data and every RNG, as a
    snapshot holds them (``state``: step, images seen, wall time, the snapshots' history)."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp: bool
    G: Generator
    D: Discriminator
    G_ema: Generator
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    images: torch.Tensor   # [N, 1, R, R] on the device
    kinds: torch.Tensor | None  # [N] kind indices on the device for a kind-conditional run, else None
    gen: torch.Generator   # draws data indices, z and mixing; the noise inputs use torch's global RNG
    state: dict


def start_run(cfg: TrainConfig, run_dir: Path, *, images=None, kinds=None, resume: bool = True, device=None,
              amp=None, progress=False, channels_last=None) -> Run:
    """New networks, or the run's snapshot when it has one (refused when its config differs)."""
    device = pick_device(device)
    snap_path = run_dir / "snapshot.pt"
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    channels_last = device.type == "cpu" if channels_last is None else channels_last
    layout = torch.channels_last if channels_last else torch.contiguous_format
    G = Generator(**cfg.generator_kwargs()).to(device, memory_format=layout)
    D = Discriminator(img_resolution=cfg.resolution, img_channels=1, channel_base=cfg.channel_base,
                      channel_max=cfg.channel_max, c_dim=G.c_dim).to(device, memory_format=layout)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    r1_ratio = cfg.r1_interval / (cfg.r1_interval + 1)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr * r1_ratio, betas=(0.0, 0.99 ** r1_ratio))
    state = dict(step=0, images_seen=0, wall_time=0.0, snapshots=[])
    snap = None
    if snap_path.exists():
        if not resume:
            raise FileExistsError(f"{snap_path} exists; resume it or choose another run directory")
        snap = read_checkpoint(snap_path)
        diff = _config_difference(snap["train_config"], asdict(cfg))
        if diff:
            raise ValueError(f"cannot resume {snap_path}: config differs (snapshot, requested): {diff}")
        for module, key in ((G, "G"), (D, "D"), (G_ema, "G_ema"), (opt_G, "opt_G"), (opt_D, "opt_D")):
            module.load_state_dict(snap[key])
        state = snap["state"]
    elif cfg.init:
        state["init"] = _start_from(Path(cfg.init), _init_file(Path(cfg.init), cfg), G, D, G_ema)

    if images is None:
        films = TruthDataset(cfg.dataset_size, cfg.resolution, seed=cfg.seed, weights=cfg.kind_shares,
                             source=cfg.source, ct=cfg.ct or None, progress=progress)
        images, kinds = films.images_tensor(), torch.tensor([KINDS.index(k) for k in films.kind])
    if cfg.condition == "kind":
        if kinds is None or kinds.shape != (len(images),) or kinds.min() < 0 or kinds.max() >= len(KINDS):
            raise ValueError(f"condition='kind' needs the kind of each of the {len(images)} films: indices into "
                             f"{KINDS}")
        kinds = kinds.to(device, torch.long)
    else:
        kinds = None
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1000003)
    if snap is not None:
        torch.set_rng_state(snap["rng_cpu"])  # the noise inputs
        gen.set_state(snap["rng_data"])
        if device.type == "cuda" and "rng_cuda" in snap:
            torch.cuda.set_rng_state(snap["rng_cuda"])
    return Run(cfg, run_dir, device, device.type == "cuda" if amp is None else amp, G, D, G_ema, opt_G, opt_D,
               images.to(device), kinds, gen, state)


def _init_file(path: Path, cfg: TrainConfig) -> dict:
    """The checkpoint ``--init`` names, refused unless it holds a generator of this run's shape."""
    data = read_checkpoint(path)
    if "G_ema" not in data or "config" not in data:
        raise ValueError(f"--init {path}: holds no generator (kind={data.get('kind')!r})")
    want = Generator(**cfg.generator_kwargs()).config
    if data["config"].get("c_dim") and "c_dim" not in want:
        raise ValueError(f"--init {path}: a generator conditional on {data['config']['c_dim']} classes; "
                         "expected --condition kind with it")
    # a conditional run may start from an unconditional generator (``_conditional_from``); the shares of
    # kinds a generator saw are not part of its shape
    free = ("c_shares",) + (("c_dim",) if "c_dim" not in data["config"] else ())
    diff = {k: (data["config"].get(k), want.get(k)) for k in set(want) | set(data["config"])
            if k not in free and data["config"].get(k) != want.get(k)}
    if diff:
        raise ValueError(f"--init {path}: its generator differs from this run's (file, run): {diff}")
    return data


def _start_from(path: Path, data: dict, G: Generator, D: Discriminator, G_ema: Generator) -> dict:
    """G and G_ema from the generator in ``data`` (read from ``path``), and D when it holds one (a
    shipped generator does; without it D starts new and catches up with G). Returns what the run's
    card says of it."""
    try:
        for module, sd in ((G, data["G_ema"]), (G_ema, data["G_ema"])) + (((D, data["D"]),) if "D" in data else ()):
            if module.c_dim:
                sd = _conditional_from(module, sd)
            module.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"--init {path}: weights do not fit this run's networks ({reason(e, 200)})") from None
    return dict(file=str(path), kimg=data.get("model_card", {}).get("kimg"), discriminator="D" in data)


# The weights a conditional G or D has and an unconditional one lacks (name prefixes).
CLASS_WEIGHTS = ("mapping.embed.", "embed", "classify")


def _conditional_from(module: Generator | Discriminator, sd: dict) -> dict:
    """An unconditional G's or D's weights ``sd`` for the conditional ``module``, which then computes
    what the unconditional one did: the class embedding enters G's first mapping layer through zero
    weights (the stored weights of z rescaled, as that layer's equalised gain falls with its width),
    and D's projection embedding and kind head stay at their initial zero. (A conditional D from before
    the kind head gets one the same way.)"""
    sd = dict(sd)
    own = module.state_dict()
    old = sd.get("mapping.fc0.weight")
    if old is not None and old.shape != own["mapping.fc0.weight"].shape:
        new = torch.zeros_like(own["mapping.fc0.weight"])
        new[:, :old.shape[1]] = old * math.sqrt(new.shape[1] / old.shape[1])
        sd["mapping.fc0.weight"] = new
    sd.update({k: v for k, v in own.items() if k.startswith(CLASS_WEIGHTS) and k not in sd})
    return sd


def _generated(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n images of G (not the EMA) with style mixing, and their classes: [n, 1, R, R], [n] (None
    when unconditional)."""
    G, cfg, gen, device = run.G, run.cfg, run.gen, run.device
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    c = None if run.kinds is None else run.kinds[torch.randint(len(run.kinds), [n], generator=gen).to(device)]
    with torch.autocast(device.type, enabled=False):  # mapping and w_avg stay fp32
        ws = G.mapping(z, c, update_w_avg=True)
        if cfg.style_mixing > 0 and torch.rand([], generator=gen) < cfg.style_mixing:
            cut = int(torch.randint(1, G.num_ws, [], generator=gen))
            ws2 = G.mapping(torch.randn(n, G.z_dim, generator=gen).to(device), c)
            ws = torch.cat([ws[:, :cut], ws2[:, cut:]], 1)
    return G.synthesis(ws, noise_mode="random"), c


def _loss(D: Discriminator, images: torch.Tensor, classes: torch.Tensor | None, *, real: bool,
          kind_weight: float) -> torch.Tensor:
    """The logistic loss of D's verdict on ``images`` [B, 1, R, R] as ``real`` or not (non-saturating
    for G), plus, for a conditional D, ``kind_weight`` times the cross-entropy of its kind head against
    ``classes`` [B]."""
    if classes is None or not kind_weight:
        logits = D(images, classes)
        return F.softplus(-logits if real else logits).mean()
    logits, kinds = D(images, classes, kind_logits=True)
    return F.softplus(-logits if real else logits).mean() + kind_weight * F.cross_entropy(kinds.float(), classes)


def training_step(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of G, one of D, lazy R1 when due, the EMA update. Returns (loss_G, loss_D), unread
    (reading them waits for the GPU)."""
    cfg, G, D, device, amp = run.cfg, run.G, run.D, run.device, run.amp
    idx = torch.randint(len(run.images), [cfg.batch], generator=run.gen)
    real = run.images[idx.to(device)]
    real_c = None if run.kinds is None else run.kinds[idx.to(device)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        # Generator step: non-saturating loss, softplus(-D(G(z))).
        G.requires_grad_(True), D.requires_grad_(False)
        loss_G = _loss(D, *_generated(run, cfg.batch), real=True, kind_weight=cfg.kind_weight)
    run.opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    run.opt_G.step()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        # Discriminator step: softplus(D(fake)) + softplus(-D(real)).
        G.requires_grad_(False), D.requires_grad_(True)
        with torch.no_grad():
            fake, fake_c = _generated(run, cfg.batch)
        loss_D = (_loss(D, fake, fake_c, real=False, kind_weight=0.0)
                  + _loss(D, real, real_c, real=True, kind_weight=cfg.kind_weight))
    run.opt_D.zero_grad(set_to_none=True)
    loss_D.backward()
    run.opt_D.step()
    if run.state["step"] % cfg.r1_interval == 0:
        # Lazy R1 on reals, in full precision.
        real_r1 = real.detach().requires_grad_(True)
        grad, = torch.autograd.grad(D(real_r1, real_c).sum(), real_r1, create_graph=True)
        loss_r1 = grad.square().sum([1, 2, 3]).mean() * (cfg.r1_gamma / 2) * cfg.r1_interval
        run.opt_D.zero_grad(set_to_none=True)
        loss_r1.backward()
        run.opt_D.step()
    # EMA of the generator weights (buffers such as w_avg are copied); one kernel per list on GPU.
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup:
        ema_nimg = min(ema_nimg, run.state["images_seen"] * cfg.ema_rampup)
    beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
    with torch.no_grad():
        torch._foreach_lerp_(list(run.G_ema.parameters()), list(G.parameters()), 1.0 - beta)
        torch._foreach_copy_(list(run.G_ema.buffers()), list(G.buffers()))
    run.state["step"] += 1
    run.state["images_seen"] += cfg.batch
    return loss_G, loss_D


def write_snapshot(run: Run, losses: tuple[float, float]) -> float:
    """Record a snapshot in the run's history and write the sample grid, ``snapshot.pt`` and
    ``generator.pt`` as one set (``io.held_set``): a failed write (a full disk) leaves none of them,
    and a kill while they are moved in is finished by the next start. Returns the kimg reached."""
    state = run.state
    kimg = state["images_seen"] / 1000
    state["snapshots"].append(dict(kimg=kimg, wall_time=state["wall_time"], loss_G=losses[0], loss_D=losses[1],
                                   machine=machine_description()))
    G_cpu = copy.deepcopy(run.G_ema).float().cpu()
    samples = f"samples_{kimg:09.3f}kimg.png"
    with held_set(run.run_dir, (samples, "snapshot.pt", "generator.pt"), overwrite=True) as staging:
        _write_snapshot_files(run, staging, samples, G_cpu, kimg)
    return kimg


def _write_snapshot_files(run: Run, folder: Path, samples: str, G_cpu: Generator, kimg: float) -> None:
    """The sample grid, the full training state and the EMA generator of a snapshot, into ``folder``."""
    cfg, state = run.cfg, run.state
    save_png(folder / samples, sample_grid(G_cpu, range(32), label=None))
    card = dict(training_data=f"{cfg.dataset_size} {sources.describe(cfg.source, cfg.ct or None)}",
                kimg=kimg, wall_time_s=round(state["wall_time"], 1), machine=machine_description(),
                threads=torch.get_num_threads(), bf16=bool(run.amp), train_config=asdict(cfg))
    if "init" in state:  # the run continues another generator: its kimg count from there
        card["init"] = state["init"]
    cuda_rng = {"rng_cuda": torch.cuda.get_rng_state()} if run.device.type == "cuda" else {}
    save_checkpoint(folder / "snapshot.pt",
                    dict(kind="training", config=run.G.config, train_config=asdict(cfg), G=run.G.state_dict(),
                         D=run.D.state_dict(), G_ema=run.G_ema.state_dict(), opt_G=run.opt_G.state_dict(),
                         opt_D=run.opt_D.state_dict(), state=state, rng_cpu=torch.get_rng_state(),
                         rng_data=run.gen.get_state(), model_card=card, **cuda_rng))
    save_checkpoint(folder / "generator.pt", {"kind": "generator", "config": G_cpu.config,
                                              "G_ema": G_cpu.state_dict(), "model_card": card})


def _loop(run: Run, *, progress: bool, stop_after_kimg, stop_after_s) -> Path:
    cfg, state = run.cfg, run.state
    total = int(cfg.kimg * 1000)
    stop_at = total if stop_after_kimg is None else min(total, state["images_seen"] + int(stop_after_kimg * 1000))
    every = int(cfg.snapshot_kimg * 1000)
    next_snap = (state["images_seen"] // every + 1) * every
    bar = tqdm(total=total, initial=state["images_seen"], unit="img", disable=not progress, desc="train")
    t0 = t_call = time.time()
    kimg_call = state["images_seen"] / 1000
    while state["images_seen"] < stop_at:
        loss_G, loss_D = training_step(run)
        bar.update(cfg.batch)
        out_of_time = stop_after_s is not None and time.time() - t_call >= stop_after_s
        snapshot_due = state["images_seen"] >= next_snap or state["images_seen"] >= stop_at or out_of_time
        if state["step"] % 16 == 0 or snapshot_due:  # reading the losses waits for the GPU: not every step
            losses = loss_G.item(), loss_D.item()
            bar.set_postfix(G=f"{losses[0]:.3f}", D=f"{losses[1]:.3f}")
            if not all(map(math.isfinite, losses)):
                raise FloatingPointError(f"training diverged by step {state['step']}: "
                                         f"loss_G={losses[0]}, loss_D={losses[1]}")
        if snapshot_due:
            next_snap += every
            state["wall_time"] += time.time() - t0
            t0 = time.time()
            kimg = write_snapshot(run, losses)
            rate = (kimg - kimg_call) / max(time.time() - t_call, 1e-9) * 3600
            tqdm.write(f"snapshot {kimg:.1f} kimg: loss_G {losses[0]:.3f}, loss_D {losses[1]:.3f}, "
                       f"{rate:.0f} kimg/h in this call, {state['wall_time'] / 3600:.2f} h in all")
            if out_of_time:
                break
    bar.close()
    out = run.run_dir / "generator.pt"
    if not out.is_file():
        raise FileNotFoundError(f"training in {run.run_dir} ended before writing {out}")
    return out
