import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.imaging.masks import Box
from cxr_workbench.method.directions import choose_direction, resolve_direction, save_direction, score_directions
from cxr_workbench.method.pca import (
    WPCA,
    box_change,
    compute_pca,
    direction_share,
    direction_std,
    ganspace_direction,
    inside_share,
    pc_strip,
    rank_pcs_for_box,
)
from cxr_workbench.method.searches import (
    JacobianSearch,
    LocalSearch,
    box_grams,
    jacobian_direction,
    local_direction,
    sefa_directions,
)
from cxr_workbench.model.latents import apply_direction, parse_range, reference_latents

BOX = Box(0, 0, 8, 8, resolution=16)


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


def test_pca_orthonormal_sorted_cached(G, tmp_path):
    pca = compute_pca(G, n_samples=3000, cache_dir=tmp_path)
    C = pca.components
    torch.testing.assert_close(C @ C.T, torch.eye(8), atol=1e-4, rtol=0)
    assert (pca.std[:-1] >= pca.std[1:]).all()
    assert len(list(tmp_path.glob("pca_*.pt"))) == 1
    again = compute_pca(G, n_samples=3000, cache_dir=tmp_path)
    torch.testing.assert_close(again.components, C)
    inc = compute_pca(G, n_samples=3000, incremental=True, batch=500)
    cos = (inc.components[:3] * C[:3]).sum(1).abs()
    assert (cos > 0.99).all(), cos


class BoxOrOutside(torch.nn.Module):
    """w[0] paints the top-left quarter, w[1] the rest (a perfectly disentangled toy generator)."""
    num_ws, w_dim, img_resolution, img_channels = 2, 4, 16, 1

    def synthesis(self, ws):
        m = BOX.mask()
        return (ws[:, 0, 0, None, None] * m + ws[:, 0, 1, None, None] * (1 - m))[:, None]


def test_ranking_finds_the_local_pc():
    eye = torch.eye(4)
    pca = WPCA(mean=torch.zeros(4), components=eye[[1, 0, 2, 3]], std=torch.ones(4),
               explained_variance_ratio=torch.full((4,), 0.25), n_samples=0, seed=0, generator_key="toy")
    rows = rank_pcs_for_box(BoxOrOutside(), torch.zeros(2, 2, 4), pca, BOX, n_pcs=4)
    assert rows[0]["pc"] == 1 and rows[0]["inside_share"] == pytest.approx(1.0)
    assert rows[0]["lift"] == pytest.approx(4.0) and rows[0]["box_change"] == pytest.approx(4.0)
    assert rows[0]["brightens"] == 1
    assert {r["pc"]: r["inside_share"] for r in rows}[0] == pytest.approx(0.0)


def test_apply_direction_and_strip(G):
    w = torch.zeros(1, G.num_ws, 8)
    u = torch.zeros(8)
    u[2] = 1
    ws = apply_direction(w, u, [-1.0, 2.0], layers=[0, 3])
    assert ws.shape == (1, 2, G.num_ws, 8)
    assert ws[0, 1, 3, 2] == 2.0 and ws[0, 0, 0, 2] == -1.0 and ws[0, 1, 1].abs().sum() == 0
    pca = compute_pca(G, n_samples=500)
    strip = pc_strip(G, G.mapping(torch.randn(1, 8))[0], pca, 0, sigmas=(-2, 0, 2))
    assert strip.shape == (3, 1, 16, 16)
    assert (strip[0] - strip[2]).abs().max() > 0


def test_direction_specs(tmp_path, G):
    pca = compute_pca(G, n_samples=500)
    u, desc = resolve_direction("pc:2:-1", pca, 8)
    torch.testing.assert_close(u, -pca.components[2])
    save_direction(tmp_path / "u.pt", torch.arange(8.0), source="test")
    u2, desc2 = resolve_direction(str(tmp_path / "u.pt"), None, 8)
    assert desc2 == "test" and u2.norm() == pytest.approx(1.0)
    np.save(tmp_path / "u.npy", np.ones(8))
    assert resolve_direction(str(tmp_path / "u.npy"), None, 8)[0].norm() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pc=40"):
        resolve_direction("pc:40", pca, 8)
    np.save(tmp_path / "u9.npy", np.ones(9))
    with pytest.raises(ValueError, match="9 values"):
        resolve_direction(str(tmp_path / "u9.npy"), None, 8)


@pytest.mark.parametrize("text", ["a-b", "5-2", "2-", "-1", "", "1,,2", "0-2000000"])
def test_one_range_parser_for_seeds_and_layers(text):
    assert parse_range("0-2,5", "layers") == [0, 1, 2, 5]
    with pytest.raises(ValueError, match=re.escape(f"layers={text!r}")):
        parse_range(text, "layers")


def test_local_direction_is_more_local_than_any_pc_and_cached(G, tmp_path, monkeypatch):
    pca = compute_pca(G, n_samples=2000)
    search = LocalSearch(n_pcs=6, seeds=tuple(range(4)), steps=25, lr=0.1)
    u, share = local_direction(G, pca, BOX, search=search, cache_dir=tmp_path)
    assert abs(float(u.norm()) - 1) < 1e-5
    # u lies in the span of the first 6 PCs, and its share is what inside_share measures.
    assert float((pca.components[6:] @ u).norm()) < 1e-4
    w_refs = reference_latents(G, range(4))
    with torch.no_grad():
        again = float(inside_share(box_change(G, w_refs, u, 2 * direction_std(pca, u)), BOX.mask()).mean())
    assert abs(again - share) < 1e-5
    best_pc = rank_pcs_for_box(G, w_refs, pca, BOX, n_pcs=6)[0]["inside_share"]
    assert share > best_pc + 0.01, (share, best_pc)
    # The second call reads the cache instead of searching again.
    monkeypatch.setattr("cxr_workbench.method.pca.rank_pcs_for_box",
                        lambda *a, **k: pytest.fail("searched again"))
    u2, share2 = local_direction(G, pca, BOX, search=search, cache_dir=tmp_path)
    torch.testing.assert_close(u2, u)
    assert share2 == share and len(list(tmp_path.glob("local_*.pt"))) == 1


@pytest.mark.parametrize("spec", ["local", "local+", "jacobian", "jacobian+", "sefa", "ganspace"])
def test_local_spec_is_signed_for_the_disease(G, tmp_path, spec):
    pca = compute_pca(G, n_samples=2000)
    chosen = choose_direction(G, pca, BOX, spec, "cardiomegaly", cache_dir=tmp_path)
    u, desc = chosen.u, chosen.description
    assert desc.startswith(f"{spec}:") and u.ndim == (2 if spec.endswith("+") or spec == "ganspace" else 1)
    with torch.no_grad():
        diff = box_change(G, reference_latents(G, range(8)), u, 1.0)
    assert float((diff * BOX.mask()).sum()) > 0  # cardiomegaly brightens its box
    opacity_u = choose_direction(G, pca, BOX, spec, "opacity", cache_dir=tmp_path).u
    torch.testing.assert_close(opacity_u, u)  # both whiten the box: the same sign


def test_a_w_direction_repeated_on_every_layer_is_the_same_edit(G, tmp_path):
    """W+ directions [num_ws, w_dim] generalise W ones: the same rows give the same strips, std,
    box change, trajectory, and file round trip."""
    from cxr_workbench.method.optimize import LOConfig, run_method
    from cxr_workbench.model.latents import check_direction, direction_on_layers
    pca = compute_pca(G, n_samples=2000)
    u = pca.direction(1)
    plus = check_direction(3 * u.repeat(G.num_ws, 1), G.w_dim, G.num_ws)  # rows scaled back to unit
    torch.testing.assert_close(plus, u.repeat(G.num_ws, 1))
    torch.testing.assert_close(direction_std(pca, plus), direction_std(pca, u))
    torch.testing.assert_close(direction_on_layers(plus, [0, 2]), direction_on_layers(u, [0, 2]))
    w = reference_latents(G, range(3))
    torch.testing.assert_close(apply_direction(w, plus, [1.0, -2.0], [1]), apply_direction(w, u, [1.0, -2.0], [1]))
    torch.testing.assert_close(box_change(G, w, plus, 1.5), box_change(G, w, u, 1.5))
    cfg = LOConfig(n=3, max_steps=4, layers=(0, 1))
    a, b = (run_method(G, "lo+dir", w[:1], BOX, u=d, config=cfg) for d in (u, plus))
    torch.testing.assert_close(a.points, b.points)
    # Zero rows stay zero; a direction zero on the moving layers is refused.
    only0 = torch.zeros(G.num_ws, G.w_dim)
    only0[0] = u
    with pytest.raises(ValueError, match="zero on layers"):
        direction_on_layers(check_direction(only0, G.w_dim, G.num_ws), [1, 2])
    with pytest.raises(ValueError, match=r"W\) or \["):
        check_direction(torch.ones(2, G.w_dim), G.w_dim, G.num_ws)
    save_direction(tmp_path / "plus.pt", only0, source="layer 0")
    back, desc = resolve_direction(str(tmp_path / "plus.pt"), None, G.w_dim, G.num_ws)
    torch.testing.assert_close(back, only0)
    assert desc == "layer 0"
    with pytest.raises(ValueError, match="direction file"):  # a W+ file where only W is accepted
        resolve_direction(str(tmp_path / "plus.pt"), None, G.w_dim)


def test_local_plus_has_a_row_per_moving_layer_and_beats_local(G, tmp_path):
    pca = compute_pca(G, n_samples=2000)
    layers = [0, 1, 2]
    w_search = LocalSearch(n_pcs=6, seeds=tuple(range(4)), steps=25, lr=0.1)
    plus_search = LocalSearch(n_pcs=6, seeds=tuple(range(4)), steps=25, lr=0.1, space="w+")
    u, share = local_direction(G, pca, BOX, layers=layers, search=w_search)
    plus, plus_share = local_direction(G, pca, BOX, layers=layers, search=plus_search, cache_dir=tmp_path)
    assert plus.shape == (G.num_ws, G.w_dim)
    assert float(plus[3:].abs().max()) == 0
    assert float(plus[layers].norm(dim=1).square().mean()) == pytest.approx(1, abs=1e-5)
    assert float((pca.components[6:] @ plus.T).norm()) < 1e-4  # each row in the span of the first 6 PCs
    w_refs = reference_latents(G, range(4))
    with torch.no_grad():
        change = box_change(G, w_refs, plus, 2 * direction_std(pca, plus), layers)
        again = float(inside_share(change, BOX.mask()).mean())
    assert abs(again - plus_share) < 1e-5
    assert plus_share > share, (plus_share, share)  # W is the special case of equal rows
    with pytest.raises(ValueError, match="space='z'"):
        local_direction(G, pca, BOX, search=LocalSearch(space="z"))


def test_box_grams_are_the_jacobians_grams(G):
    """Central differences against autograd's Jacobian, W and W+ alike, on two references."""
    w_refs = reference_latents(G, range(2))
    mask = BOX.mask()
    layers = [1, 2]
    for space in ("w", "w+"):
        gram_in, gram_out = box_grams(G, w_refs, mask, layers=layers, space=space, step=1e-3, chunk=5)
        expected_in, expected_out = 0, 0
        for w in w_refs:
            def image(v, w=w, space=space):
                d = torch.zeros_like(w)
                d[layers] = v.reshape(len(layers), -1) if space == "w+" else v
                return G.synthesis((w + d)[None])[0].mean(0).flatten()
            P = G.w_dim * (len(layers) if space == "w+" else 1)
            J = torch.autograd.functional.jacobian(image, torch.zeros(P)).double()
            inside = mask.flatten().bool()
            expected_in = expected_in + J[inside].T @ J[inside]
            expected_out = expected_out + J[~inside].T @ J[~inside]
        torch.testing.assert_close(gram_in, expected_in, rtol=2e-3, atol=2e-3 * float(expected_in.abs().max()))
        torch.testing.assert_close(gram_out, expected_out, rtol=2e-3, atol=2e-3 * float(expected_out.abs().max()))


def test_jacobian_direction_maximises_the_inside_energy_ratio_and_is_cached(G, tmp_path, monkeypatch):
    search = JacobianSearch(seeds=(0, 1, 2), ridge=1e-3)
    pca = compute_pca(G, n_samples=2000)
    u = jacobian_direction(G, pca, BOX, search=search, cache_dir=tmp_path)
    assert u.shape == (G.w_dim,) and abs(float(u.norm()) - 1) < 1e-5
    w_refs = reference_latents(G, (0, 1, 2))
    gram_in, gram_out = box_grams(G, w_refs, BOX.mask(), step=search.step)
    ridge = search.ridge * float(torch.trace(gram_out)) / len(gram_out)

    def ratio(v):
        v = v.double()
        return float(v @ gram_in @ v / (v @ gram_out @ v + ridge * v @ v))

    # The generalised eigenvector beats every PC and 200 random directions on the quotient it maximises
    others = list(pca.components) + list(torch.randn(200, G.w_dim, generator=torch.Generator().manual_seed(0)))
    assert ratio(u) >= max(ratio(v) for v in others) * (1 - 1e-6)
    # and moves more of its (finite) change inside the box than the most local PC
    with torch.no_grad():
        share = float(inside_share(box_change(G, w_refs, u, 0.5), BOX.mask()).mean())
    best_pc = max(float(inside_share(box_change(G, w_refs, v, 0.5), BOX.mask()).mean()) for v in pca.components)
    assert share > best_pc, (share, best_pc)
    # Of all the eigenvectors as candidates, one with the largest finite inside share: a generalized
    # eigenvector, its quotient no larger than the top one's, its share at least the top one's
    several = jacobian_direction(G, pca, BOX, search=replace(search, candidates=G.w_dim)).double()
    lhs, rhs = gram_in @ several, (gram_out + ridge * torch.eye(len(gram_out), dtype=torch.float64)) @ several
    torch.testing.assert_close(lhs, float(several @ lhs / (several @ rhs)) * rhs, rtol=1e-3,
                               atol=1e-3 * float(lhs.abs().max()))
    assert ratio(several) <= ratio(u) * (1 + 1e-6)
    several = several.float()
    with torch.no_grad():
        shares = [float(direction_share(G, w_refs, pca, v, BOX.mask(), 2.0)) for v in (u, several)]
    assert shares[1] >= shares[0] - 1e-6
    plus = jacobian_direction(G, pca, BOX, layers=[0, 1], search=JacobianSearch(seeds=(0, 1), space="w+"))
    assert plus.shape == (G.num_ws, G.w_dim) and float(plus[2:].abs().sum()) == 0
    monkeypatch.setattr("cxr_workbench.method.searches.box_grams", lambda *a, **k: pytest.fail("computed again"))
    torch.testing.assert_close(jacobian_direction(G, pca, BOX, search=search, cache_dir=tmp_path), u)


def test_sefa_directions_are_the_eigenvectors_of_the_style_weights(G):
    directions = sefa_directions(G, layers=[0, 1, 2], k=4)
    assert directions.shape == (4, G.w_dim)
    torch.testing.assert_close(directions @ directions.T, torch.eye(4), atol=1e-5, rtol=0)
    A = torch.cat([G.synthesis.b4.conv1.affine.weight, G.synthesis.b8.conv0.affine.weight,
                   G.synthesis.b8.conv1.affine.weight]).detach().double()
    A = A / A.norm(dim=1, keepdim=True)
    energy = [float((A @ d.double()).norm()) for d in directions]
    assert energy == sorted(energy, reverse=True)
    assert energy[0] ** 2 == pytest.approx(float(torch.linalg.eigvalsh(A.T @ A)[-1]), rel=1e-5)
    with pytest.raises(ValueError, match="only ToRGB"):
        sefa_directions(G, layers=[G.num_ws - 1])


def test_ganspace_is_the_most_local_pc_over_layer_ranges(G):
    pca = compute_pca(G, n_samples=2000)
    layers = [0, 1, 2, 3]
    u, best = ganspace_direction(G, pca, BOX, "cardiomegaly", layers=layers, n_pcs=4)
    run = best["layers"]
    assert len(run) >= 2 and run == list(range(run[0], run[-1] + 1)) and set(run) <= set(layers)
    assert u[run].abs().sum() > 0 and u[[i for i in range(G.num_ws) if i not in run]].abs().sum() == 0
    torch.testing.assert_close(u[run[0]].abs(), pca.direction(best["pc"]).abs())
    w_refs = reference_latents(G, range(8))
    # every run of two or more consecutive layers was tried: none beats it, the whole range included
    for r in ([0, 1], [1, 2, 3], layers):
        assert rank_pcs_for_box(G, w_refs, pca, BOX, n_pcs=4, layers=r)[0]["inside_share"] <= best["inside_share"]
    with pytest.raises(ValueError, match="no run of 2 consecutive layers"):
        ganspace_direction(G, pca, BOX, "cardiomegaly", layers=[0, 2])


def test_the_scoreboard_scores_each_u_where_it_was_and_was_not_computed(G):
    pca = compute_pca(G, n_samples=2000)
    layers = [0, 1, 2]
    seen, unseen = reference_latents(G, range(8)), reference_latents(G, range(100, 104))
    rows = score_directions(G, pca, BOX, "cardiomegaly", ["auto", "sefa"], seen=seen, unseen=unseen, layers=layers)
    assert [r["spec"] for r in rows] == ["auto", "sefa"] and rows[0]["description"].startswith("auto: PC")
    # "auto" is the most box-local PC on the seen references: its seen share is that PC's share
    best = rank_pcs_for_box(G, seen, pca, BOX, n_pcs=10, layers=layers)[0]
    assert rows[0]["seen"] == pytest.approx(best["inside_share"], abs=1e-4)
    for r in rows:
        chosen = choose_direction(G, pca, BOX, r["spec"], "cardiomegaly", layers=layers)
        u = chosen.u
        torch.testing.assert_close(r["u"], u)
        # the finder's own share is the scoreboard's on the references it was found on
        assert chosen.inside_share == pytest.approx(r["seen"], abs=1e-4)
        with torch.no_grad():
            expected = float(direction_share(G, unseen, pca, u, BOX.mask(), 2.0, layers=layers))
        assert r["unseen"] == pytest.approx(expected) and r["seconds"] > 0


def test_a_walk_along_u_is_read_as_the_reader_reads_its_images():
    """reading_along reads the images of w_ref + a u as the reader reads them made by hand; on the
    shipped default a walk toward the cardiomegaly class (``kind``) grows the heart, the box-local PC
    does not; ``kind`` is refused for a generator not told the kind of film."""
    from cxr_workbench.assets import generator_or_default, load_default_generator, load_reader, pca_for
    from cxr_workbench.imaging.masks import preset
    from cxr_workbench.method.directions import WALK_AMOUNTS, reading_along
    from cxr_workbench.model.latents import synthesize
    G = load_default_generator()
    reader, refs, layers = load_reader("oracle", G), reference_latents(G, range(100, 104)), [0, 1, 2, 3, 4, 5]
    u = torch.nn.functional.normalize(torch.randn(G.w_dim, generator=torch.Generator().manual_seed(0)), dim=0)
    walk = reading_along(G, u, refs, reader, "cardiomegaly", layers=layers)
    by_hand = reader.predict(synthesize(G, apply_direction(refs, u, WALK_AMOUNTS, layers)[:, -1]))
    assert walk["reading"][-1] == pytest.approx(by_hand["ctr"].mean(), abs=1e-6)
    assert walk["reads_as"] == pytest.approx(((by_hand["ctr"] > 0.5) & by_hand["plausible"]).mean())
    flat = reading_along(G, torch.zeros(G.w_dim), refs, reader, "opacity", layers=layers)["reading"]
    assert np.ptp(flat) < 1e-6
    box = preset("heart", G.img_resolution)
    toward = choose_direction(G, None, box, "kind", "cardiomegaly", layers=layers)
    assert toward.description.startswith("kind: toward class 1, cardiomegaly")
    for disease, k in (("cardiomegaly", 1), ("opacity", 2)):  # kind: the class of the disease, KINDS' order
        torch.testing.assert_close(choose_direction(G, None, box, "kind", disease).u,
                                   choose_direction(G, None, box, f"class:{k}", disease).u, rtol=0, atol=0)
    local = choose_direction(G, pca_for(G), box, "auto", "cardiomegaly", layers=layers).u
    grows, stays = (reading_along(G, v, refs, reader, "cardiomegaly", layers=layers)["reading"]
                    for v in (toward.u, local))
    assert grows[-1] - grows[0] > 0.1 and stays[-1] - stays[0] < 0.05, (grows, stays)
    with pytest.raises(ValueError, match="direction kind: the generator has 0 classes"):
        choose_direction(generator_or_default("phantom"), None, box, "kind", "cardiomegaly")


def test_every_finder_is_named_in_the_help_and_the_error_and_gives_a_record(G, tmp_path):
    """The registry is the one list of direction names: the CLI's help (DIRECTION_SPECS) and the
    error for an unknown spec name each finder, and each returns a record with u, a description
    starting with its name and the seconds it took."""
    from cxr_workbench.method.directions import DIRECTION_SPECS, FINDERS, DirectionRecord
    pca = compute_pca(G, n_samples=2000)
    with pytest.raises(ValueError) as e:
        choose_direction(G, pca, BOX, "sideways", "cardiomegaly")
    for name in FINDERS:
        assert f"{name} (" in DIRECTION_SPECS and repr(name) in str(e.value)
    for name in ("auto", "sefa", "jacobian"):
        r = choose_direction(G, pca, BOX, name, "cardiomegaly", cache_dir=tmp_path)
        assert isinstance(r, DirectionRecord) and r.description.startswith(f"{name}:") and r.seconds > 0
        assert (r.inside_share is None) == (name == "jacobian")  # the closed form measures no share
