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
