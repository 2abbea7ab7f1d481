"""Each rule against an exact reference on a tiny net."""
import copy
import math

import pytest
import torch

from repro.models import MLP, dloss_dy, loss_value
from repro.rules import Batch, make_rule
from repro.rules.f3 import buffer_value
from repro.rules.feedback import DirectFeedback, feedback_matrix



pytestmark = pytest.mark.usefixtures("float64")


def net(loss="bce", act="tanh", sizes=(6, 5, 4, 3), bias=True):
    torch.manual_seed(1)
    return MLP(list(sizes), act=act, loss=loss, bias=bias)


def batch(n=7, n_in=6, n_out=3, loss="bce"):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, n_in, generator=g)
    if loss == "mse":
        y = torch.randn(n, n_out, generator=g)
    else:
        y = torch.nn.functional.one_hot(torch.randint(0, n_out, (n,), generator=g), n_out).double()
    return Batch(torch.arange(n) * 2 + 1, x, y)


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def setup_rule(cfg, model, n_train=20, y_train=None):
    r = make_rule(cfg)
    r.setup(model, n_train)
    if hasattr(r, "init_buffer"):
        r.init_buffer(y_train if y_train is not None else torch.zeros(n_train, model.sizes[-1]))
    for p in model.parameters():
        p.requires_grad_(r.needs_autograd)
    return r


@pytest.mark.parametrize("loss", ["bce", "mse", "ce"])
def test_bp_equals_autograd(loss):
    m = net(loss)
    b = batch(loss=loss)
    ref = copy.deepcopy(m)
    r = setup_rule({"name": "bp"}, m)
    out = r.step(m, b)
    l = loss_value(loss, ref(b.x), b.y)
    g = torch.autograd.grad(l, list(ref.parameters()))
    for a, e in zip(grads(m), g):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)
    assert math.isclose(float(out.loss), float(l.detach()), rel_tol=1e-12)


@pytest.mark.parametrize("loss", ["bce", "mse", "ce"])
def test_output_layer_gradient_is_exact(loss):
    """Every direct-feedback rule gives the output layer the true gradient of the batch-mean loss."""
    m = net(loss)
    b = batch(loss=loss)
    ref = copy.deepcopy(m)
    r = setup_rule({"name": "dfa"}, m)
    r.step(m, b)
    g = torch.autograd.grad(loss_value(loss, ref(b.x), b.y), list(ref.layers[-1].parameters()))
    for a, e in zip([p.grad for p in m.layers[-1].parameters()], g):
        torch.testing.assert_close(a, e)


def manual_hidden(model, e, Bs, x):
    """Hand-written DFA/DRTP/F³ hidden update: δz_i = (e B_i) ⊙ (1 − h_i²); ∇W_i = δz_iᵀ h_{i−1}."""
    h, out = x, []
    for i, lin in enumerate(model.layers[:-1]):
        hn = torch.tanh(h @ lin.weight.T + lin.bias)
        dz = (e @ Bs[i]) * (1 - hn ** 2)
        out.append((dz.T @ h, dz.sum(0)))
        h = hn
    return out


@pytest.mark.parametrize("name", ["dfa", "drtp", "f3"])
def test_hidden_updates_equal_hand_written_formula(name):
    m = net("bce")
    b = batch()
    E0 = torch.randn(20, 3)
    r = setup_rule({"name": name}, m, y_train=E0)
    r.step(m, b)
    y = m(b.x)
    e = {"dfa": b.y - y, "drtp": b.y, "f3": E0[b.idx]}[name]
    for (gw, gb), lin in zip(manual_hidden(m, e, r.B, b.x), m.layers[:-1]):
        torch.testing.assert_close(lin.weight.grad, gw)
        torch.testing.assert_close(lin.bias.grad, gb)


def test_injecting_the_true_gradient_gives_bp():
    """Sanity of the injection path (f3.md §8 (b)): with B_1 = W_2 and e = ∂L/∂z_2, d=1 equals BP."""
    m = net("bce", sizes=(6, 5, 3))
    b = batch()
    ref = copy.deepcopy(m)

    class TrueGrad(DirectFeedback):
        name = "true"

        def feedback(self, batch, y):
            from repro.models import dloss_dz
            return dloss_dz("bce", y, batch.y)

    r = TrueGrad()
    r.setup(m, 20)
    r.B = [m.layers[1].weight.detach().clone()]
    r.step(m, b)
    g = torch.autograd.grad(loss_value("bce", ref(b.x), b.y), list(ref.parameters()))
    for a, e in zip(grads(m), g):
        torch.testing.assert_close(a, e)


def test_rule_does_not_silently_train_as_bp():
    """DFA's hidden update differs from BP's and does not depend on downstream weights (DRTP issue #1)."""
    m = net("bce")
    b = batch()
    r = setup_rule({"name": "drtp"}, m)
    r.step(m, b)
    g1 = m.layers[0].weight.grad.clone()
    with torch.no_grad():
        m.layers[1].weight.mul_(3.0)
        m.layers[2].weight.add_(1.0)
    r.step(m, b)
    torch.testing.assert_close(m.layers[0].weight.grad, g1)
    ref = copy.deepcopy(m).requires_grad_(True)
    gbp = torch.autograd.grad(loss_value("bce", ref(b.x), b.y), ref.layers[0].weight)[0]
    assert not torch.allclose(gbp, g1)


def test_llo_trains_only_the_last_layer():
    m = net("bce")
    r = setup_rule({"name": "llo"}, m)
    assert [id(p) for p in r.trainable(m)] == [id(p) for p in m.layers[-1].parameters()]
    r.step(m, batch())
    assert m.layers[0].weight.grad is None


@pytest.mark.parametrize("ei", ["delayed_error", "delayed_loss", "delayed_error_softmax", "delayed_loss_softmax"])
@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_f3_buffer_values_match_autograd(ei, loss):
    y = torch.rand(5, 3) * 0.9 + 0.05
    t = batch(5, loss=loss).y
    v = buffer_value(ei, loss, y, t)
    yy = y.clone().requires_grad_(True)
    if ei == "delayed_error":
        ref = t - y
    elif ei == "delayed_error_softmax":
        ref = t - torch.softmax(y, 1)
    elif ei == "delayed_loss":
        ref = -torch.autograd.grad(loss_value(loss, yy, t), yy)[0]
    else:
        ref = -torch.autograd.grad(loss_value(loss, torch.softmax(yy, 1), t), yy)[0]
    torch.testing.assert_close(v, ref)


def test_f3_loss_mse_is_scaled_error():
    y, t = torch.randn(8, 1), torch.randn(8, 1)
    torch.testing.assert_close(buffer_value("delayed_loss", "mse", y, t), 2 / 8 * buffer_value("delayed_error", "mse", y, t))


def test_f3_buffer_indexed_by_sample():
    """Reads use E[idx]; writes go to E[idx] with the pre-step output; other entries are untouched."""
    m = net("bce")
    E0 = torch.randn(20, 3)
    r = setup_rule({"name": "f3", "error_info": "delayed_error_one_hot"}, m, y_train=E0)
    b = batch()
    perm = torch.tensor([13, 2, 7, 19, 0, 5, 11])  # shuffled positions
    b = Batch(perm, b.x, b.y)
    torch.testing.assert_close(r.feedback(b, None), b.y * E0[perm])  # one-hot mask at read time
    out = r.step(m, b)
    y_pre = m(b.x).detach()
    torch.optim.SGD(m.parameters(), lr=0.5).step()
    r.after_step(m, b, out)
    torch.testing.assert_close(r.E[perm], b.y - y_pre)  # written unmasked, from the pre-step output
    rest = torch.ones(20, dtype=torch.bool)
    rest[perm] = False
    torch.testing.assert_close(r.E[rest], E0[rest])


def test_pepita_update_equals_formula():
    m = net("ce", act="relu", sizes=(6, 5, 4, 3), bias=False)
    b = batch()
    r = setup_rule({"name": "pepita", "keep": 1.0}, m)
    r.step(m, b)
    W = [lin.weight for lin in m.layers]
    relu = torch.relu
    h1 = relu(b.x @ W[0].T); h2 = relu(h1 @ W[1].T); y = h2 @ W[2].T
    e = torch.softmax(y, 1) - b.y
    xm = b.x + e @ r.F.T
    m1 = relu(xm @ W[0].T); m2 = relu(m1 @ W[1].T); ym = m2 @ W[2].T
    em = torch.softmax(ym, 1) - b.y
    B = len(b.x)
    exp = [(h1 - m1).T @ xm / B, (h2 - m2).T @ m1 / B, em.T @ m2 / B]
    for lin, g in zip(m.layers, exp):
        torch.testing.assert_close(lin.weight.grad, g)
    bound = math.sqrt(6 / 6) * 0.05
    assert r.F.abs().max() <= bound and r.F.shape == (6, 3)


def test_pepita_uses_the_same_dropout_mask_in_both_passes():
    m = net("ce", act="relu", bias=False)
    r = setup_rule({"name": "pepita", "keep": 0.5}, m)
    b = batch(n=1)
    r.step(m, b)
    # a unit dropped in pass 1 is dropped in pass 2 too, so its row of the first-layer update is 0
    torch.manual_seed(123)
    masks = r.masks(m, len(b.x), b.x.device)
    torch.manual_seed(123)
    r.step(m, b)
    dead = (masks[0] == 0).all(0)
    assert dead.any()
    assert torch.all(m.layers[0].weight.grad[dead] == 0)


def test_feedback_initialisations():
    torch.manual_seed(0)
    k = feedback_matrix("kaiming_uniform", 10, 500)
    assert k.abs().max() <= 1 / math.sqrt(500) + 1e-9 and k.abs().max() > 0.9 / math.sqrt(500)
    assert set(feedback_matrix("trinomial", 10, 500).unique().tolist()) == {-1.0, 0.0, 1.0}
    assert set(feedback_matrix("binomial", 10, 500).unique().tolist()) == {0.0, 1.0}
    p = feedback_matrix("pm_identity", 10, 500)
    for j in (0, 7, 10, 19, 20, 499):
        col = torch.zeros(10)
        col[j % 10] = 1.0 if (j % 20) < 10 else -1.0
        torch.testing.assert_close(p[:, j], col.to(p.dtype))
    p2 = feedback_matrix("pm_identity", 3, 8)  # not a multiple of 2C: first columns of the pattern
    torch.testing.assert_close(p2[:, 6:], p2[:, :2])


def test_dloss_dy_matches_autograd_bce_clamp():
    y = torch.tensor([[1e-20, 0.5, 1 - 1e-16]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    yy = y.clone().requires_grad_(True)
    torch.testing.assert_close(dloss_dy("bce", y, t), torch.autograd.grad(loss_value("bce", yy, t), yy)[0])


def test_peak_memory_tracker_counts_allocations_only():
    from repro.bench import PeakTensorMemory
    torch.set_default_dtype(torch.float32)  # restored by the fixture
    a = torch.zeros(1000)
    with PeakTensorMemory() as m:
        a.add_(1)  # in place: no allocation
        v = a[:10]  # view of existing memory
        b = torch.ones(256)  # 1 KiB
        del b
        c = torch.ones(512)  # 2 KiB, after b was freed
    assert m.peak == 2048 and v.shape == (10,) and c.numel() == 512


# ------------------------------------------------------------------ blockwise feedback (F³'s ViT, §2.9)
def _tiny_vit():
    from repro.models import ViT
    torch.manual_seed(0)
    return ViT(10, "ce", width=64, heads=2, head_dim=4, mlp=8).double()


def test_vit_has_the_spec_parameter_count_and_patch_order():
    from repro.models import build_model, patch_order
    m = build_model({"arch": "vit", "loss": "ce"}, 784, 10)
    assert sum(p.numel() for p in m.parameters()) == 965_898  # f3.md §2.9
    img = torch.arange(784).view(28, 28)
    first_patch = img[:7, :7].reshape(-1)
    assert torch.equal(patch_order()[:49], first_patch) and torch.equal(patch_order()[49:98], img[:7, 7:14].reshape(-1))


@pytest.mark.parametrize("name", ["dfa", "drtp", "f3"])
def test_blockwise_feedback_equals_its_formula_on_a_vit(name, float64):
    """Each block's update = ∂⟨block(sg(h_in)), e B_i⟩/∂θ_block; the output layer's = ∂(mean CE)/∂θ_out on
    its own input; F³ in epoch 1 (buffer = targets) is DRTP."""
    import torch.nn.functional as F
    m = _tiny_vit()
    rule = make_rule({"name": name, "feedback_init": "trinomial"})
    rule.setup(m, 6)
    rule.B = [b.double() for b in rule.B]
    assert rule.needs_autograd
    m.requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 784, generator=g, dtype=torch.float64)
    t = F.one_hot(torch.arange(6) % 10, 10).double()
    if name == "f3":
        rule.init_buffer(t)
    rule.step(m, Batch(torch.arange(6), x, t))
    h = x[:, m.order]
    with torch.no_grad():
        y = m(x)
    e = {"dfa": t - torch.softmax(y, 1), "drtp": t, "f3": t}[name]
    for i, blk in enumerate(m.blocks):
        inp = h.detach()
        o = blk(inp)
        exp = torch.autograd.grad((o * (e @ rule.B[i])).sum(), list(blk.parameters()))
        for p, ge in zip(blk.parameters(), exp):
            torch.testing.assert_close(p.grad, ge)
        h = o.detach()
    exp = torch.autograd.grad(F.cross_entropy(m.out(h), t.argmax(1)), list(m.out.parameters()))
    for p, ge in zip(m.out.parameters(), exp):
        torch.testing.assert_close(p.grad, ge)


def _tiny_cnn(bias=True, fc=(5,), stride=1):
    from repro.models import build_model
    torch.manual_seed(2)
    return build_model({"arch": "cnn", "act": "relu", "loss": "ce",
                        "cnn": {"channels": [3, 2], "fc": list(fc), "kernel": 3, "padding": 1, "bn": False,
                                "bias": bias, "stride": stride}}, 784, 10).double()


def _cnn_batch(n=5):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(n, 784, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(n) % 10, 10).double()
    return Batch(torch.arange(n), x, y)


def _unit_outputs(model, x, ws):
    """Conv outputs before pooling and FC outputs, computed from the weights ``ws`` (autograd leaves)."""
    import torch.nn.functional as F
    outs, ins, h, nc = [], [], model.image(x), len(model.convs)
    for k, u in enumerate(model.units):
        ins.append(h)
        if k < nc:
            o = torch.relu(F.conv2d(h.detach(), ws[k], u.bias, stride=u.stride, padding=u.padding))
            h = F.max_pool2d(o, 2).detach()
            h = h.flatten(1) if k == nc - 1 else h
        else:
            o = h.detach() @ ws[k].t() + (u.bias if u.bias is not None else 0)
            h = o.detach()
        outs.append(o)
    return ins, outs


@pytest.mark.parametrize("name", ["dfa", "drtp", "f3"])
@pytest.mark.parametrize("stride", [1, 2])
def test_direct_feedback_on_a_cnn_equals_its_formula(name, stride):
    """Unit k (conv block before pooling, or hidden FC layer) gets g_k = e B_k reshaped to its output:
    its weight update is the gradient of ⟨act(unit(sg(h_in))), sg(g_k)⟩; the output layer's is exact."""
    model, b = _tiny_cnn(stride=stride), _cnn_batch()
    E0 = torch.randn(20, 10, dtype=torch.float64)
    r = setup_rule({"name": name}, model, y_train=E0)
    r.B = [B.double() for B in r.B]
    assert [B.shape[1] for B in r.B] == [math.prod(s) for s in model.unit_shapes()]
    r.step(model, b)
    ws = [u.weight.detach().clone().requires_grad_(True) for u in model.units]
    _, outs = _unit_outputs(model, b.x, ws)
    y = outs[-1]
    e = {"dfa": b.y - torch.softmax(y, 1), "drtp": b.y, "f3": E0[b.idx]}[name]
    for k, u in enumerate(model.units[:-1]):
        g = (e @ r.B[k]).view_as(outs[k])
        exp = torch.autograd.grad((outs[k] * g.detach()).sum(), ws[k])[0]
        torch.testing.assert_close(u.weight.grad, exp)
    ce = torch.nn.functional.cross_entropy(y, b.y.argmax(1))
    torch.testing.assert_close(model.layers[-1].weight.grad, torch.autograd.grad(ce, ws[-1])[0])


def test_pepita_on_a_cnn_equals_its_formula():
    """Two passes, the second from x̃ = x + e Fᵀ; unit k's update is the gradient of ⟨unit(sg(h̃_in)),
    sg(h_k − h̃_k)⟩ / B (a conv block: conv2d_weight(h̃_in, h − h̃)), the output's ẽᵀ h̃_in / B."""
    model, b = _tiny_cnn(bias=False), _cnn_batch()
    r = setup_rule({"name": "pepita", "keep": 1.0}, model)
    assert r.F.shape == (784, 10)
    r.F = r.F.double()
    r.step(model, b)
    ws = [u.weight.detach().clone().requires_grad_(True) for u in model.units]
    _, hs = _unit_outputs(model, b.x, ws)
    e = torch.softmax(hs[-1], 1) - b.y
    xm = b.x + e.detach() @ r.F.t()
    ins, hm = _unit_outputs(model, xm, ws)
    em = torch.softmax(hm[-1], 1) - b.y
    B = len(b.x)
    for k, u in enumerate(model.units):
        if k == len(model.units) - 1:
            exp = em.detach().t() @ ins[k] / B
        else:
            # the gradient of ⟨unit_pre(sg(h̃_in)), sg(h − h̃)⟩: PEPITA applies no activation derivative
            pre = (torch.nn.functional.conv2d(ins[k].detach(), ws[k], stride=u.stride, padding=u.padding)
                   if k < len(model.convs) else ins[k].detach() @ ws[k].t())
            exp = torch.autograd.grad((pre * (hs[k] - hm[k]).detach()).sum() / B, ws[k])[0]
        torch.testing.assert_close(u.weight.grad, exp)


def test_cnn_feedback_rules_reject_what_they_do_not_implement():
    from repro.models import ConfigError, build_model
    bn = build_model({"arch": "cnn", "cnn": {"channels": [2]}}, 784, 10)  # BatchNorm by default
    for name in ("dfa", "drtp", "f3", "llo", "pepita"):
        with pytest.raises(ConfigError, match="bn=false"):
            make_rule({"name": name, **({"keep": 1.0} if name == "pepita" else {})}).setup(bn, 8)
    plain = build_model({"arch": "cnn", "cnn": {"channels": [2], "bn": False}}, 784, 10)
    with pytest.raises(ConfigError, match="rule.keep=1"):
        make_rule({"name": "pepita"}).setup(plain, 8)
    with pytest.raises(ConfigError, match="MLPs only"):
        make_rule({"name": "pepita_wm"}).setup(plain, 8)


def test_bp_with_bjorck_keeps_the_gradient_and_projects_every_weight_after_the_step():
    """foton.md §6 item 10: BP with per-step Björck projection — the update is plain BP's; after the optimizer
    step every weight matrix has orthonormal rows (non-increasing widths) again."""
    from repro.models import ConfigError, build_model
    from repro.rules.foton import bjorck
    torch.manual_seed(0)
    m = build_model({"arch": "mlp", "widths": [16, 12], "act": "relu", "loss": "ce", "bias": False,
                     "init": "orthogonal"}, 20, 10)
    plain = copy.deepcopy(m)
    b = Batch(torch.arange(8), torch.randn(8, 20), torch.eye(10)[torch.randint(0, 10, (8,))])
    r, r0 = setup_rule({"name": "bp", "ortho_every": 1, "bjorck_tol": 1e-7}, m), setup_rule({"name": "bp"}, plain)
    out, out0 = r.step(m, b), r0.step(plain, b)
    for a, e in zip(grads(m), grads(plain)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    with torch.no_grad():
        for p, p0 in zip(m.parameters(), plain.parameters()):
            p -= 0.5 * p.grad
            p0 -= 0.5 * p0.grad
    r.after_step(m, b, out)
    r0.after_step(plain, b, out0)
    for lin, lin0 in zip(m.layers, plain.layers):
        w = lin.weight.detach()
        torch.testing.assert_close(w @ w.t(), torch.eye(w.shape[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(w, bjorck(lin0.weight.detach(), tol=1e-7))  # projected from the plain step
        assert not torch.allclose(lin0.weight @ lin0.weight.t(), torch.eye(w.shape[0]), atol=1e-3)  # plain BP is off
    with pytest.raises(ConfigError, match="rule.ortho_every"):
        make_rule({"name": "bp", "ortho_every": -1})


def test_bp_with_dropout_is_autograd_of_the_masked_net():
    """foton.md §6 item 13: BP with dropout (keep < 1) = autograd of the loss of the net whose hidden
    pre-activations are multiplied by inverted-dropout masks drawn from the global RNG as FOTON draws them."""
    from repro.models import ConfigError, build_model
    from repro.rules.base import dropout_masks
    torch.manual_seed(0)
    m = build_model({"arch": "mlp", "widths": [16, 12], "act": "relu", "loss": "ce", "bias": False}, 20, 10)
    ref = copy.deepcopy(m)
    b = Batch(torch.arange(8), torch.randn(8, 20), torch.eye(10)[torch.randint(0, 10, (8,))])
    r = setup_rule({"name": "bp", "keep": 0.5}, m)
    torch.manual_seed(3)
    out = r.step(m, b)
    torch.manual_seed(3)
    masks = dropout_masks(ref, 8, 0.5, b.x.device)
    assert any((mk == 0).any() for mk in masks)  # some units dropped
    l = loss_value("ce", ref.forward_all(b.x, masks)[1][-1], b.y)
    for a, e in zip(grads(m), torch.autograd.grad(l, list(ref.parameters()))):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    assert float(out.loss) == float(l.detach())
    plain = setup_rule({"name": "bp"}, copy.deepcopy(ref))
    assert not torch.equal(plain.step(ref, b).loss, out.loss)  # without dropout: another loss
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="rule.keep"):
            make_rule({"name": "bp", "keep": bad})


# ------------------------------------------------- 2×2 max pooling without autograd (models.max_pool_2x2)
@pytest.mark.parametrize("shape", [(3, 4, 24, 24), (2, 3, 7, 9), (1, 2, 2, 3), (5, 1, 3, 4)])
def test_max_pool_2x2_equals_max_pool2d_with_ties_nan_inf_and_odd_sizes(shape):
    from repro.models import max_pool_2x2
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(*shape, generator=g))  # ReLU: many exact ties at 0
    x.view(-1)[:: 7] = 1.5  # ties among positive values
    if x.numel() > 20:
        x.view(-1)[3], x.view(-1)[11], x.view(-1)[17] = float("nan"), float("inf"), -float("inf")
    ref = torch.nn.functional.max_pool2d(x, 2)
    out = max_pool_2x2(x)
    assert out.shape == ref.shape
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(), ref.nan_to_num())


def test_cnn_pools_without_autograd_by_max_pool_2x2_and_with_it_by_max_pool2d(monkeypatch):
    """Forward-only rules and evaluation take the fast path; BP's autograd graph keeps F.max_pool2d (its
    gradient routes each window to one index, which a maximum of two views would split on ties)."""
    from repro import models as M
    m = M.CNN((1, 8, 8), 3, channels=[2], kernel=3, padding=1, bn=False)
    calls = []
    monkeypatch.setattr(M, "max_pool_2x2", lambda h: calls.append("fast") or torch.nn.functional.max_pool2d(h, 2))
    x = torch.randn(4, 64)
    with torch.no_grad():
        m(x)
    assert calls == ["fast"]
    m(x).sum().backward()  # parameters require grad: the pooled map is in the graph
    assert calls == ["fast"]
    x_leaf = torch.randn(4, 2, 8, 8)
    assert torch.equal(m.pool(x_leaf), torch.nn.functional.max_pool2d(x_leaf, 2))
    assert calls == ["fast", "fast"]  # no grad needed through a map that does not require it
