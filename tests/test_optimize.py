import math
from dataclasses import replace

import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.imaging.masks import Box
from cxr_workbench.method.optimize import (
    LOConfig,
    interpolate_points,
    optimize_trajectory,
    run_method,
    translate_along,
)
from cxr_workbench.model.latents import reference_latents


@pytest.fixture(scope="module")
def G():
    return tiny_generator(z_dim=16, w_dim=16, channel_max=32)


BOX = Box(4, 4, 12, 12, resolution=16)
FAST = LOConfig(n=4, max_steps=40, min_steps=10, lr=0.02, layers=(0, 1, 2))


def test_shapes_layers_and_loss_decrease(G):
    w = reference_latents(G, [0, 1])
    traj = optimize_trajectory(G, w, BOX, config=FAST, progress=False)
    assert traj.points.shape == (2, 4, G.num_ws, 16)
    assert traj.images.shape == (2, 4, 1, 16, 16)
    assert traj.sequence(1).shape == (5, 1, 16, 16)
    # layers outside (0, 1, 2) stay at the reference
    torch.testing.assert_close(traj.points[:, :, 3:], w[:, None, 3:].expand(-1, 4, -1, -1))
    assert (traj.points[:, :, :3] - w[:, None, :3]).abs().amax() > 0
    h = traj.history["total"]
    assert len(h) == traj.steps and h[-1] < h[0]
    assert traj.status in ("converged", "max_steps")


def test_direction_keeps_points_in_the_cone(G):
    w = reference_latents(G, [3])
    u = torch.randn(16)
    cfg = replace(FAST, theta_deg=20.0, delta=10.0, max_steps=60)
    traj = optimize_trajectory(G, w, BOX, u=u, config=cfg, progress=False)
    v = (traj.points[0, :, :3] - w[0, :3]).reshape(4, -1)
    u_flat = (u / u.norm()).repeat(3) / math.sqrt(3)
    angles = torch.rad2deg(torch.arccos((v / v.norm(dim=1, keepdim=True)) @ u_flat))
    assert (angles < 25).all(), angles


def test_reproducible_for_a_seed(G):
    w = reference_latents(G, [5])
    a = optimize_trajectory(G, w, BOX, config=FAST, progress=False)
    b = optimize_trajectory(G, w, BOX, config=FAST, progress=False)
    torch.testing.assert_close(a.points, b.points)


def test_callback_and_stop(G):
    seen = []
    traj = optimize_trajectory(G, reference_latents(G, [0]), BOX, config=FAST, progress=False,
                               callback=lambda step, info: seen.append(info["images"].shape) or step >= 5,
                               callback_every=5)
    assert traj.status == "stopped" and traj.steps == 6 and seen == [(1, 4, 1, 16, 16)] * 2


def test_returns_each_references_best_points(G):
    # Batched objective per reference == its lowest total seen during the run (R = 1: the history).
    from cxr_workbench.method.optimize import evaluate_objective
    w = reference_latents(G, [2])
    traj = optimize_trajectory(G, w, BOX, config=FAST, progress=False)
    best = evaluate_objective(G, traj, BOX, None, FAST.layers)["total"]
    assert best == pytest.approx(min(traj.history["total"]), rel=1e-4)


def test_plateau_drops_the_learning_rate_before_stopping(G):
    w = reference_latents(G, [0, 1])
    cfg = replace(FAST, max_steps=400, window=5, tol=0.05)
    stop = optimize_trajectory(G, w, BOX, config=replace(cfg, lr_drops=0), progress=False)
    drop = optimize_trajectory(G, w, BOX, config=replace(cfg, lr_drops=2), progress=False)
    assert stop.status == drop.status == "converged"
    assert drop.steps > stop.steps  # the first plateau lowers lr and goes on
    assert drop.history["total"][:stop.steps] == stop.history["total"]  # same run until then
    assert min(drop.history["total"]) <= min(stop.history["total"])


def test_linear_translation(G):
    w = reference_latents(G, [0])
    u = torch.zeros(16)
    u[3] = 2.0
    traj = translate_along(G, w, u, FAST)
    step = traj.points[0, :, 0] - w[0, 0]
    torch.testing.assert_close(step[:, 3], torch.arange(1, 5.0) * FAST.sigma)
    torch.testing.assert_close(traj.points[0, :, 5], w[0, 5].expand(4, -1))


class NaNAfter(torch.nn.Module):
    """A generator whose images turn to NaN after a few calls."""

    def __init__(self, G, calls):
        super().__init__()
        self.G, self.calls = G, calls
        for k in ("num_ws", "w_dim", "z_dim", "img_resolution", "img_channels", "mapping"):
            setattr(self, k, getattr(G, k))

    @property
    def w_avg(self):
        return self.G.w_avg

    def synthesis(self, ws):
        self.calls -= 1
        img = self.G.synthesis(ws)
        return img * float("nan") if self.calls < 0 else img


def test_nan_stops_and_keeps_last_good_points(G):
    bad = NaNAfter(G, calls=8)  # 1 call for the reference, then 7 good steps
    with pytest.warns(UserWarning, match="non-finite at step 7"):
        traj = optimize_trajectory(bad, reference_latents(G, [0]), BOX, config=FAST, progress=False)
    assert traj.status == "nan" and torch.isfinite(traj.points).all()
    assert "kept each reference's best points" in traj.message


def test_nan_from_the_start_says_there_are_no_points(G):
    with pytest.warns(UserWarning, match="no finite step"):
        traj = optimize_trajectory(NaNAfter(G, calls=1), reference_latents(G, [0, 1]), BOX, config=FAST,
                                   progress=False)
    assert traj.status == "nan" and "references [0, 1] had no finite step" in traj.message


@pytest.mark.parametrize("kw,match", [
    (dict(n=2), "n=2"), (dict(sigma=0.0), "sigma=0.0"), (dict(theta_deg=180.0), "theta_deg=180.0"),
    (dict(theta_deg=0.0), "theta_deg=0.0"), (dict(distance="l3"), "distance='l3'"), (dict(layers=(0, 99)), "layers"),
    (dict(lr_drop=0.0), "lr_drop=0.0"), (dict(lr_drops=-1), "lr_drops=-1"),
    (dict(sigma=float("inf")), "sigma=inf"), (dict(sigma=1e30), "sigma=1e"), (dict(c=float("inf")), "c=inf"),
    (dict(lr=float("nan")), "lr=nan"), (dict(schedule="linear"), "schedule='linear'"),
    (dict(angle_form="cone"), "angle_form='cone'"), (dict(n=3.5), "n=3.5"), (dict(max_steps=True), "max_steps=True"),
    (dict(coarse=0), "coarse=0"), (dict(n=12, coarse=5), "coarse=5 with n=12"),
    (dict(n=6, coarse=3), "coarse=3 with n=6"),
])
def test_bad_config(G, kw, match):
    with pytest.raises(ValueError, match=match):
        optimize_trajectory(G, reference_latents(G, [0]), BOX, config=LOConfig(**kw), progress=False)


def test_bad_inputs(G):
    w = reference_latents(G, [0])
    for u, match in ((torch.zeros(16), "zero"), (torch.ones(5), "5 values"),
                     (torch.full((16,), float("nan")), "non-finite")):
        with pytest.raises(ValueError, match=match):
            optimize_trajectory(G, w, BOX, u=u, config=FAST, progress=False)
    with pytest.raises(ValueError, match="w_ref has shape"):
        optimize_trajectory(G, torch.zeros(1, 3, 16), BOX, config=FAST, progress=False)
    with pytest.raises(ValueError, match="box is for 64 px"):
        optimize_trajectory(G, w, Box(4, 4, 20, 20, 64), config=FAST, progress=False)
    with pytest.raises(ValueError, match="needs a direction"):
        run_method(G, "linear", w, BOX)


def test_references_that_do_not_fit_memory_run_in_chunks(G):
    from cxr_workbench.method.optimize import activation_bytes, references_per_loop
    w = reference_latents(G, [0, 1, 2])
    box, u = Box(4, 4, 12, 12, 16), torch.ones(G.w_dim)
    per_image = activation_bytes(G)
    assert references_per_loop(G, FAST.n, 2 * FAST.n * per_image) == 2 and references_per_loop(G, FAST.n, 1) == 1
    whole = run_method(G, "lo+dir", w, box, u=u, config=FAST, progress=False)
    chunked = run_method(G, "lo+dir", w, box, u=u, config=FAST, progress=False, memory=FAST.n * per_image)
    alone = [optimize_trajectory(G, w[i:i + 1], box, u=u, config=FAST, progress=False) for i in range(3)]
    assert chunked.points.shape == whole.points.shape and chunked.images.shape == whole.images.shape
    for i, t in enumerate(alone):  # each chunk converges on its own, as a separate run would
        torch.testing.assert_close(chunked.points[i], t.points[0])
        torch.testing.assert_close(chunked.reference_images[i], t.reference_images[0])
    assert chunked.steps == max(t.steps for t in alone)


def test_a_box_and_a_direction_per_reference(G):
    w = reference_latents(G, [0, 1])
    u = torch.ones(G.w_dim)
    shared = optimize_trajectory(G, w, BOX, u=u, config=FAST, progress=False)
    listed = run_method(G, "lo+dir", w, [BOX, BOX], u=[u, u], config=FAST, progress=False)
    torch.testing.assert_close(listed.points, shared.points)  # a list of the same is the shared case
    other_box, other_u = Box(0, 8, 8, 16, 16), torch.linspace(-1, 1, G.w_dim)
    mixed = run_method(G, "lo+dir", w, [BOX, other_box], u=[u, other_u], config=FAST, progress=False)
    assert (mixed.points[1] - shared.points[1]).abs().amax() > 1e-3  # the second reference has its own edit
    # the first reference's steps follow its own u: its points lie in the cone around u, not around other_u
    steps = (mixed.points[0, :, :3] - w[0, None, :3]).flatten(1)
    cos_u = torch.nn.functional.cosine_similarity(steps, u.repeat(3)[None], dim=1)
    cos_other = torch.nn.functional.cosine_similarity(steps, other_u.repeat(3)[None], dim=1)
    assert (cos_u > cos_other).all()
    lin = run_method(G, "linear", w, [BOX, other_box], u=[u, other_u], config=FAST)
    torch.testing.assert_close(lin.points[1], translate_along(G, w[1:], other_u, FAST).points[0])
    with pytest.raises(ValueError, match="3 directions for 2 references"):
        run_method(G, "lo+dir", w, BOX, u=[u, u, u], config=FAST, progress=False)
    with pytest.raises(ValueError, match="3 boxes for 2 references"):
        run_method(G, "lo+dir", w, [BOX] * 3, u=u, config=FAST, progress=False)


def test_interpolated_points_lie_on_the_path_through_the_optimised_ones():
    w_ref = torch.zeros(1, 2, 3)
    points = torch.stack([torch.full((2, 3), 3.0), torch.full((2, 3), 9.0)])[None]   # [1, 2, 2, 3]
    out = interpolate_points(w_ref, points, 3)
    assert out.shape == (1, 6, 2, 3)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0, 9.0]))


def test_coarse_optimises_every_kth_point_and_interpolates_the_rest(G):
    w = reference_latents(G, [2])
    u = torch.randn(16)
    cfg = replace(FAST, n=9, coarse=3, max_steps=20)
    traj = optimize_trajectory(G, w, BOX, u=u, config=cfg, progress=False)
    rough = optimize_trajectory(G, w, BOX, u=u, config=replace(cfg, n=3, sigma=3 * cfg.sigma, coarse=1), progress=False)
    assert traj.points.shape == (1, 9, G.num_ws, 16) and traj.images.shape == (1, 9, 1, 16, 16)
    assert traj.config == cfg and traj.steps == rough.steps
    torch.testing.assert_close(traj.points[:, 2::3], rough.points)   # the optimised points, as a run of 3 finds them
    torch.testing.assert_close(traj.points[:, 0], w + (rough.points[:, 0] - w) / 3)
    torch.testing.assert_close(traj.images, G.synthesis(traj.points[0]).detach()[None], atol=1e-5, rtol=1e-4)
