"""FFzero pieces (issue #4): DD estimator, prototypes, hinge goodness, layer vote."""
import torch

from repro.rules.dd import dd_gradient, directional_derivative, linear_loss_fn, unit_directions
from repro.rules.ffzero import (antipodal_prototype, hinge_goodness_loss, layer_vote, similarities,
                                simplex_prototypes)


def test_central_difference_equals_the_directional_derivative_to_second_order():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    f = lambda th: torch.sin(th @ a).sum(-1) + (th ** 3).sum(-1)  # noqa: E731  [K, d] -> [K]
    th = torch.randn(6, dtype=torch.float64)
    u = unit_directions(3, 6, dtype=torch.float64)
    thr = th.clone().requires_grad_(True)
    exact = u @ torch.autograd.grad(f(thr.unsqueeze(0)).sum(), thr)[0]
    errs = [float((directional_derivative(f, th, u, eps) - exact).abs().max()) for eps in (1e-1, 5e-2)]
    assert errs[0] < 1e-1 and 3.5 < errs[0] / errs[1] < 4.5  # halving ε quarters the error: O(ε²)


def test_dd_estimate_is_unbiased_for_a_linear_layer():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    t = torch.randn(16, 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    f = linear_loss_fn(x, 3, lambda z: ((z - t) ** 2).mean(dim=(1, 2)))
    th = torch.cat([w.flatten(), b])
    thr = th.clone().requires_grad_(True)
    true = torch.autograd.grad(f(thr.unsqueeze(0)).sum(), thr)[0]
    one = dd_gradient(f, th, k=1, generator=g)
    many = dd_gradient(f, th, k=20000, generator=g)
    rel = lambda e: float((e - true).norm() / true.norm())  # noqa: E731
    assert rel(many) < 0.1 < rel(one)  # averaging over directions approaches the gradient
    cosine = float(many @ true / many.norm() / true.norm())
    assert cosine > 0.99


def test_simplex_prototypes_geometry():
    g = torch.Generator().manual_seed(1)
    for c, d in ((10, 10), (10, 100), (3, 7)):
        p = simplex_prototypes(c, d, g).double()
        gram = p @ p.t()
        exp = torch.full((c, c), -1 / (c - 1), dtype=torch.float64)
        exp.fill_diagonal_(1.0)
        torch.testing.assert_close(gram, exp, atol=1e-6, rtol=0)
    p1, p2 = simplex_prototypes(10, 20, g), simplex_prototypes(10, 20, g)
    assert not torch.allclose(p1, p2)  # a new rotation per layer
    assert abs(float(antipodal_prototype(8, g).norm()) - 1) < 1e-6


def test_hinge_goodness_equals_its_formula_and_floor():
    s = torch.tensor([[0.9, 0.1, -0.2], [0.2, 0.4, 0.3]])
    y = torch.tensor([0, 2])
    exp = sum(max(0.0, 0.3 + float(s[i, c]) - float(s[i, y[i]])) for i in range(2) for c in range(3))
    assert abs(float(hinge_goodness_loss(s, y)) - exp) < 1e-6
    # all samples separated by ≥ m: the loss is its floor B·m (true-class terms only)
    s2 = torch.tensor([[0.9, 0.1, 0.2], [0.0, 0.95, 0.5]])
    assert abs(float(hinge_goodness_loss(s2, torch.tensor([0, 1]))) - 2 * 0.3) < 1e-6
    z = torch.randn(4, 5, 10)  # leading K dimension (batched DD directions)
    p = simplex_prototypes(3, 10)
    yy = torch.tensor([0, 1, 2, 0, 1])
    batched = hinge_goodness_loss(similarities(z, p), yy)
    assert batched.shape == (4,) and torch.allclose(batched[1], hinge_goodness_loss(similarities(z[1], p), yy))


def test_layer_vote_majority_and_ties():
    preds = [torch.tensor([1, 0, 2, 4]), torch.tensor([1, 3, 2, 5]), torch.tensor([2, 3, 1, 6])]
    # sample 0: 1 wins 2:1; sample 1: 3 wins; sample 2: 2 wins;
    # sample 3: three-way tie 4/5/6 -> the deepest supporting layer (layer 3) -> 6
    assert layer_vote(preds, 7).tolist() == [1, 3, 2, 6]
    # two layers disagreeing: tie broken towards the deeper layer
    assert layer_vote([torch.tensor([0]), torch.tensor([5])], 7).tolist() == [5]


# ------------------------------------------------------------------------------ rules and training
import copy  # noqa: E402

import pytest  # noqa: E402

from repro import train as T  # noqa: E402
from repro.models import MLP  # noqa: E402
from repro.rules import Batch, make_rule  # noqa: E402


def ff_setup(estimator="ad", **kw):
    torch.manual_seed(0)
    m = MLP([12, 10, 10, 3], act="identity", loss="ce")
    r = make_rule({"name": "ff", "estimator": estimator, **kw})
    r.setup(m, 40)
    for p in m.parameters():
        p.requires_grad_(r.needs_autograd)
    from conftest import tiny_data
    d = tiny_data(40, 20, 12, 3)
    return m, r, d


def test_ff_ad_gradient_is_the_local_loss_gradient_of_one_layer_only():
    m, r, d = ff_setup("ad")
    r.begin_phase(m, 1, d)
    idx = torch.arange(8)
    r.step(m, Batch(idx, d.x_train[idx], d.y_train[idx]))
    assert m.layers[0].weight.grad is None and m.layers[2].weight.grad is None
    ref = copy.deepcopy(m).requires_grad_(True)
    x1 = ref.layers[0](d.x_train[idx]).detach()
    loss = hinge_goodness_loss(similarities(ref.layers[1](x1), r.P[1]), d.labels_train[idx])
    g = torch.autograd.grad(loss, list(ref.layers[1].parameters()))
    for p, gi in zip(m.layers[1].parameters(), g):
        torch.testing.assert_close(p.grad, gi)


def test_ff_dd_estimate_points_along_the_local_gradient():
    m, r, d = ff_setup("dd", directions=4000)
    r.begin_phase(m, 0, d)
    idx = torch.arange(16)
    b = Batch(idx, d.x_train[idx], d.y_train[idx])
    r.step(m, b)
    dd = torch.cat([p.grad.flatten() for p in m.layers[0].parameters()])
    r2 = make_rule({"name": "ff", "estimator": "ad"})
    r2.setup(m, 40)
    r2.P = r.P
    r2.begin_phase(m, 0, d)
    for p in m.parameters():
        p.requires_grad_(True)
    r2.step(m, b)
    ad = torch.cat([p.grad.flatten() for p in m.layers[0].parameters()])
    assert float(dd @ ad / dd.norm() / ad.norm()) > 0.9


@pytest.mark.parametrize("estimator", ["ad", "dd"])
def test_layerwise_training_is_local_and_greedy(monkeypatch, estimator):
    from conftest import tiny_data
    d = tiny_data(64, 32, 784, 10)
    monkeypatch.setattr(T, "load_data", lambda c, dev: d)
    snaps = []
    real_begin = __import__("repro.rules.ffzero", fromlist=["FF"]).FF.begin_phase

    def spy(self, model, phase, data):
        snaps.append([l.weight.detach().clone() for l in model.layers])
        return real_begin(self, model, phase, data)
    monkeypatch.setattr(__import__("repro.rules.ffzero", fromlist=["FF"]).FF, "begin_phase", spy)
    cfg = {"dataset": {"name": "mnist", "n_train": 64, "n_test": 32},
           "model": {"width": 12, "depth": 2, "act": "identity", "loss": "ce"},
           "rule": {"name": "ff", "estimator": estimator},
           "optim": {"name": "adam" if estimator == "ad" else "sgd", "lr": 1e-3}, "epochs": 2, "batch_size": 16}
    res = T.train(cfg)
    h = res.record["history"]
    assert [r.get("phase") for r in h[1:]] == [0, 0, 1, 1, 2, 2] and len(h[-1]["test_layer_errors"]) == 3
    final = [l.weight.detach() for l in res.model.layers]
    # layer 0 is frozen once phase 1 starts; layer 2 is untouched until phase 2
    assert torch.equal(snaps[1][0], final[0]) and torch.equal(snaps[0][2], snaps[2][2])
    assert not torch.equal(snaps[0][0], snaps[1][0])


def test_bp_dd_estimates_the_global_gradient():
    torch.manual_seed(0)
    m = MLP([5, 4, 3], act="tanh", loss="ce")
    r = make_rule({"name": "bp_dd", "directions": 3000})
    r.setup(m, 10)
    x = torch.randn(8, 5)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (8,)), 3).float()
    ref = copy.deepcopy(m)
    from repro.models import loss_value
    g = torch.autograd.grad(loss_value("ce", ref(x), y), list(ref.parameters()))
    for p in m.parameters():
        p.requires_grad_(False)
    r.step(m, Batch(torch.arange(8), x, y))
    dd = torch.cat([p.grad.flatten() for p in m.parameters()])
    true = torch.cat([gi.flatten() for gi in g])
    assert float(dd @ true / dd.norm() / true.norm()) > 0.9


# ----------------------------------------------------------------------------------- CNN (Fig. 5)
def _cnn(c=3, **kw):
    from repro.models import build_model
    return build_model({"arch": "cnn", "act": "relu", "loss": "ce", "cnn": {"channels": [c, c], **kw}}, 784, 10)


def test_cnn_shapes_and_parameter_counts_match_the_spec():
    from repro.figures.ffzero import cnn_params
    m = _cnn(4)
    assert m.spatial == [(27, 27), (12, 12)] and m.sizes == [4 * 6 * 6, 10]  # 28 → 27 → 13 → 12 → 6
    assert m(torch.rand(5, 784)).shape == (5, 10)
    spec = {2: 946, 4: 2170, 8: 5482, 16: 15562, 32: 49546, 64: 172810}  # ffzero.md §3 (MNIST config)
    assert {c: cnn_params(c) for c in spec} == spec
    fm = {2: 8526, 4: 16230, 8: 32502, 16: 68502, 32: 154326, 64: 381270}  # FMNIST config, FC 100 → 10
    assert {c: cnn_params(c, [100]) for c in fm} == fm
    counted = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("bns"))
    assert counted == cnn_params(4)


def test_cnn_config_errors_name_the_parameter():
    import pytest
    from repro.models import ConfigError, build_model
    for cnn, word in (({"channels": []}, "model.cnn.channels"), ({"pool": "median"}, "model.cnn.pool"),
                      ({"chanels": [2]}, "model.cnn"), ({"channels": [2, 2, 2, 2]}, "shrink")):
        with pytest.raises(ConfigError, match=word):
            build_model({"arch": "cnn", "cnn": cnn}, 784, 10)
    with pytest.raises(ConfigError, match="image inputs"):
        build_model({"arch": "cnn"}, 12, 1)


def _ff_on_cnn(estimator="dd", c=3, n=32, phase=0, **params):
    from repro.data import Data
    from repro.rules import make_rule
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=g, dtype=torch.float64)
    lab = torch.arange(n) % 10
    d = Data("t", "classification", x, torch.nn.functional.one_hot(lab, 10).double(), x[:8],
             torch.nn.functional.one_hot(lab[:8], 10).double(), lab, lab[:8])
    model = _cnn(c).double()
    rule = make_rule({"name": "ff", "estimator": estimator, **params})
    rule.setup(model, n)
    rule.R = [r.double() for r in rule.R]
    rule.Pc = [p.double() for p in rule.Pc]
    rule.P = [p.double() for p in rule.P]
    rule.begin_phase(model, phase, d)
    return model, rule, d


def test_conv_goodness_is_per_channel_projection_cosine_and_hinge(float64):
    model, rule, d = _ff_on_cnn()
    x = model.image(d.x_train[:4])
    a = model.conv_pre(0, x)  # [4, c, 27, 27]
    s = rule.conv_sims(a, 0)
    for j in range(a.shape[1]):
        proj = a[:, j].flatten(1) @ rule.R[0][j]  # the channel's fixed 729 → 10 projection
        exp = torch.nn.functional.normalize(proj, dim=1) @ rule.Pc[0][j].t()
        torch.testing.assert_close(s[:, j], exp)
    losses = rule.conv_losses(a, d.labels_train[:4], 0)
    exp = torch.stack([hinge_goodness_loss(s[:, j], d.labels_train[:4]) for j in range(a.shape[1])])
    torch.testing.assert_close(losses, exp)
    # a conv layer predicts from the similarities summed over its channels
    assert torch.equal(s.sum(1).argmax(1), rule.conv_sims(a, 0).sum(1).argmax(1))


def test_conv_dd_blocks_are_channels_and_average_to_the_channel_gradients(float64):
    """FF+DD on a conv block: channel j's estimate lives in [kernel_j, β_j] and, averaged over directions,
    approaches the autograd gradient of channel j's own loss (γ is not in the block)."""
    from repro.rules import Batch
    model, rule, d = _ff_on_cnn(c=2, directions=4000)
    conv, bn = model.convs[0], model.bns[0]
    b = Batch(torch.arange(16), d.x_train[:16], d.y_train[:16])
    with torch.enable_grad():
        params = [conv.weight, bn.bias]
        for p in params:
            p.requires_grad_(True)
        a = model.conv_pre(0, rule.cache[b.idx])
        losses = rule.conv_losses(a, b.y.argmax(1), 0)
        true = [torch.autograd.grad(losses[j], params, retain_graph=True) for j in range(2)]
        for p in params:
            p.requires_grad_(False)
    rule.step(model, b)
    assert bn.weight.grad is None
    for j in range(2):
        t = torch.cat([true[j][0][j].flatten(), true[j][1][j:j + 1]])
        other = torch.cat([true[j][0][1 - j].flatten(), true[j][1][1 - j:2 - j]])
        assert float(other.abs().max()) == 0.0  # channel j's loss ignores the other channel's parameters
        est = torch.cat([conv.weight.grad[j].flatten(), bn.bias.grad[j:j + 1]])
        assert float(est @ t / (est.norm() * t.norm())) > 0.95


def test_ff_trains_a_cnn_block_by_block_and_votes_over_all_layers():
    """3 phases (2 conv blocks, 1 FC layer); phase k changes only unit k (and BatchNorm's running stats);
    the recorded test error is the vote of the per-layer predictions."""
    import copy
    from repro.data import Data
    from repro.rules.ffzero import FF
    from repro.train import train
    g = torch.Generator().manual_seed(0)
    lab = torch.arange(96) % 10
    x = torch.rand(96, 784, generator=g)
    d = Data("t", "classification", x, torch.nn.functional.one_hot(lab, 10).float(), x[:32],
             torch.nn.functional.one_hot(lab[:32], 10).float(), lab, lab[:32])
    cfg = {"model": {"arch": "cnn", "act": "relu", "loss": "ce", "cnn": {"channels": [2, 2]}},
           "rule": {"name": "ff", "estimator": "dd"}, "optim": {"name": "sgd", "lr": 1e-3}, "epochs": 1,
           "batch_size": 32, "seed": 1}
    snaps = []
    orig = FF.begin_phase

    def spy(self, model, phase, data):
        snaps.append(copy.deepcopy(model.state_dict()))
        orig(self, model, phase, data)
    FF.begin_phase = spy
    try:
        r = train(cfg, device="cpu", data=d)
    finally:
        FF.begin_phase = orig
    snaps.append({k: v.clone() for k, v in r.model.state_dict().items()})
    h = r.record["history"]
    assert [row.get("phase") for row in h[1:]] == [0, 1, 2] and len(h[-1]["test_layer_errors"]) == 3
    units = ["convs.0.", "convs.1.", "layers.0."]
    for k in range(3):
        changed = {n for n in snaps[k] if not torch.equal(snaps[k][n], snaps[k + 1][n]) and "running" not in n
                   and "num_batches" not in n}
        assert changed and all(n.startswith(units[k]) or n.startswith(units[k].replace("convs", "bns"))
                               for n in changed), (k, changed)
    assert "bns.0.weight" not in {n for n in snaps[0] if not torch.equal(snaps[0][n], snaps[1][n])}  # γ not in DD
    rule = r.model._repro_rule
    r.model.eval()
    with torch.no_grad():
        hh, preds = r.model.image(d.x_test), []
        for k in range(2):
            a = r.model.conv_pre(k, hh)
            preds.append(rule.conv_sims(a, k).sum(1).argmax(1))
            hh = r.model.conv_out(k, a)
        preds.append(similarities(r.model.layers[0](hh.flatten(1)), rule.P[0]).argmax(1))
    vote = layer_vote(preds, 10)
    assert abs(h[-1]["test_error"] - 100.0 * float((vote != d.labels_test).float().mean())) < 1e-9


# ------------------------------------------------------------------------------ regression (§2.8)
def test_regression_loss_and_r2_per_layer(float64):
    from repro.rules import make_rule
    from repro.models import MLP
    from repro.rules.ffzero import regression_loss
    s, t = torch.tensor([[0.5], [-0.2], [0.9]]), torch.tensor([0.4, -0.4, 1.0])
    assert abs(float(regression_loss(s, t)) - (0.01 + 0.04 + 0.01) / 3) < 1e-12
    torch.manual_seed(0)
    model = MLP([3, 12, 10], act="identity", loss="mse")
    rule = make_rule({"name": "ff", "estimator": "dd"})
    rule.setup(model, 10)
    assert [p.shape for p in rule.P] == [(1, 12), (1, 10)]
    assert all(abs(float(p.norm()) - 1) < 1e-6 for p in rule.P)  # one antipodal unit prototype per layer
    x, y = torch.randn(20, 3), torch.rand(20, 1) * 2 - 1
    out = rule.evaluate(model, x, y, None)
    h, r2 = x, []
    model.requires_grad_(False)
    for k, lin in enumerate(model.layers):
        z = lin(h)
        pred = torch.nn.functional.normalize(z, dim=1) @ rule.P[k][0]
        mse = float(((pred - y[:, 0]) ** 2).mean())
        r2.append(1 - mse / float(y.var(unbiased=False)))
        h = z
    assert abs(out["loss"] - mse) < 1e-9 and max(abs(a - b) for a, b in zip(out["layer_r2"], r2)) < 1e-9


def test_synthetic_regression_data_follow_their_formulas():
    import math
    from repro import data
    for name in ("ffzero_function1", "ffzero_function2"):
        d = data.load(name)
        assert (len(d.x_train), len(d.x_test)) == (10_000, 2_000) and d.task == "regression"
        assert float(d.x_train.abs().max()) <= 1.0
        assert abs(float(d.y_train.min()) + 1) < 1e-6 and abs(float(d.y_train.max()) - 1) < 1e-6
        x = d.x_test.double()
        f = (torch.sin(x[:, 0]) + torch.cos(x[:, 1]) if name.endswith("1") else
             torch.exp(x[:, 0]) * torch.sin(x[:, 1]) + x[:, 2] * torch.cos(x[:, 3]) - x[:, 4] * x[:, 0])
        y = (f - d.meta["target_mean"]) / d.meta["target_std"]
        torch.testing.assert_close(d.y_test[:, 0].double(), y, atol=1e-6, rtol=0)  # test targets noise-free
        xt = d.x_train.double()
        ft = (torch.sin(xt[:, 0]) + torch.cos(xt[:, 1]) if name.endswith("1") else
              torch.exp(xt[:, 0]) * torch.sin(xt[:, 1]) + xt[:, 2] * torch.cos(xt[:, 3]) - xt[:, 4] * xt[:, 0])
        noise = d.y_train[:, 0].double() * d.meta["target_std"] + d.meta["target_mean"] - ft
        assert math.isclose(float(noise.std() / ft.std()), 0.05, rel_tol=0.1)  # 5 % noise on training targets


def test_mnist_regression_targets_are_scaled_digits(mirror, monkeypatch, tmp_path):
    from repro import data
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(mirror))
    d = data.load("mnist_regression", root=tmp_path, normalize="unit", n_train=100, n_test=50)
    m = data.load("mnist", root=tmp_path, normalize="unit", n_train=100, n_test=50)
    assert torch.equal(d.x_train, m.x_train)
    torch.testing.assert_close(d.y_train[:, 0], 2 * (m.labels_train.float() / 9 - 0.5))
    assert not (tmp_path / "mnist_regression").exists()  # no copy of MNIST's files


def test_out_width_is_only_for_rules_with_their_own_readout():
    import pytest
    from repro.models import ConfigError
    from repro.train import train
    from conftest import tiny_data
    d = tiny_data(task="regression")
    cfg = {"model": {"widths": [8], "act": "identity", "loss": "mse", "out_width": 10}, "rule": {"name": "bp"},
           "epochs": 1}
    with pytest.raises(ConfigError, match="model.out_width"):
        train(cfg, device="cpu", data=d)
    cfg["rule"] = {"name": "ff", "estimator": "dd"}
    r = train(cfg, device="cpu", data=d)
    assert r.record["status"] == "ok" and len(r.record["history"][-1]["test_layer_r2"]) == 2


@pytest.mark.parametrize("arch", ["cnn", "mlp", "regression"])
def test_full_set_passes_in_chunks_equal_one_pass(arch, monkeypatch, float64):
    """Caching layer inputs and evaluating go through the set in memory-bounded chunks; the cached inputs,
    predictions, per-layer errors, losses and R² equal those of one pass over the whole set."""
    from repro.models import build_model
    from repro.rules import make_rule
    from repro.rules import ffzero as FZ
    torch.manual_seed(0)
    if arch == "cnn":
        model = build_model({"arch": "cnn", "act": "relu", "loss": "ce", "cnn": {"channels": [3, 2]}}, 784, 10)
    else:
        model = build_model({"width": 16, "depth": 2, "act": "identity",
                             "loss": "mse" if arch == "regression" else "ce"}, 784, 1 if arch == "regression" else 10)
    model = model.double().eval()
    rule = make_rule({"name": "ff", "estimator": "dd"})
    rule.setup(model, 50)
    rule.P = [p.double() for p in rule.P]
    if arch == "cnn":
        rule.R, rule.Pc = [r.double() for r in rule.R], [p.double() for p in rule.Pc]
    rule.k = 1
    x = torch.rand(50, 784, dtype=torch.float64)
    lab = torch.arange(50) % 10
    y = (torch.rand(50, 1, dtype=torch.float64) * 2 - 1) if arch == "regression" else \
        torch.nn.functional.one_hot(lab, 10).double()
    labels = None if arch == "regression" else lab
    whole = rule.evaluate(model, x, y, labels), rule.features(model, x, 2)
    monkeypatch.setattr(FZ, "CHUNK_ELEMS", 7 * max(784, 3 * 27 * 27))  # 7 rows a chunk
    assert rule.chunk_rows(model) == 7 or arch != "cnn"
    monkeypatch.setattr(rule, "chunk_rows", lambda m: 7)
    parts = rule.evaluate(model, x, y, labels), rule.features(model, x, 2)
    torch.testing.assert_close(parts[1], whole[1])
    for k, v in whole[0].items():
        assert parts[0][k] == pytest.approx(v, rel=1e-12), k
