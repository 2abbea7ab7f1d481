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
