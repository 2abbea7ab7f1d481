"""FOTON (issue #3): exact equivalence with BP for linear orthogonal nets, Björck, last layer, schedule."""
import copy

import pytest
import torch

from repro.models import MLP, loss_value
from repro.rules import Batch, make_rule
from repro.rules.foton import bjorck, ff_matrix


pytestmark = pytest.mark.usefixtures("float64")


def setup(sizes, act="identity", loss="ce", **rule):
    torch.manual_seed(0)
    m = MLP(list(sizes), act=act, loss=loss, bias=False, init="orthogonal")
    r = make_rule({"name": "foton", "keep": 1.0, **rule})
    r.setup(m, 100)
    for p in m.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, sizes[0], generator=g)
    t = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (16,), generator=g), sizes[-1]).double()
    return m, r, Batch(torch.arange(16), x, t)


def bp_grads(m, b):
    ref = copy.deepcopy(m).requires_grad_(True)
    return torch.autograd.grad(loss_value(ref.loss, ref(b.x), b.y), [l.weight for l in ref.layers])


def cos(a, b):
    return float((a * b).sum() / a.norm() / b.norm())


@pytest.mark.parametrize("sizes", [(64, 64, 64, 64, 64, 10), (784, 256, 256, 128, 10), (30, 20, 10)])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_linear_orthogonal_foton_equals_bp(sizes, loss):
    m, r, b = setup(sizes, loss=loss)
    r.step(m, b)
    # CE: E/B is ∂(mean CE)/∂Y. MSE: E = Y − T is the gradient of ½·Σ_outputs (Y − T)², i.e. C/2 times
    # the gradient of PyTorch's mean MSE: same direction, constant scale.
    scale = 1.0 if loss == "ce" else sizes[-1] / 2
    for lin, g in zip(m.layers, bp_grads(m, b)):
        assert cos(lin.weight.grad, g) >= 1 - 1e-5
        torch.testing.assert_close(lin.weight.grad, scale * g, rtol=1e-9, atol=1e-12)


def test_expanding_layer_breaks_the_identity():
    m, r, b = setup((64, 128, 128, 10))
    r.step(m, b)
    cs = [cos(l.weight.grad, g) for l, g in zip(m.layers, bp_grads(m, b))]
    assert min(cs[:2]) < 0.95 and cs[-1] > 1 - 1e-9


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_last_layer_is_the_bp_gradient_for_any_activation(act):
    m, r, b = setup((40, 30, 20, 10), act=act)
    r.step(m, b)
    torch.testing.assert_close(m.layers[-1].weight.grad, bp_grads(m, b)[-1])


@pytest.mark.parametrize("shape", [(10, 50), (50, 10), (32, 32)])
def test_bjorck_gives_orthonormal_rows_or_columns(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    q = bjorck(w, iters=30)
    gram = q @ q.t() if shape[0] <= shape[1] else q.t() @ q
    torch.testing.assert_close(gram, torch.eye(min(shape)), atol=1e-6, rtol=0)
    u, _, vh = torch.linalg.svd(w, full_matrices=False)  # the polar factor, exact
    torch.testing.assert_close(q, u @ vh, atol=1e-6, rtol=0)


def test_bjorck_tolerance_stops_early_at_the_same_projection(monkeypatch):
    """bjorck_tol stops once max|AᵀA − I| < tol: a matrix one SGD step off the manifold needs a few
    iterations, and the result is the 20-iteration projection to ~1e-7; tol = 0 runs every iteration."""
    torch.manual_seed(0)
    q = bjorck(torch.randn(64, 48))
    w = q + 1e-3 * torch.randn_like(q)
    calls = []
    real_eye = torch.eye
    monkeypatch.setattr(torch, "eye", lambda *a, **k: calls.append(1) or real_eye(*a, **k))
    fast = bjorck(w, tol=1e-6)
    assert 1 <= len(calls) < 10  # one check per iteration started, far fewer than 20
    calls.clear()
    full = bjorck(w)
    assert calls == []  # tol = 0: no check, all 20 iterations
    torch.testing.assert_close(fast, full, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.t() @ fast, torch.eye(48), atol=2e-6, rtol=0)


def test_orthogonalisation_and_ff_refresh_frequencies():
    m, r, b = setup((20, 15, 10), ortho_every=2, ff_every=3)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    ff0 = r.FF.clone()
    for step in range(1, 7):
        out = r.step(m, b)
        opt.step()
        r.after_step(m, b, out)
        w = m.layers[0].weight
        orth = torch.allclose(w @ w.t(), torch.eye(15), atol=1e-6)
        assert orth == (step % 2 == 0)
        if step < 3:
            torch.testing.assert_close(r.FF, ff0)
        if step in (3, 6):
            torch.testing.assert_close(r.FF, ff_matrix(m))


def test_foton_rejects_bias_and_bad_frequency():
    from repro.models import ConfigError
    with pytest.raises(ConfigError, match="rule.ortho_every=-1"):
        make_rule({"name": "foton", "ortho_every": -1})
    with pytest.raises(ConfigError, match="rule.bjorck_tol=-0.1"):
        make_rule({"name": "foton", "bjorck_tol": -0.1})
    m = MLP([5, 4, 3], loss="ce", bias=True)
    with pytest.raises(ConfigError, match="bias=false"):
        make_rule({"name": "foton"}).setup(m, 10)


def test_pepita_wm_update_equals_formula():
    torch.manual_seed(0)
    m = MLP([12, 8, 6, 4], act="relu", loss="ce", bias=False)
    r = make_rule({"name": "pepita_wm", "keep": 1.0})
    r.setup(m, 10)
    for p in m.parameters():
        p.requires_grad_(False)
    x = torch.randn(5, 12)
    t = torch.nn.functional.one_hot(torch.randint(0, 4, (5,)), 4).double()
    r.step(m, Batch(torch.arange(5), x, t))
    W = [l.weight for l in m.layers]
    F = r.Fl[0] @ r.Fl[1] @ r.Fl[2]
    h1 = torch.relu(x @ W[0].T); h2 = torch.relu(h1 @ W[1].T); y = h2 @ W[2].T
    e = torch.softmax(y, 1) - t
    xm = x - e @ F.T
    m1 = torch.relu(xm @ W[0].T); m2 = torch.relu(m1 @ W[1].T)
    exp = [(h1 - m1).T @ xm / 5, (h2 - m2).T @ m1 / 5, e.T @ m2 / 5]  # output: clean-pass error
    for lin, g in zip(m.layers, exp):
        torch.testing.assert_close(lin.weight.grad, g)


def test_weight_mirroring_aligns_feedback_with_forward_weights_and_keeps_its_scale():
    torch.manual_seed(0)
    m = MLP([20, 10, 5], act="identity", loss="ce", bias=False).requires_grad_(False)
    r = make_rule({"name": "pepita_wm", "keep": 1.0, "wmwd": 0.1})
    r.setup(m, 10)
    before = [cos(f, l.weight.T) for f, l in zip(r.Fl, m.layers)]
    r.begin_epoch(m, 1)
    assert r.mirroring
    for _ in range(1000):
        r.mirror_step(m, 64)
    after = [cos(f, l.weight.T) for f, l in zip(r.Fl, m.layers)]
    assert all(a > 0.9 for a in after) and all(abs(b) < 0.5 for b in before)
    assert abs(float(r.feedback().std()) - r.target_std) < 1e-9
    r.begin_epoch(m, 3)
    assert not r.mirroring
    r.begin_epoch(m, 10)
    assert r.mirroring


@pytest.mark.parametrize("act", ["identity", "relu", "tanh"])
def test_low_memory_step_gives_the_same_update(act):
    m, r, b = setup((40, 30, 30, 20, 10), act=act)
    r.step(m, b)
    ref = [l.weight.grad.clone() for l in m.layers]
    r2 = make_rule({"name": "foton", "keep": 1.0, "low_memory": True})
    r2.setup(m, 100)
    r2.step(m, b)
    for lin, g in zip(m.layers, ref):
        torch.testing.assert_close(lin.weight.grad, g)


def test_low_memory_step_shares_masks_across_passes():
    """With dropout, the low-memory update equals the two-pass formula with the regenerated masks."""
    m, _, b = setup((32, 32, 32, 10), act="relu")
    r = make_rule({"name": "foton", "keep": 0.5, "low_memory": True})
    r.setup(m, 100)
    out = r.step(m, b)
    gen = torch.Generator().manual_seed(out.extras["mask_seed"])
    masks = [r._layer_mask(gen, 16, 32, "cpu") for _ in range(2)]
    _, hs = m.forward_all(b.x, masks)
    e = torch.softmax(hs[-1], 1) - b.y
    _, hm = m.forward_all(b.x - e @ r.FF, masks)
    exp = [(hs[i + 1] - hm[i + 1]).T @ hs[i] / 16 for i in range(2)] + [e.T @ hs[2] / 16]
    for lin, g in zip(m.layers, exp):
        torch.testing.assert_close(lin.weight.grad, g)


# ------------------------------------------------- conv / average pooling (our reconstruction, §2.7)
def conv_setup(channels=(4, 8), act="identity", **cnn):
    from repro.models import build_model
    torch.manual_seed(0)
    spec = {"channels": list(channels), "kernel": 2, "stride": 2, "padding": 0, "pool": "avg", "pool_scale": 2.0,
            "bn": False, "bias": False, **cnn}
    m = build_model({"arch": "cnn", "act": act, "loss": "ce", "bias": False, "init": "orthogonal", "cnn": spec},
                    784, 10).double()
    r = make_rule({"name": "foton", "keep": 1.0})
    r.setup(m, 100)
    m.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 784, generator=g, dtype=torch.float64)
    t = torch.nn.functional.one_hot(torch.randint(0, 10, (8,), generator=g), 10).double()
    return m, r, Batch(torch.arange(8), x, t)


def conv_bp_grads(m, b):
    ref = copy.deepcopy(m).requires_grad_(True)
    ws = [u.weight for u in list(ref.convs) + list(ref.layers)]
    return torch.autograd.grad(loss_value(ref.loss, ref(b.x), b.y), ws)


def test_ff_matrix_of_a_cnn_is_its_linearised_map():
    m, r, b = conv_setup(act="relu")
    lin = copy.deepcopy(m)
    lin.act = lin.fc_act  # identity
    torch.testing.assert_close(b.x @ r.FF.t(), lin(b.x))


@pytest.mark.parametrize("channels", [(4,), (4, 8)])
def test_linear_orthogonal_conv_foton_equals_bp(channels):
    """Non-overlapping convs with orthonormal kernel rows, 2× average pooling and orthonormal FC rows: every
    operator is row-orthonormal and widths do not grow (784 → 4·14·14 → 4·7·7 → 8·3·3 …), so FOTON's
    updates are exactly the BP gradients, conv kernels included."""
    m, r, b = conv_setup(channels)
    r.step(m, b)
    for u, g in zip(list(m.convs) + list(m.layers), conv_bp_grads(m, b)):
        assert cos(u.weight.grad, g) >= 1 - 1e-5
        torch.testing.assert_close(u.weight.grad, g, rtol=1e-9, atol=1e-12)


def test_overlapping_conv_or_unscaled_pooling_breaks_the_identity():
    # unscaled 2×2 average pooling has P Pᵀ = I/4: a layer above it gets BP's direction at 1/4 of its size
    m, r, b = conv_setup((4, 8), pool_scale=1.0)
    r.step(m, b)
    g = conv_bp_grads(m, b)
    torch.testing.assert_close(m.convs[0].weight.grad, g[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(m.convs[1].weight.grad, g[1] / 4, rtol=1e-9, atol=1e-12)
    # an overlapping convolution is not row-orthonormal as an operator: the direction itself changes
    m, r, b = conv_setup((4,), kernel=3, stride=1, padding=1)
    r.step(m, b)
    assert cos(m.convs[0].weight.grad, conv_bp_grads(m, b)[0]) < 1 - 1e-3


def test_conv_bjorck_keeps_kernels_row_orthonormal_and_cnn_config_errors():
    m, r, b = conv_setup((4,))
    with torch.no_grad():
        m.convs[0].weight.add_(0.1 * torch.randn_like(m.convs[0].weight))
    r.after_step(m, b, None)
    w = m.convs[0].weight.view(4, -1)
    torch.testing.assert_close(w @ w.t(), torch.eye(4, dtype=w.dtype), atol=1e-4, rtol=0)
    from repro.models import ConfigError, build_model
    bn = build_model({"arch": "cnn", "bias": False, "cnn": {"channels": [2], "bias": False}}, 784, 10)
    with pytest.raises(ConfigError, match="bn=false"):
        make_rule({"name": "foton", "keep": 1.0}).setup(bn, 10)
    plain = build_model({"arch": "cnn", "bias": False, "cnn": {"channels": [2], "bias": False, "bn": False}}, 784, 10)
    with pytest.raises(ConfigError, match="rule.keep=1"):
        make_rule({"name": "foton"}).setup(plain, 10)


def test_frequency_check_every_depth_with_margin_and_divergence():
    import pandas as pd
    from repro.figures import foton as ff

    def fin(rows):
        return pd.DataFrame([{"method": m, "layers": L, "status": s, "final_test_acc": a, "best_test_acc": a}
                             for m, L, s, a in rows])

    base = [("FOTON o=1 ff=1", 2, "ok", 95.0), ("FOTON o=100 ff=100", 2, "ok", 94.5), ("BP", 50, "ok", 99.0)]
    ok = ff.metrics(fin(base + [("FOTON o=1 ff=1", 50, "ok", 90.0), ("FOTON o=10 ff=10", 50, "ok", 90.9),
                                ("FOTON o=1 ff=0", 50, "ok", 80.0)]))
    assert ok["frequency_check"]["by_depth"]["50"]["most_frequent"] == "FOTON o=1 ff=1"
    assert ok["frequent_not_worse_at_depth"] is True  # 0.5 and 0.9 < margin
    shallow_hurt = ff.metrics(fin([("FOTON o=1 ff=1", 2, "ok", 50.0), ("FOTON o=100 ff=100", 2, "ok", 99.0),
                                   ("FOTON o=1 ff=1", 50, "ok", 10.0), ("FOTON o=100 ff=100", 50, "ok", 10.0)]))
    assert shallow_hurt["frequent_not_worse_at_depth"] is False  # all at chance at 50 layers says nothing
    assert shallow_hurt["frequency_check"]["by_depth"]["50"]["holds"] is True
    worse = ff.metrics(fin(base + [("FOTON o=1 ff=1", 50, "ok", 90.0), ("FOTON o=100 ff=100", 50, "ok", 91.5)]))
    assert worse["frequent_not_worse_at_depth"] is False
    div = ff.metrics(fin(base + [("FOTON o=1 ff=1", 50, "diverged", float("nan")),
                                 ("FOTON o=100 ff=100", 50, "ok", 30.0)]))
    assert div["frequent_not_worse_at_depth"] is False  # diverged counts at chance
    assert "frequent_not_worse_at_depth" not in ff.metrics(fin([("BP", 50, "ok", 99.0)]))


def test_depth_lr_sweep_adds_each_rate_once_and_keeps_the_figures_runs():
    import pandas as pd
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import normalize_config, run_key
    P = load_params("foton_depth", "params.smoke.yaml")
    P = {**P, "seeds": [1, 2], "lr_sweep": {"methods": ["FOTON o=1 ff=1", "BP"], "lrs": [0.05, 0.5, 2.0],
                                            "seeds": [2]}}
    jobs = ff.depth_jobs(P, "mnist")
    fig = [j for j in jobs if j["part"] == "depth"]
    grid = [j for j in jobs if j["part"] == "lr_sweep"]
    plain = [j for j in ff.depth_jobs({**P, "lr_sweep": None}, "mnist") if j["part"] == "depth"]
    key = lambda j: run_key(normalize_config(j["config"]))  # noqa: E731
    assert [key(j) for j in fig] == [key(j) for j in plain]  # the figure's runs (and run keys) are unchanged
    assert len({key(j) for j in jobs}) == len(jobs)  # the shared grid point (the figure's lr) is not repeated
    # FOTON's figure lr 0.5 (→ 0.05, 2.0 added), BP's 0.05 (→ 0.5, 2.0), at each depth, seed 2 only
    assert sorted((j["method"], j["lr"], j["layers"], j["seed"]) for j in grid) == sorted(
        (m, lr, L, 2) for L in P["depths"] for m, lrs in (("FOTON o=1 ff=1", (0.05, 2.0)), ("BP", (0.5, 2.0)))
        for lr in lrs)
    for j in grid:  # only the lr differs from the figure's run of the same method, depth and seed
        f = next(f for f in fig if (f["method"], f["layers"], f["seed"]) == (j["method"], j["layers"], j["seed"]))
        a, b = normalize_config(j["config"]), normalize_config(f["config"])
        assert a["optim"].pop("lr") == j["lr"] and b["optim"].pop("lr") == f["lr"] and a == b
    # a list of grids: a point two grids share trains once; each grid keeps to its own depths
    two = ff.depth_jobs({**P, "lr_sweep": [{"methods": ["BP"], "lrs": [0.5, 2.0], "depths": [2]},
                                           {"methods": ["BP"], "lrs": [0.5, 0.01], "seeds": [2]}]}, "mnist")
    g2 = sorted((j["seed"], j["layers"], j["lr"]) for j in two if j["part"] == "lr_sweep")
    assert g2 == sorted([(s, 2, lr) for s in (1, 2) for lr in (0.5, 2.0)]
                        + [(2, L, lr) for L in P["depths"] for lr in (0.5, 0.01) if (L, lr) != (2, 0.5)])
    with pytest.raises(ConfigError, match=r"foton_depth.lr_sweep.methods: \['FOTON o=2 ff=2'\] are not methods"):
        ff.depth_jobs({**P, "lr_sweep": {"methods": ["FOTON o=2 ff=2"], "lrs": [0.1]}}, "mnist")
    with pytest.raises(ConfigError, match=r"foton_depth.lr_sweep.seeds: \[3\] not in foton_depth.seeds"):
        ff.depth_jobs({**P, "lr_sweep": {"methods": ["BP"], "lrs": [0.1], "seeds": [3]}}, "mnist")

    # metrics: the figure's numbers come from its own runs only; the grid per method, depth and lr (the
    # figure's shared run included), and the best lr per depth
    rows = [{**{k: v for k, v in j.items() if k != "config"}, "status": "ok",
             "final_test_acc": 50.0 + 10 * j["lr"] + j["layers"], "best_test_acc": 60.0} for j in jobs]
    rows[0]["status"], rows[0]["final_test_acc"] = "diverged", 10.0
    m = ff.metrics(pd.DataFrame(rows))
    f_only = ff.metrics(pd.DataFrame([r for r in rows if r["part"] == "depth"]))
    assert {k: m[k] for k in f_only} == f_only and "lr_sweep" not in f_only
    assert set(m["lr_sweep"]) == {"FOTON o=1 ff=1", "BP"}
    L = str(P["depths"][-1])
    assert sorted(m["lr_sweep"]["BP"][L]) == ["0.05", "0.5", "2"]  # the figure's 0.05 (seed 2) is a grid point
    assert m["lr_sweep"]["BP"][L]["0.05"]["n_seeds"] == 1  # seed 1's figure run is not in the seed-2 grid
    assert m["lr_sweep_best"]["BP"][L] == {"lr": 2.0, "final_test_acc": 70.0 + P["depths"][-1]}


def test_init_signal_is_kept_by_linear_orthogonal_layers_and_shrinks_through_relu(mirror, tmp_path, monkeypatch):
    """init_signal: the figure's models as train.build starts them. Linear: each square orthogonal layer
    keeps the norm, so the last hidden layer's equals the first's (to float error); ReLU: smaller at each depth."""
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(tmp_path / "data"))
    P = {**load_params("foton_depth", "params.smoke.yaml"), "depths": [2, 3, 5, 10]}
    lin = ff.init_signal({**P, "act": "identity"}, "mnist", n=256)
    relu = ff.init_signal(P, "mnist", n=256)
    assert list(lin) == list(relu) == ["2", "3", "5", "10"]
    assert all(0 < v["first_hidden_norm_ratio"] < 1 for v in lin.values())  # 784 → 32, orthonormal rows: a projection
    # after the first layer the linear net keeps the norm exactly (square orthogonal layers)
    assert all(abs(v["hidden_norm_ratio"] / v["first_hidden_norm_ratio"] - 1) < 1e-5 for v in lin.values())
    h = [v["hidden_norm_ratio"] / v["first_hidden_norm_ratio"] for v in relu.values()]
    assert h[0] == 1.0  # 2 layers: the last hidden layer is the first
    assert all(a > b for a, b in zip(h, h[1:])) and h[-1] < 0.1 * h[0]


def test_depth_act_controls_change_only_the_activation_and_parts_keep_to_their_depths():
    import pandas as pd
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import normalize_config
    P = {**load_params("foton_depth", "params.smoke.yaml"), "depths": [2, 3, 5]}
    P = {**P, "lr_sweep": {"methods": ["BP"], "lrs": [0.5], "depths": [2, 3]},
         "act_controls": {"acts": ["tanh", "identity"], "methods": ["FOTON o=1 ff=1", "BP"], "depths": [3, 5]}}
    jobs = ff.depth_jobs(P, "mnist")
    assert sorted(j["layers"] for j in jobs if j["part"] == "lr_sweep") == [2, 3]
    act = [j for j in jobs if j["part"] == "act"]
    assert sorted((j["method"], j["layers"]) for j in act) == sorted(
        (f"{m} ({a})", L) for a in ("tanh", "identity") for m in ("FOTON o=1 ff=1", "BP") for L in (3, 5))
    fig = [j for j in jobs if j["part"] == "depth"]
    for j in act:  # only the activation differs from the figure's run
        f = next(f for f in fig if f["method"] == j["method"].rsplit(" (", 1)[0] and f["layers"] == j["layers"])
        a, b = normalize_config(j["config"]), normalize_config(f["config"])
        assert a["model"].pop("act") == j["act"] and b["model"].pop("act") == P["act"] == f["act"] and a == b
    for bad, msg in (({"acts": ["relu"], "methods": ["BP"]}, r"act_controls.acts: .*relu"),
                     ({"acts": ["tanh"], "methods": ["FOTON"]}, r"act_controls.methods: \['FOTON'\] are not methods"),
                     ({"acts": ["tanh"], "methods": ["BP"], "depths": [4]}, r"act_controls.depths: \[4\] not in")):
        with pytest.raises(ConfigError, match=msg):
            ff.depth_jobs({**P, "act_controls": bad}, "mnist")
    rows = [{**{k: v for k, v in j.items() if k != "config"}, "status": "ok",
             "final_test_acc": {"relu": 20.0, "tanh": 80.0, "identity": 50.0}[j["act"]] + j["layers"],
             "best_test_acc": 0.0} for j in jobs]
    m = ff.metrics(pd.DataFrame(rows))
    assert m["act_controls"]["BP"]["tanh"] == {"3": 83.0, "5": 85.0}
    assert m["act_controls"]["BP"]["relu"] == {"3": 23.0, "5": 25.0}  # the figure's runs at the controls' depths
    assert m["final_test_acc"]["BP"] == {"2": 22.0, "3": 23.0, "5": 25.0}  # the figure: its own runs only


def test_lr_sweep_jobs_share_the_tables_runs_and_change_only_the_lr():
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.train import normalize_config, run_key
    P = load_params("foton_shallow", "params.smoke.yaml")
    P = {**P, "lr_sweep": {"reading": "2x256", "methods": ["FOTON", "BP"], "lrs": [0.05, 0.5, 2.0]}}
    jobs = ff.shallow_jobs(P, "mnist")
    table = [j for j in jobs if j["part"] == "table"]
    sweep = [j for j in jobs if j["part"] == "lr_sweep"]
    keys = [run_key(normalize_config(j["config"])) for j in jobs]
    assert len(set(keys)) == len(keys)  # the grid points the table already has are not repeated
    # FOTON's table lr is 0.5 (→ 0.05, 2.0 added), BP's is 0.05 (→ 0.5, 2.0 added); 1x1024 untouched
    assert sorted((j["method"], j["lr"]) for j in sweep) == [("BP 2x256", 0.5), ("BP 2x256", 2.0),
                                                              ("FOTON 2x256", 0.05), ("FOTON 2x256", 2.0)]
    for j in sweep:
        t = next(t for t in table if t["method"] == j["method"])
        c = copy.deepcopy(j["config"]); c["optim"]["lr"] = t["config"]["optim"]["lr"]
        assert c == t["config"]
    assert len(ff.shallow_jobs({**P, "lr_sweep": None, "exact_bjorck": None}, "mnist")) == len(table)


def test_exact_bjorck_reruns_the_tables_foton_with_every_iteration():
    """``exact_bjorck``: the table's FOTON runs of one reading and seeds again with Björck's tolerance removed
    (the rule's default 0: every iteration, as the authors' code) — nothing else differs; it stays out of the
    table's numbers and is reported beside the same seeds' table runs; a bad reading is named."""
    import pandas as pd
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.rules import make_rule
    P = {**load_params("foton_shallow", "params.smoke.yaml"), "lr_sweep": None, "seeds": [1, 2],
         "seeds_by_method": {}, "exact_bjorck": {"reading": "2x256", "seeds": [2]}}
    jobs = ff.shallow_jobs(P, "mnist")
    ex = [j for j in jobs if j["part"] == "exact_bjorck"]
    assert [(j["method"], j["seed"]) for j in ex] == [(f"{ff.EXACT_BJORCK} 2x256", 2)]
    t = next(j for j in jobs if j["part"] == "table" and j["method"] == "FOTON 2x256" and j["seed"] == 2)
    assert t["config"]["rule"]["bjorck_tol"] == P["bjorck_tol"] > 0 and "bjorck_tol" not in ex[0]["config"]["rule"]
    assert {**ex[0]["config"], "rule": None} == {**t["config"], "rule": None}
    assert make_rule(ex[0]["config"]["rule"]).params["bjorck_tol"] == 0  # every bjorck_iters
    with pytest.raises(ConfigError, match=r"foton_shallow\.exact_bjorck\.reading: '3x3' is not one of readings"):
        ff.shallow_jobs({**P, "exact_bjorck": {"reading": "3x3"}}, "mnist")
    rows = [{"part": j["part"], "reading": j["reading"], "method": j["method"], "seed": j["seed"], "lr": j["lr"],
             "status": "ok", "final_test_acc": 90.0 + j["seed"] + (j["part"] == "exact_bjorck"),
             "best_test_acc": 95.0} for j in jobs]
    m = ff.shallow_metrics(pd.DataFrame(rows))
    e = m["exact_bjorck"]
    assert e["reading"] == "2x256" and e["seeds"] == [2] and e["final_test_acc"]["mean"] == 93.0
    assert e["tolerance_runs"]["final_test_acc"]["mean"] == 92.0 and e["tolerance_runs"]["final_test_acc"]["n"] == 1
    assert f"{ff.EXACT_BJORCK} 2x256" not in m["final_test_acc"] and m["final_test_acc"]["FOTON 2x256"]["n"] == 2


def test_lr_sweep_may_be_a_list_of_grids():
    """A second grid adds single points on the costly reading (FOTON 1x1024 at lr 0.1): the same config as
    the table's run but for the lr; a point two grids share is one job; an unknown reading is named."""
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    P = load_params("foton_shallow", "params.smoke.yaml")
    one = {"reading": "2x256", "methods": ["FOTON"], "lrs": [0.05], "seeds": [1]}
    extra = {"reading": "1x1024", "methods": ["FOTON"], "lrs": [0.1, 0.5], "seeds": [1]}
    jobs = ff.shallow_jobs({**P, "lr_sweep": [one, extra, one]}, "mnist")
    sweep = [j for j in jobs if j["part"] == "lr_sweep"]
    assert sorted((j["method"], j["lr"]) for j in sweep) == [("FOTON", 0.1), ("FOTON 2x256", 0.05)]
    t = next(j for j in jobs if j["part"] == "table" and j["method"] == "FOTON" and j["seed"] == 1)
    p = next(j for j in sweep if j["method"] == "FOTON")
    assert {**p["config"], "optim": None} == {**t["config"], "optim": None} and p["config"]["optim"]["lr"] == 0.1
    assert ff.shallow_jobs({**P, "lr_sweep": one}, "mnist") == ff.shallow_jobs({**P, "lr_sweep": [one]}, "mnist")
    # each grid's shared table points on that grid's seeds only
    import pandas as pd
    P3 = {**P, "seeds": [1, 2, 3], "seeds_by_method": {}, "lr_sweep": [one, {**extra, "seeds": [1, 2]}]}
    rows = [{"part": j["part"], "reading": j["reading"], "method": j["method"], "seed": j["seed"], "lr": j["lr"],
             "status": "ok", "final_test_acc": 90.0, "best_test_acc": 91.0} for j in ff.shallow_jobs(P3, "mnist")]
    d = ff.lr_sweep_frame(pd.DataFrame(rows))
    assert sorted(zip(d.method, d.lr, d.seed)) == [("FOTON", 0.1, 1), ("FOTON", 0.1, 2), ("FOTON", 0.5, 1),
                                                   ("FOTON", 0.5, 2), ("FOTON 2x256", 0.05, 1), ("FOTON 2x256", 0.5, 1)]
    fig = ff.plot_lr_sweep(pd.DataFrame(rows), "mnist", P3)  # two readings: every line names its reading
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert {"FOTON 1x1024", "FOTON 2x256"} <= labels and "FOTON" not in labels
    __import__("matplotlib.pyplot").pyplot.close(fig)
    with pytest.raises(ConfigError, match=r"foton_shallow\.lr_sweep\.reading: '3x64' is not one of readings"):
        ff.shallow_jobs({**P, "lr_sweep": [one, {**extra, "reading": "3x64"}]}, "mnist")


def test_bjorck_control_is_bps_config_with_the_projection():
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    P = load_params("foton_shallow", "params.smoke.yaml")
    P = {**P, "lr_sweep": {"reading": "2x256", "methods": ["BP+Björck"], "lrs": [0.05, 0.5]}}
    jobs = ff.shallow_jobs(P, "mnist")
    ctl = [j for j in jobs if j["method"] == "BP+Björck 2x256"]
    bp = next(j for j in jobs if j["method"] == "BP 2x256")
    assert [j["lr"] for j in ctl] == [0.05, 0.5]  # every grid point: the table has no such run
    for j in ctl:
        assert j["config"]["rule"] == {"name": "bp", "ortho_every": 1, "bjorck_tol": P["bjorck_tol"]}
        assert {**j["config"], "rule": None, "optim": None} == {**bp["config"], "rule": None, "optim": None}
    with pytest.raises(ConfigError, match="lr_sweep.methods"):
        ff.shallow_jobs({**P, "methods": ["FOTON"]}, "mnist")


def test_fewer_seeds_for_one_method_and_for_the_lr_grid():
    """seeds_by_method drops a costly method's extra seeds; lr_sweep.seeds keeps the grid on its own seeds,
    and the grid's shared table points are read on those seeds only."""
    import pandas as pd
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    P = load_params("foton_shallow", "params.smoke.yaml")
    P = {**P, "seeds": [1, 2, 3], "seeds_by_method": {"FOTON": [1]},
         "lr_sweep": {"reading": "2x256", "methods": ["FOTON", "BP"], "lrs": [0.05, 0.5], "seeds": [1]}}
    jobs = ff.shallow_jobs(P, "mnist")
    table = [j for j in jobs if j["part"] == "table"]
    seeds = lambda m: sorted(j["seed"] for j in table if j["method"] == m)  # noqa: E731
    assert seeds("FOTON") == [1] and seeds("FOTON 2x256") == [1, 2, 3] and seeds("BP") == [1, 2, 3]
    sweep = [j for j in jobs if j["part"] == "lr_sweep"]
    assert {j["seed"] for j in sweep} == {1} and len(sweep) == 2
    with pytest.raises(ConfigError, match="seeds_by_method"):
        ff.shallow_jobs({**P, "seeds_by_method": {"FOTON 9x9": [1]}}, "mnist")
    rows = [{"part": j["part"], "reading": j["reading"], "method": j["method"], "seed": j["seed"], "lr": j["lr"],
             "status": "ok", "final_test_acc": 90.0, "best_test_acc": 91.0} for j in jobs]
    d = ff.lr_sweep_frame(pd.DataFrame(rows))
    assert set(d.seed) == {1} and len(d) == 4  # 2 grid runs + the 2 shared table points, seed 1 only


def test_alignment_epochs_by_depth():
    import pandas as pd
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    P = load_params("foton_alignment", "params.smoke.yaml")
    deep = max(P["depths"])
    jobs = ff.alignment_jobs({**P, "epochs": 5, "epochs_by_depth": {deep: 1}})
    assert {j["config"]["epochs"] for j in jobs if j["layers"] == deep} == {1}
    assert {j["config"]["epochs"] for j in jobs if j["layers"] != deep} == {5}
    with pytest.raises(ConfigError, match="epochs_by_depth"):
        ff.alignment_jobs({**P, "epochs_by_depth": {7: 1}})
    # the metrics read each run at its own last epoch
    hist = pd.DataFrame([{"act": "relu", "layers": L, "method": m, "seed": 1, "epoch": e,
                          "cos_hidden": cos if e == last else 0.0}
                         for L, last in ((10, 20), (50, 2)) for m, cos in (("FOTON", 0.9), ("PEPITA", 0.1))
                         for e in range(1, last + 1)])
    m = ff.alignment_metrics(hist)
    assert m["final_cos_hidden"]["relu"]["50"] == {"FOTON": 0.9, "PEPITA": 0.1}
    assert m["foton_above_pepita_at_depth"] is True and m["deepest"] == 50


def test_alignment_seeds_by_depth_drops_seeds_of_a_costly_depth():
    import pandas as pd
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    P = {**load_params("foton_alignment", "params.smoke.yaml"), "seeds": [1, 2, 3]}
    shallow, deep = min(P["depths"]), max(P["depths"])
    jobs = ff.alignment_jobs({**P, "seeds_by_depth": {deep: [1]}})
    assert {j["seed"] for j in jobs if j["layers"] == deep} == {1}
    assert {j["seed"] for j in jobs if j["layers"] == shallow} == {1, 2, 3}
    # the kept runs are the same configs (same run keys) as without the option
    full = {(j["act"], j["layers"], j["method"], j["seed"]): j["config"] for j in ff.alignment_jobs(P)}
    assert all(full[(j["act"], j["layers"], j["method"], j["seed"])] == j["config"] for j in jobs)
    title = ff.alignment_budget({**P, "seeds_by_depth": {deep: [1]}})
    assert f"{shallow} layers: {P['epochs']} epochs, 3 seeds" in title and f"{deep} layers:" in title
    assert title.split(f"{deep} layers:")[1].startswith(f" {P['epochs_by_depth'].get(deep, P['epochs'])} epochs, 1 seed")
    with pytest.raises(ConfigError, match=r"foton_alignment.seeds_by_depth: \[7\] not in depths"):
        ff.alignment_jobs({**P, "seeds_by_depth": {7: [1]}})
    with pytest.raises(ConfigError, match=r"seeds_by_depth: \{%d: \[4\]\} not in foton_alignment.seeds" % deep):
        ff.alignment_jobs({**P, "seeds_by_depth": {deep: [1, 4]}})
    # metrics: mean and sample sd over the seeds of each depth, and how many seeds each depth has
    hist = pd.DataFrame([{"act": "tanh", "layers": L, "method": "FOTON", "seed": s, "epoch": 1, "cos_hidden": c}
                         for L, seeds in ((10, {1: 0.6, 2: 0.7, 3: 0.8}), (50, {1: 0.03}))
                         for s, c in seeds.items()])
    m = ff.alignment_metrics(hist)
    assert m["n_seeds"] == {"10": 3, "50": 1}
    assert m["final_cos_hidden"]["tanh"]["10"]["FOTON"] == pytest.approx(0.7)
    assert m["final_cos_hidden_sd"]["tanh"]["10"]["FOTON"] == pytest.approx(0.1)
    assert "50" not in m["final_cos_hidden_sd"]["tanh"]  # one seed: no sd


def test_bp_dropout_row_is_bps_config_with_foton_keep():
    from repro.figures import foton as ff
    from repro.figures.common import load_params
    from repro.models import ConfigError
    P = load_params("foton_shallow", "params.smoke.yaml")
    P = {**P, "methods": ["FOTON", "BP", "BP+dropout"], "lr_sweep": None}
    jobs = {j["method"]: j for j in ff.shallow_jobs(P, "mnist")}
    for suffix in ("", " 2x256"):
        d, bp = jobs["BP+dropout" + suffix]["config"], jobs["BP" + suffix]["config"]
        assert d["rule"] == {"name": "bp", "keep": P["keep"]} and P["keep"] < 1
        assert {**d, "rule": None} == {**bp, "rule": None}
    with pytest.raises(ConfigError, match=r"foton_shallow\.methods: \['PEPITA\+W'\] unknown; allowed: FOTON, "):
        ff.shallow_jobs({**P, "methods": ["PEPITA+W"]}, "mnist")


@pytest.mark.parametrize("tol", [0.0, 1e-6])
def test_batched_bjorck_equals_the_per_layer_loop(tol):
    """project_all(batched=True) (the CUDA default) = the per-layer loop up to float rounding; with a
    tolerance each matrix stops on its own (an already orthonormal one comes back unchanged but for the
    σ_max rescaling)."""
    from repro.models import build_model
    from repro.rules.foton import bjorck, bjorck_batched, project_all
    torch.manual_seed(0)
    m = build_model({"arch": "mlp", "width": 32, "depth": 5, "act": "relu", "loss": "ce", "bias": False,
                     "init": "orthogonal"}, 40, 10)
    with torch.no_grad():
        for lin in m.layers[1:3]:
            lin.weight.add_(0.05 * torch.randn_like(lin.weight))
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    project_all(a, 20, tol, batched=False)
    project_all(b, 20, tol, batched=True)
    for x, y in zip(a.layers, b.layers):
        torch.testing.assert_close(x.weight, y.weight, atol=1e-6, rtol=0)
    stack = torch.stack([lin.weight.detach() for lin in m.layers[1:5]])  # 2 perturbed, 2 orthonormal
    out = bjorck_batched(stack, 20, tol=tol)
    for w, o in zip(stack, out):
        torch.testing.assert_close(o, bjorck(w, 20, tol=tol), atol=1e-6, rtol=0)
