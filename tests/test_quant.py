"""Quantiser (issue #5): values on the grid, range clipping, stochastic rounding unbiased."""
import pytest
import torch

from repro.models import ConfigError
from repro.quant import quantize, read_noise, write_noise


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_values_lie_on_the_grid(bits, rounding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g, dtype=torch.float64)
    y = quantize(x, bits, rounding, generator=g)
    q = 2 ** (bits - 1) - 1
    s = x.abs().max() / q
    k = y / s
    assert torch.allclose(k, k.round(), atol=1e-9) and k.abs().max() <= q
    assert len(torch.unique(k.round())) <= 2 * q + 1
    if rounding == "nearest":
        assert (y - x).abs().max() <= s / 2 + 1e-12


def test_fixed_range_clips():
    x = torch.tensor([-5.0, -0.26, 0.0, 0.24, 3.0])
    y = quantize(x, 3, scale=1.0)  # q = 3, s = 1/3
    assert torch.allclose(y, torch.tensor([-1.0, -1 / 3, 0.0, 1 / 3, 1.0]))


def test_stochastic_rounding_is_unbiased():
    g = torch.Generator().manual_seed(1)
    x = torch.full((200_000,), 0.3, dtype=torch.float64)
    x[0] = 1.0  # sets the dynamic scale: s = 1/7 at 4 bits, so 0.3 = 2.1 steps
    y = quantize(x, 4, "stochastic", generator=g)
    assert abs(float(y[1:].mean()) - 0.3) < 2e-3
    assert set(torch.unique(y[1:] * 7).round().tolist()) == {2.0, 3.0}
    assert float(quantize(x, 4, "nearest")[1:].mean()) == pytest.approx(2 / 7)  # biased


def test_float_passthrough_zero_and_bad_arguments():
    x = torch.randn(5)
    assert quantize(x, 32) is x
    assert torch.equal(quantize(torch.zeros(3), 4), torch.zeros(3))
    with pytest.raises(ConfigError, match="bits=1"):
        quantize(x, 1)
    with pytest.raises(ConfigError, match="rounding='up'"):
        quantize(x, 4, "up")


def test_quantize_is_the_formula_bit_for_bit_and_all_zeros_stay_zero():
    """Nearest rounding has no host round trip (s = 0 is handled on the device) and both roundings work in place
    after one division: still s·clip(round(x/s)) and s·clip(floor(x/s + U)) exactly, so cached runs stay what
    this code computes; an all-zero tensor gives zeros (no NaN) either way, and
    stochastic rounding of one draws no random numbers (a run's RNG stream is as before)."""
    g = torch.Generator().manual_seed(3)
    for bits in (2, 4, 8):
        x = torch.randn(64, 32, generator=g)
        s = x.abs().max() / (2 ** (bits - 1) - 1)
        ref = torch.clamp(torch.round(x / s), -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) * s
        assert torch.equal(quantize(x, bits), ref)
        g1, g2 = torch.Generator().manual_seed(bits), torch.Generator().manual_seed(bits)
        ref = torch.clamp(torch.floor(x / s + torch.rand(x.shape, generator=g2)), -(2 ** (bits - 1) - 1),
                          2 ** (bits - 1) - 1) * s
        assert torch.equal(quantize(x, bits, "stochastic", generator=g1), ref)
    w = torch.randn(8, requires_grad=True)
    assert not quantize(w * 2.0, 4).requires_grad  # no gradient through rounding (the STE is Hardware.act's)
    for rounding in ("nearest", "stochastic"):
        z = torch.zeros(4, 3)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        y = quantize(z, 3, rounding, generator=g1)
        assert torch.equal(y, z) and not y.isnan().any()
        assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_noise_models():
    g = torch.Generator().manual_seed(2)
    w = torch.ones(100_000)
    w[0] = 2.0
    assert abs(float((write_noise(w, 0.05, g) - w).std()) - 0.1) < 2e-3  # κ·max|W| = 0.1
    r = read_noise(w[1:], 0.1, g)
    assert abs(float(r.std()) - 0.1) < 2e-3 and write_noise(w, 0) is w


# ------------------------------------------------------------------------- hardware in training
def _cfg(rule, hw, epochs=1):
    return {"dataset": {"name": "mnist", "n_train": 64, "n_test": 32},
            "model": {"widths": [16, 8], "act": "relu", "loss": "ce"}, "rule": rule,
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "epochs": epochs, "batch_size": 16, "seed": 1,
            "hardware": hw}


@pytest.fixture
def tiny(monkeypatch):
    from conftest import tiny_data
    from repro import train as T
    d = tiny_data(64, 32, 784, 10)
    monkeypatch.setattr(T, "load_data", lambda c, dev: d)
    return T


@pytest.mark.parametrize("rule", [{"name": "bp"}, {"name": "ftp"}, {"name": "pepita", "keep": 1.0}, {"name": "drtp"}])
def test_weights_are_stored_on_the_grid(tiny, rule):
    res = tiny.train(_cfg(rule, {"bits": 4, "weights": True}, epochs=2))
    for lin in res.model.layers:
        w = lin.weight.detach()
        k = w / (w.abs().max() / 7)
        assert torch.allclose(k, k.round(), atol=1e-4)


def test_float_hardware_is_the_float_run_and_keys_differ(tiny):
    a = tiny.train(_cfg({"name": "ftp"}, None)).record
    b = tiny.train(_cfg({"name": "ftp"}, {"bits": 32})).record
    assert [h["test_loss"] for h in a["history"]] == [h["test_loss"] for h in b["history"]]
    assert tiny.run_key(_cfg({"name": "ftp"}, None)) != tiny.run_key(_cfg({"name": "ftp"}, {"bits": 4}))


def test_bp_signals_are_rounded_in_the_backward_pass():
    from repro.models import MLP, loss_value
    from repro.quant import Hardware
    torch.manual_seed(0)
    m = MLP([6, 5, 3], act="identity", loss="ce")
    m.hw = Hardware({"bits": 3, "signals": True})
    x, t = torch.randn(4, 6), torch.nn.functional.one_hot(torch.arange(4) % 3, 3).float()
    _, hs = m.forward_all(x)
    seen = []
    hs[1].register_hook(lambda g: seen.append(g))
    loss_value("ce", hs[-1], t).backward()
    g = m.layers[0].weight.grad  # = δ_1ᵀ x with δ_1 rounded to 3 bits
    delta = seen[0]
    q = quantize(delta, 3)
    torch.testing.assert_close(g, q.t() @ x)


def test_bad_hardware_config(tiny):
    from repro.models import ConfigError
    with pytest.raises(ConfigError, match="unknown hardware key"):
        tiny.train(_cfg({"name": "bp"}, {"bit": 4}))
    with pytest.raises(ConfigError, match="bits=1"):
        tiny.train(_cfg({"name": "bp"}, {"bits": 1}))
    for hw in ({"bits": 4, "master_copy": True}, {"bits": 32, "weights": True, "master_copy": True},
               {"read_noise": 0.1, "master_copy": True}):  # nothing stored inexactly: no copy to keep
        with pytest.raises(ConfigError, match=r"hardware.master_copy=true needs weights stored rounded "
                                              r"\(hardware.weights=true, bits < 32\) or written with noise"):
            tiny.train(_cfg({"name": "bp"}, hw))
    with pytest.raises(ConfigError, match="hardware.master_copy='yes' must be true or false"):
        tiny.train(_cfg({"name": "bp"}, {"bits": 4, "weights": True, "master_copy": "yes"}))


def test_master_copy_keeps_the_exact_float_sum_and_stores_it_rounded():
    """``hardware.master_copy``: the float copy is the weight after the first step plus every later step's
    update exactly (updates far below the 4-bit grid step, which rounding alone would lose), the stored weight
    is that copy on its own 4-bit grid, and write noise lands on the stored weight only."""
    from repro.quant import Hardware
    hw = Hardware({"bits": 4, "weights": True, "master_copy": True, "write_noise": 0.01})
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, 7))
    start = None
    total = torch.zeros(5, 7)
    for k in range(20):
        d = 1e-3 * torch.randn(5, 7)
        with torch.no_grad():
            p += d
        if start is None:
            start = p.detach().clone()  # the first step: the weight was float (the init) until now
        else:
            total += d
        hw.after_step(iter([p]))  # any iterable of the trained tensors, in the same order every step
        m, stored = hw._master[0], hw._stored[0]
        torch.testing.assert_close(m, start + total, atol=1e-6, rtol=0)
        assert torch.equal(stored, p.detach())
        assert not torch.allclose(p.detach(), m, atol=1e-4)  # rounded (and noisy); the copy is not
    other = torch.nn.Parameter(torch.randn(5, 7))  # another group of the same shape (a layer-wise rule's next phase)
    o0 = other.detach().clone()
    hw.after_step([other])
    assert torch.equal(hw._master[0], o0)  # the copy starts from the new group as it is, not from p's copy
    assert torch.equal(hw._stored[0], other.detach()) and not torch.equal(other.detach(), o0)
    import pickle
    back = pickle.loads(pickle.dumps(hw))  # a checkpoint: the copy travels, the ids do not
    assert back._ids is None and torch.equal(back._master[0], hw._master[0]) and hw._ids is not None
    old = Hardware({"bits": 4, "weights": True})  # as pickled in a checkpoint from before master_copy existed
    for k in ("_master", "_stored", "_ids"):
        del old.__dict__[k]
    del old.cfg["master_copy"]
    resumed = pickle.loads(pickle.dumps(old))
    q0 = torch.nn.Parameter(torch.randn(5, 7))
    resumed.after_step([q0])
    assert resumed.cfg["master_copy"] is False and resumed._master is None
    plain = Hardware({"bits": 4, "weights": True})
    q = torch.nn.Parameter(torch.randn(5, 7))
    w = q.detach().clone()
    plain.after_step([q])
    assert plain._master is None  # off by default: the stored weight is all there is
    k = q.detach() / (w.abs().max() / 7)
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)


def test_master_copy_under_write_noise_alone_stores_the_exact_sum_plus_one_fresh_error():
    """Float weights written with noise (H1, no rounding) and a master copy: the copy is the exact sum of the
    updates, and each stored weight is that copy plus one write's error — the errors do not add up over steps
    as they do without the copy (where the stored weight is all there is)."""
    from repro.quant import Hardware
    kappa = 0.01
    torch.manual_seed(0)
    runs = {}
    for copy in (True, False):
        hw = Hardware({"write_noise": kappa, "master_copy": copy})
        p = torch.nn.Parameter(torch.ones(40, 50))
        start, total = None, torch.zeros(40, 50)
        for k in range(200):
            d = 1e-4 * torch.randn(40, 50)
            with torch.no_grad():
                p += d
            if start is None:
                start = p.detach().clone()
            else:
                total += d
            hw.after_step([p])
            if copy:
                torch.testing.assert_close(hw._master[0], start + total, atol=1e-5, rtol=0)
        runs[copy] = (p.detach() - (start + total)).std().item()  # how far the stored weight is off the sum
    # with the copy: one write's error, κ·max|W| (max|W| ≈ 1 + a few κ); without: ≈ √200 of them
    assert 0.8 * kappa < runs[True] < 1.5 * kappa
    assert runs[False] > 8 * kappa


def test_master_copy_lets_4bit_bp_keep_updates_that_plain_storage_rounds_away(tiny):
    """On a tiny net, the same 4-bit run with and without the copy differs (the copy changes training) and
    each names its own run key; the option is left out of the key while off, so existing runs keep theirs."""
    hw = {"bits": 4, "weights": True, "activations": True, "signals": True}
    a = tiny.train(_cfg({"name": "bp"}, hw, epochs=2)).record
    b = tiny.train(_cfg({"name": "bp"}, {**hw, "master_copy": True}, epochs=2)).record
    assert a["key"] != b["key"] and a["history"] != b["history"]
    assert tiny.run_key(_cfg({"name": "bp"}, hw, epochs=2)) == a["key"]


def test_update_sparsity_counts_zero_updates_and_frozen_weights(mirror, monkeypatch):
    """ftp.md §8 diagnostic. After one step from the run's own init (SGD with momentum: the first step is
    lr·grad), a float run's weight is unchanged wherever its update is 0 (and in a few more places, where
    w + lr·g rounds back to w in float32); rounding the learning signals to 2 bits zeroes more updates."""
    monkeypatch.setenv("REPRO_DATA_MIRROR", str(mirror))
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = load_params("ftp_quantized", root / "params.smoke.yaml", {"bits": [32, 2], "methods": ["BP", F.FTP_OS]})
    sp = F.update_sparsity({**P, "device": "cpu"}, "mnist", steps=1)
    assert set(sp.method) == {"BP", F.FTP_OS} and set(sp.layer) == {1, 2, 3}
    fl = sp[sp.bits == 32]
    assert (fl.frozen >= fl.zero_update - 1e-9).all() and (fl.frozen - fl.zero_update).max() < 1.0
    assert fl[fl.layer == 1].zero_update.min() > 5  # MNIST's blank border pixels give zero columns
    for m, g in sp.groupby("method"):
        assert (g[g.bits == 2].zero_update.values > g[g.bits == 32].zero_update.values).all(), m
    m = F.sparsity_metrics(sp)
    assert set(m) == {"zero_update", "frozen"} and len(m["frozen"]["BP"]["2"]) == 3
