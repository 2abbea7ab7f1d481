"""FTP (issue #5, a reconstruction): targets equal the formula; updates equal autograd on the local
losses; the linear reading reduces to DFA with B = G; nothing crosses a layer."""
import copy

import pytest
import torch

from repro.models import MLP
from repro.rules import Batch, make_rule

pytestmark = pytest.mark.usefixtures("float64")


def setup(act="tanh", sizes=(6, 5, 4, 3), **rule):
    torch.manual_seed(0)
    m = MLP(list(sizes), act=act, loss="ce").requires_grad_(False)
    r = make_rule({"name": "ftp", **rule})
    r.setup(m, 10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, sizes[0], generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (7,), generator=g), sizes[-1]).double()
    return m, r, Batch(torch.arange(7), x, y)


@pytest.mark.parametrize("mode", ["scale", "output_step"])
def test_targets_equal_the_formula(mode):
    m, r, b = setup(gamma=0.3, gamma_mode=mode)
    _, hs = m.forward_all(b.x)
    taus = r.targets(m, hs, b.y)
    yhat = torch.softmax(hs[-1], 1)
    if mode == "scale":
        t1 = hs[1] + 0.3 * (torch.tanh(b.y @ r.G) - torch.tanh(yhat @ r.G))
    else:
        t1 = hs[1] + torch.tanh((yhat + 0.3 * (b.y - yhat)) @ r.G) - torch.tanh(yhat @ r.G)
    torch.testing.assert_close(taus[0], t1)
    torch.testing.assert_close(taus[1], torch.tanh(m.layers[1](t1)))  # pass 2 through the usual weights
    assert r.G.shape == (3, 5) and not r.G.requires_grad


def test_updates_equal_autograd_on_the_local_losses():
    m, r, b = setup()
    r.step(m, b)
    _, hs = m.forward_all(b.x)
    taus = r.targets(m, hs, b.y)
    ref = copy.deepcopy(m).requires_grad_(True)
    loss = 0
    for i, lin in enumerate(ref.layers[:-1]):
        out = torch.tanh(lin(hs[i].detach()))
        loss = loss + 0.5 * ((out - taus[i].detach()) ** 2).sum(1).mean()
    loss = loss + torch.nn.functional.cross_entropy(ref.layers[-1](hs[-2].detach()), b.y)
    g = torch.autograd.grad(loss, list(ref.parameters()))
    for p, gi in zip(m.parameters(), g):
        torch.testing.assert_close(p.grad, gi)


def test_linear_one_hidden_layer_is_dfa_with_g_as_feedback():
    m, r, b = setup(act="identity", sizes=(6, 5, 3), psi="identity", gamma=0.5)
    r.step(m, b)
    yhat = torch.softmax(m(b.x), 1)
    # FTP: δ_1 = h_1 − τ_1 = γ (ŷ − y) G; DFA (F³-code convention) injects (y − ŷ) B, not divided by B
    dfa = make_rule({"name": "dfa"})
    m2 = copy.deepcopy(m)
    dfa.setup(m2, 10)
    dfa.B = [r.G.clone()]
    dfa.step(m2, b)
    torch.testing.assert_close(m.layers[0].weight.grad, -0.5 / 7 * m2.layers[0].weight.grad)
    torch.testing.assert_close((yhat - b.y).T @ m.forward_all(b.x)[1][1] / 7, m.layers[1].weight.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_hot_targets_take_rows_of_psi_g_bit_for_bit(dtype):
    """ψ(yG) for one-hot y is a row gather of ψ(G), equal to the product bit for bit (MLP and CNN, 20
    steps each: identical weights), recomputed when G is replaced (a checkpoint); [B, 1] regression
    targets and non-one-hot targets take the product."""
    import torch.nn.functional as F

    def product(self, model, y):  # the formula as written
        return self.psi(model, y @ self.G)

    for build in (lambda: setup(act="relu", sizes=(20, 64, 32, 10))[:2], lambda: _ftp_cnn((4,), ())):
        runs = []
        for patch in (False, True):
            torch.manual_seed(3)
            model, rule = build()
            model = model.to(dtype)
            rule.G = rule.G.to(dtype)
            if patch:
                rule.psi_label = product.__get__(rule)
            g = torch.Generator().manual_seed(4)
            for _ in range(20):
                x = torch.rand(9, model.layers[0].in_features if not getattr(model, "convs", ()) else 784,
                               generator=g, dtype=dtype)
                y = F.one_hot(torch.randint(0, 10, (9,), generator=g), 10).to(dtype)
                rule.step(model, Batch(torch.arange(9), x, y))
                with torch.no_grad():
                    for p in model.parameters():
                        p -= 0.1 * p.grad
            runs.append([p.clone() for p in model.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*runs))

    model, rule = setup(act="relu", sizes=(6, 5, 4, 3))[:2]
    y = F.one_hot(torch.tensor([2, 0, 1, 2]), 3).double()
    assert torch.equal(rule.psi_label(model, y), torch.relu(y @ rule.G))
    rule.load_state_dict({"G": torch.randn(3, 5, dtype=torch.float64)})  # the cached ψ(G) follows G
    assert torch.equal(rule.psi_label(model, y), torch.relu(y @ rule.G))
    soft = setup(act="relu", sizes=(6, 5, 4, 3))[1]
    s = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.25, 0.25]], dtype=torch.float64)  # not one-hot: the product
    assert torch.equal(soft.psi_label(model, s), torch.relu(s @ soft.G)) and soft._one_hot is False
    reg = setup(act="relu", sizes=(6, 5, 4, 1))[1]
    r = torch.tensor([[1.0], [0.0], [-0.5]], dtype=torch.float64)  # regression's [B, 1]: the product
    assert torch.equal(reg.psi_label(model, r), torch.relu(r @ reg.G)) and reg._one_hot is False


def test_bad_parameters():
    from repro.models import ConfigError
    with pytest.raises(ConfigError, match="rule.gamma_mode='x'"):
        make_rule({"name": "ftp", "gamma_mode": "x"})
    with pytest.raises(ConfigError, match="depth"):
        make_rule({"name": "ftp"}).setup(MLP([4, 3], loss="ce"), 1)


def _ftp_cnn(channels, fc=(), gamma=0.3):
    from repro.models import build_model
    model = build_model({"arch": "cnn", "act": "relu", "loss": "ce",
                         "cnn": {"channels": list(channels), "fc": list(fc), "kernel": 5, "padding": 0, "bn": False,
                                 "bias": False}}, 784, 10).double()
    rule = make_rule({"name": "ftp", "gamma": gamma})
    rule.setup(model, 8)
    rule.G = rule.G.double()
    return model, rule


@pytest.mark.parametrize("channels,fc", [((4,), ()), ((3, 2), (6,))])
def test_cnn_targets_and_updates_equal_the_local_losses(float64, channels, fc):
    """ftp.md §2.5: τ_1 = h_1 + γ(ψ(yG) − ψ(ŷG)) on the first conv map before pooling; pass 2 from τ_1;
    every hidden weight layer's update = autograd of ½‖act(layer(sg(h_in))) − sg(τ)‖² (batch mean), the
    output layer's = autograd of CE on its own input."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    model, rule = _ftp_cnn(channels, fc)
    x = torch.rand(6, 784)
    y = F.one_hot(torch.arange(6) % 10, 10).double()
    out = rule.step(model, Batch(torch.arange(6), x, y))
    taus = out.extras["taus"]
    # the first target by its formula
    h1 = torch.relu(model.convs[0](model.image(x)))
    yhat = torch.softmax(model(x), 1)
    exp = h1 + 0.3 * (torch.relu(y @ rule.G) - torch.relu(yhat @ rule.G)).view_as(h1)
    torch.testing.assert_close(taus[0], exp)
    # pass 2 and the local losses, unit by unit, by autograd
    nc = len(model.convs)
    h, t = model.image(x), F.max_pool2d(taus[0], 2)
    units = list(model.convs) + list(model.layers)
    for k, unit in enumerate(units):
        hin = h.detach()
        w = unit.weight.detach().clone().requires_grad_(True)
        if k < nc:
            a = F.conv2d(hin, w)
            o = torch.relu(a)
            loss = 0.5 * ((o - taus[k]) ** 2).sum() / len(x)
            h = F.max_pool2d(o, 2).detach()
            if k == nc - 1:
                h = h.flatten(1)
        else:
            a = hin @ w.t()
            if k < len(units) - 1:
                o = a  # fc_act identity
                loss = 0.5 * ((o - taus[k]) ** 2).sum() / len(x)
            else:
                loss = F.cross_entropy(a, y.argmax(1))
            h = a.detach()
        if 0 < k < len(units) - 1:  # pass 2: the target is the ordinary forward of the previous target
            if k < nc:
                exp_t = torch.relu(F.conv2d(t, unit.weight))
                t = F.max_pool2d(exp_t, 2)
                if k == nc - 1:
                    t = t.flatten(1)
            else:
                exp_t = t @ unit.weight.t()
                t = exp_t
            torch.testing.assert_close(taus[k], exp_t)
        elif k == 0 and nc == 1:
            t = t.flatten(1)
        g = torch.autograd.grad(loss, w)[0]
        torch.testing.assert_close(unit.weight.grad, g)


def test_cnn_rounds_its_targets_like_the_mlp():
    """hardware.signals ["targets"] rounds τ_1 (then pass 2 starts from it) and every later hidden target,
    not pass 2's output; the local errors use the rounded targets."""
    import torch.nn.functional as F
    from repro.quant import Hardware, quantize
    torch.manual_seed(0)
    model, rule = _ftp_cnn((3, 2), (6,))
    model.hw = Hardware({"bits": 3, "signals": ["targets"]})
    x = torch.rand(6, 784, dtype=torch.float64)
    y = F.one_hot(torch.arange(6) % 10, 10).double()
    taus = rule.step(model, Batch(torch.arange(6), x, y)).extras["taus"]
    h1 = torch.relu(model.convs[0](model.image(x)))
    yhat = torch.softmax(model(x), 1)
    t1 = quantize((h1 + 0.3 * (torch.relu(y @ rule.G) - torch.relu(yhat @ rule.G)).view_as(h1)).flatten(1), 3)
    torch.testing.assert_close(taus[0], t1.view_as(h1))
    t2 = torch.relu(F.conv2d(F.max_pool2d(taus[0], 2), model.convs[1].weight))
    torch.testing.assert_close(taus[1], quantize(t2, 3))
    for t in taus[:-1]:  # every hidden target on the 3-bit grid of its own range
        torch.testing.assert_close(quantize(t, 3), t)
    assert not torch.equal(quantize(taus[-1], 3), taus[-1])  # pass 2's output is not a target: not rounded


def test_ftp_cnn_rejects_batchnorm_and_dropout():
    from repro.models import ConfigError, build_model
    m = build_model({"arch": "cnn", "cnn": {"channels": [2]}}, 784, 10)  # BatchNorm by default
    with pytest.raises(ConfigError, match="bn=false"):
        make_rule({"name": "ftp"}).setup(m, 8)
    m = build_model({"arch": "cnn", "cnn": {"channels": [2], "bn": False}}, 784, 10)
    with pytest.raises(ConfigError, match="rule.keep"):
        make_rule({"name": "ftp", "keep": 0.9}).setup(m, 8)


def test_noise_jobs_share_the_clean_run_and_reject_unknown_kinds():
    """ftp.md §3.2 (H): one non-ideality at a time; the clean point is the plain run of the accuracy table."""
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = {**load_params("ftp_noise", root / "params.smoke.yaml"), "stable_gamma": None,  # its part: own test
         "master_copy": None}  # also its own test
    jobs = F.noise_jobs(P, "mnist")
    clean = [j for j in jobs if j["value"] in (0.0, 32)]
    assert clean and all("hardware" not in j["config"] for j in clean)
    assert len({run_key(j["config"]) for j in clean}) == len(P["methods"])  # one plain run per method
    hw = {j["kind"]: j["config"]["hardware"] for j in jobs if j["value"] not in (0.0, 32)}
    assert hw == {"write_noise": {"write_noise": 0.05}, "read_noise": {"read_noise": 0.05},
                  "adc_bits": {"bits": 4, "activations": True},
                  "conductance_bits": {"bits": 4, "weights": True, "weight_rounding": "nearest"}}
    T = {**load_params("ftp_table", root / "params.yaml"), "seeds": [1]}
    N = {**load_params("ftp_noise", root / "params.yaml"), "seeds": [1]}
    table_bp = [j for j in F.table_jobs(T, "mnist") if j["method"] == "BP"][0]["config"]
    three = F.table_jobs({**T, "seeds": [1, 2, 3], "cnn": {**T["cnn"], "seeds": [1]}}, "mnist")
    table = [j for j in three if j["part"] == "table"]  # (paper_length has CNN rows on its own cnn_seeds)
    assert {j["seed"] for j in table if j["method"].endswith("CNN")} == {1}  # cnn.seeds: the CNN rows' seeds
    assert {j["seed"] for j in table if j["method"] == "BP"} == {1, 2, 3}
    no_cnn_seeds = {k: v for k, v in T["cnn"].items() if k != "seeds"}  # default: the table's seeds
    assert {j["seed"] for j in F.table_jobs({**T, "seeds": [1, 2], "cnn": no_cnn_seeds}, "mnist")
            if j["method"].endswith("CNN") and j["part"] == "table"} == {1, 2}
    noise_bp = [j for j in F.noise_jobs(N, "mnist") if j["method"] == "BP" and j["value"] == 0.0][0]["config"]
    assert run_key(table_bp) == run_key(noise_bp)  # paper scale: the clean runs are the table's
    with pytest.raises(ConfigError, match=r"ftp_noise\.noise: \['thermal'\] unknown; allowed: write_noise, read_noise"):
        F.noise_jobs({**P, "noise": {"thermal": [0.1]}}, "mnist")


def test_alignment_jobs_measure_and_metrics_turn_cosines_into_angles():
    import numpy as np
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = load_params("ftp_alignment", root / "params.yaml")
    T = {**load_params("ftp_table", root / "params.yaml"), "seeds": P["seeds"]}
    jobs = F.alignment_jobs(P)
    assert [j["method"] for j in jobs] == P["methods"] * len(P["seeds"])
    table = {(j["method"], j["seed"]): j["config"] for j in F.table_jobs(T, "mnist") if j["method"] in P["methods"]
             and j.get("gamma") in (None, T["gamma"]) and j["part"] == "table"}
    for j in jobs:  # the table's run, measured: only align_every differs
        assert j["config"]["align_every"] == P["align_every"]
        assert {**j["config"], "align_every": 0} == {**table[j["method"], j["seed"]], "align_every": 0}
        assert run_key(j["config"]) != run_key(table[j["method"], j["seed"]])
    rows = [{"method": "FTP", "seed": 1, "epoch": e, "status": "ok", "layer": lay, "cos": c,
             "angle": float(np.degrees(np.arccos(c)))}
            for e, cs in [(1, (0.5, 0.2, 1.0)), (2, (0.7, 0.1, 1.0))]
            for lay, c in zip(["W1", "W2", "W3 (output)"], cs)]
    m = F.alignment_metrics(pd.DataFrame(rows))
    assert m["angle_deg"]["FTP"]["W1"] == {"1": pytest.approx(60.0), "2": pytest.approx(np.degrees(np.arccos(0.7)))}
    assert m["ftp_hidden_within_90_every_epoch"] is True
    assert m["ftp_hidden_max_angle_deg"] == pytest.approx(np.degrees(np.arccos(0.1)))
    rows.append({**rows[1], "epoch": 3, "cos": -0.1, "angle": float(np.degrees(np.arccos(-0.1)))})
    assert F.alignment_metrics(pd.DataFrame(rows))["ftp_hidden_within_90_every_epoch"] is False
    rows.append({**rows[2], "epoch": 3, "cos": -1.0, "angle": 180.0, "layer": "W3 (output)"})  # output: not checked
    assert F.alignment_metrics(pd.DataFrame(rows[:6] + rows[-1:]))["ftp_hidden_within_90_every_epoch"] is True
    div = [{**r, "status": "diverged"} for r in rows[:3]]  # angles fine before the NaN, but it diverged
    assert F.alignment_metrics(pd.DataFrame(div))["ftp_hidden_within_90_every_epoch"] is False


def test_diverged_runs_count_at_chance_and_an_untrained_ftp_cannot_be_robust():
    """A diverged FTP must not vanish from the means (it would leave only BP, or make a 'robustness' check
    pass by having nothing to lose)."""
    import pandas as pd
    from repro.figures import ftp as F

    def row(m, bits, acc, status="ok"):
        return {"method": m, "level": "full", "bits": bits, "seed": 1, "status": status,
                "final_test_acc": acc, "best_test_acc": acc, "gamma": 0.2 if m.startswith("FTP") else None}

    P = {"gamma": 0.2}
    t = F.metrics(pd.DataFrame([row("BP", 32, 98.0), row("FTP", 32, 9.8, "diverged"), row(F.FTP_OS, 32, 97.0)]), P)
    assert t["final_test_acc"]["FTP"]["mean"] == 9.8 and t["diverged"]["FTP"] == 1
    assert t["ftp_fp32_within_2_of_bp"] is False and t["ftp_os_fp32_within_2_of_bp"] is True
    rows = [row("BP", 32, 98.0), row("BP", 4, 80.0), row("BP", 2, 55.0),
            row("FTP", 32, 9.8, "diverged"), row("FTP", 4, 9.8, "diverged"), row("FTP", 2, 9.8),
            row(F.FTP_OS, 32, 97.0), row(F.FTP_OS, 4, 90.0), row(F.FTP_OS, 2, 60.0)]
    q = F.quantized_metrics(pd.DataFrame(rows))
    assert q["final_test_acc"]["full"]["FTP"]["32"] == 9.8 and q["diverged"]["full"]["FTP"] == 2
    assert q["ftp_drops_le4_bits"]["2"] == {"FTP": 0.0, "BP": 43.0}
    assert q["ftp_degrades_less_than_bp_le4"] is False  # nothing to lose: it never learned
    assert q["ftp_os_degrades_less_than_bp_le4"] is True  # 7 < 18 and 37 < 43
    assert q["ftp_os_compared_at_le4"] == ["4", "2"]
    assert q["seeds"] == [1] and q["final_test_acc_sd"]["full"]["BP"]["4"] == 0.0  # one seed: no spread
    rows[-1] = row(F.FTP_OS, 2, 30.0)  # 67 > 43: it loses more where BP still learns
    assert F.quantized_metrics(pd.DataFrame(rows))["ftp_os_degrades_less_than_bp_le4"] is False
    two = rows + [{**row("BP", 4, 84.0), "seed": 2}]  # a second seed: mean and sample sd over seeds
    q2 = F.quantized_metrics(pd.DataFrame(two))
    assert q2["seeds"] == [1, 2] and q2["final_test_acc"]["full"]["BP"]["4"] == 82.0
    assert abs(q2["final_test_acc_sd"]["full"]["BP"]["4"] - 8 ** 0.5) < 1e-12


def test_quantized_robustness_is_judged_where_a_method_still_learns():
    """A bit width ≤ 4 where BP and the reading are both at chance says nothing (the reading with the lower
    32-bit accuracy would 'drop less' there): it is left out; with none left the check fails."""
    import pandas as pd
    from repro.figures import ftp as F

    def q(accs):
        return F.quantized_metrics(pd.DataFrame([
            {"method": m, "level": "full", "bits": b, "seed": 1, "status": "ok", "final_test_acc": a,
             "best_test_acc": a, "gamma": 0.2 if m.startswith("FTP") else None} for m, b, a in accs]))
    chance = [("BP", 4, 9.8), ("BP", 2, 9.8), (F.FTP_OS, 4, 11.3), (F.FTP_OS, 2, 9.8)]
    # everything ≤ 4 bits at chance; FTP's 32-bit run is 1 point lower, so its drop is smaller — the trap
    m = q([("BP", 32, 98.0), (F.FTP_OS, 32, 97.0)] + chance)
    assert m["ftp_os_drops_le4_bits"]["4"][F.FTP_OS] < m["ftp_os_drops_le4_bits"]["4"]["BP"]
    assert m["ftp_os_compared_at_le4"] == [] and m["ftp_os_degrades_less_than_bp_le4"] is False
    # at 4 bits BP still learns and FTP does not; at 2 both at chance (FTP 'drops less' there): not robust
    m = q([("BP", 32, 98.0), ("BP", 4, 91.0), ("BP", 2, 9.8), (F.FTP_OS, 32, 97.0), (F.FTP_OS, 4, 11.3),
           (F.FTP_OS, 2, 9.8)])
    assert m["ftp_os_compared_at_le4"] == ["4"] and m["ftp_os_degrades_less_than_bp_le4"] is False
    # FTP keeps learning at 4 bits where BP is at chance; 2 bits both at chance → robust
    m = q([("BP", 32, 98.0), ("BP", 4, 9.8), ("BP", 2, 9.8), (F.FTP_OS, 32, 97.0), (F.FTP_OS, 4, 80.0),
           (F.FTP_OS, 2, 9.8)])
    assert m["ftp_os_compared_at_le4"] == ["4"] and m["ftp_os_degrades_less_than_bp_le4"] is True
    assert F.robustness_summary(m) == {k: m.get(k) for k in F.ROBUSTNESS_KEYS}
    assert F.robustness_summary(m)["ftp_os_compared_at_le4"] == ["4"]


def test_noise_robustness_is_judged_where_a_method_still_learns():
    """Both at chance at the harshest setting says nothing: FTP's lower clean accuracy would 'drop less'."""
    import pandas as pd
    from repro.figures import ftp as F
    os_ = F.FTP_OS

    def fin(rows):
        return pd.DataFrame([{"kind": "write_noise", "method": m, "value": v, "seed": 1, "status": "ok",
                              "final_test_acc": a} for m, v, a in rows])
    # both collapse at 0.1; at 0.02 BP still learns and FTP does not → not more robust
    m = F.noise_metrics(fin([("BP", 0.0, 98.0), ("BP", 0.02, 90.0), ("BP", 0.1, 9.8),
                             (os_, 0.0, 97.0), (os_, 0.02, 10.0), (os_, 0.1, 9.8)]))
    assert m["compared_at"]["write_noise"][os_] == 0.02
    assert m["ftp_os_more_robust_write_noise"] is False
    assert m["drop_at_harshest"]["write_noise"][os_] < m["drop_at_harshest"]["write_noise"]["BP"]  # the trap
    # FTP keeps learning where BP collapses → more robust
    m = F.noise_metrics(fin([("BP", 0.0, 98.0), ("BP", 0.02, 20.0), ("BP", 0.1, 9.8),
                             (os_, 0.0, 97.0), (os_, 0.02, 80.0), (os_, 0.1, 9.8)]))
    assert m["compared_at"]["write_noise"][os_] == 0.02 and m["ftp_os_more_robust_write_noise"] is True
    # every noisy setting at chance for both → robustness not shown
    m = F.noise_metrics(fin([("BP", 0.0, 98.0), ("BP", 0.1, 9.8), (os_, 0.0, 97.0), (os_, 0.1, 9.8)]))
    assert m["compared_at"]["write_noise"][os_] is None and m["ftp_os_more_robust_write_noise"] is False


def test_noise_stable_gamma_reruns_the_ftp_readings_and_is_judged_against_the_sweeps_bp():
    """``ftp_noise.stable_gamma``: the FTP readings again on every non-ideality at another γ (part
    ``stable_gamma``; the clean runs are the quantisation sweep's γ runs: same key); their checks use the
    sweep's BP and stay out of the sweep's numbers; a bad value is named."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    N = {**load_params("ftp_noise", root / "params.yaml"), "seeds": [1], "stable_gamma": 0.05, "master_copy": None}
    jobs = F.noise_jobs(N, "mnist")
    st = [j for j in jobs if j["part"] == "stable_gamma"]
    per_seed = sum(len(v) for v in N["noise"].values())
    assert len(st) == 2 * per_seed and {j["method"] for j in st} == {"FTP", F.FTP_OS}
    assert {j["config"]["rule"]["gamma"] for j in st} == {0.05} and {j["gamma"] for j in st} == {0.05}
    assert len(jobs) - len(st) == len(F.noise_jobs({**N, "stable_gamma": None}, "mnist"))
    Q = {**load_params("ftp_quantized", root / "params.yaml"), "seeds": [1], "stable_gamma": 0.05}
    q32 = {run_key(j["config"]) for j in F.quantized_jobs(Q, "mnist") if j["part"] == "stable_gamma" and j["bits"] == 32}
    assert {run_key(j["config"]) for j in st if "hardware" not in j["config"]} == q32  # one clean run per reading
    with pytest.raises(ConfigError, match=r"ftp_noise\.stable_gamma=-1 must be a number > 0, or null"):
        F.noise_jobs({**N, "stable_gamma": -1}, "mnist")

    def row(m, v, a, part="sweep"):
        return {"part": part, "kind": "write_noise", "method": m, "value": v, "seed": 1, "status": "ok",
                "final_test_acc": a, "gamma": 0.05 if part == "stable_gamma" else None}
    fin = pd.DataFrame([row("BP", 0.0, 98.0), row("BP", 0.02, 20.0), row("FTP", 0.0, 10.0), row("FTP", 0.02, 10.0),
                        row("FTP", 0.0, 95.0, "stable_gamma"), row("FTP", 0.02, 80.0, "stable_gamma")])
    m = F.noise_metrics(fin)
    assert m["final_test_acc"]["write_noise"]["FTP"] == {"0": 10.0, "0.02": 10.0}
    assert m["ftp_more_robust_write_noise"] is False  # γ 0.2: it never learned
    s = m["stable_gamma"]
    assert s["gamma"] == 0.05 and s["seeds"] == [1] and s["final_test_acc"] == {"write_noise": {"FTP": {"0": 95.0, "0.02": 80.0}}}
    assert s["compared_at"]["write_noise"]["FTP"] == 0.02 and s["ftp_more_robust_write_noise"] is True  # 15 < 78
    assert s["drop_at_harshest"]["write_noise"]["BP"] == 78.0 and s["diverged"] == {"write_noise": 0}


@pytest.mark.parametrize("kinds", [[], ["correction"], ["targets"], ["errors"], True])
def test_rounded_signal_kinds_are_the_formula_with_only_those_rounded(kinds):
    """``hardware.signals`` as a list rounds only the named kinds (issue #5's ablation of quantised FTP):
    the first-target correction, the targets τ_l, the local errors h − τ; ``true`` rounds all three."""
    from repro.quant import Hardware, quantize
    m, r, b = setup(gamma=0.3)
    m.hw = Hardware({"bits": 3, "signals": kinds})
    on = {"correction", "targets", "errors"} if kinds is True else set(kinds)
    q = lambda t, k: quantize(t, 3) if k in on else t  # noqa: E731
    r.step(m, b)
    _, hs = m.forward_all(b.x)
    yhat = torch.softmax(hs[-1], 1)
    t1 = q(hs[1] + q(0.3 * (torch.tanh(b.y @ r.G) - torch.tanh(yhat @ r.G)), "correction"), "targets")
    t2 = q(torch.tanh(m.layers[1](t1)), "targets")
    for i, (t, lin) in enumerate(zip((t1, t2), m.layers)):
        d = q(hs[i + 1] - t, "errors") * (1 - hs[i + 1] ** 2)
        torch.testing.assert_close(lin.weight.grad, d.t() @ hs[i] / 7)
    if on:  # the rounding is not a no-op on these tensors
        plain = setup(gamma=0.3)
        plain[1].step(plain[0], plain[2])
        assert not torch.allclose(plain[0].layers[0].weight.grad, m.layers[0].weight.grad)


def test_bad_signal_kinds_name_the_parameter():
    from repro.models import ConfigError
    from repro.quant import Hardware
    for bad in (["error"], "errors", [1], None):
        with pytest.raises(ConfigError, match=r"hardware\.signals=.*must be true, false or a list of"):
            Hardware({"bits": 4, "signals": bad})


def test_quantised_levels_build_their_hardware_and_unknown_levels_are_named():
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = {**load_params("ftp_quantized", root / "params.yaml"), "seeds": [1], "bits": [32, 6],
         "levels": ["full", "weights+activations+targets"], "signal_ablation": None}
    hw = {(j["level"], j["bits"], j["method"]): j["config"].get("hardware") for j in F.quantized_jobs(P, "mnist")}
    assert hw[("full", 32, "BP")] is None  # 32 bits = the float run, whatever the level
    assert hw[("full", 6, "BP")]["signals"] is True
    assert hw[("weights+activations+targets", 6, F.FTP_OS)] == {
        "bits": 6, "weights": True, "activations": True, "signals": ["targets"], "weight_rounding": "stochastic"}
    with pytest.raises(ConfigError, match=r"ftp_quantized\.levels: \['signals'\] unknown; allowed: weights, "):
        F.quantized_jobs({**P, "levels": ["signals"]}, "mnist")
    A = {"levels": ["weights+activations+errors"], "bits": [4], "methods": ["BP"], "seeds": [2]}
    jobs = F.quantized_jobs({**P, "signal_ablation": A}, "mnist")
    abl = [j for j in jobs if j["part"] == "signal_ablation"]
    assert [(j["level"], j["bits"], j["method"], j["seed"]) for j in abl] == [("weights+activations+errors", 4, "BP", 2)]
    assert len(jobs) - 1 == len(F.quantized_jobs(P, "mnist")) and abl[0]["config"]["hardware"]["signals"] == ["errors"]
    with pytest.raises(ConfigError, match=r"\['nope'\] unknown"):
        F.quantized_jobs({**P, "signal_ablation": {**A, "levels": ["nope"]}}, "mnist")


def test_context_methods_may_run_fewer_seeds_in_the_quantised_sweep():
    """seeds_by_method: PEPITA and DRTP (context) on fewer seeds than BP / FTP; their 32-bit runs are the
    accuracy table's (same config, same key: shared, not retrained); a label outside methods is named."""
    from repro.figures import ftp as F
    from repro.figures.common import budget, load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = {**load_params("ftp_quantized", root / "params.yaml"), "seeds": [1, 2, 3], "bits": [32, 4],
         "levels": ["full"], "signal_ablation": None, "methods": ["BP", "PEPITA", "DRTP"],
         "seeds_by_method": {"PEPITA": [1], "DRTP": [1, 3]}}
    got = {(j["method"], j["seed"]) for j in F.quantized_jobs(P, "mnist")}
    assert {s for m, s in got if m == "BP"} == {1, 2, 3}
    assert {s for m, s in got if m == "PEPITA"} == {1} and {s for m, s in got if m == "DRTP"} == {1, 3}
    assert budget(P).endswith("; PEPITA: 1 seed, DRTP: 2 seeds")
    T = load_params("ftp_table", root / "params.yaml")
    table = {run_key(j["config"]) for j in F.table_jobs(T, "mnist")
             if j["method"] in ("PEPITA", "DRTP") and j["part"] == "table"}
    q32 = {run_key(j["config"]) for j in F.quantized_jobs(P, "mnist") if j["bits"] == 32 and j["method"] != "BP"}
    assert q32 and q32 <= table
    with pytest.raises(ConfigError, match=r"ftp_quantized\.seeds_by_method: \['FTP'\] are not methods"):
        F.quantized_jobs({**P, "seeds_by_method": {"FTP": [1]}}, "mnist")
    with pytest.raises(ConfigError, match=r"ftp_quantized\.seeds_by_method: \{'PEPITA': \[4\]\} not in"):
        F.quantized_jobs({**P, "seeds_by_method": {"PEPITA": [1, 4]}}, "mnist")


def test_signal_ablation_runs_stay_out_of_the_sweep_metrics():
    """The ablation grid shares level names with the sweep (weights+activations): its runs must not be
    averaged into the sweep's cells or the claims; they get their own entry."""
    import pandas as pd
    from repro.figures import ftp as F
    rows = [{"part": part, "method": F.FTP_OS, "level": "weights+activations", "bits": 6, "seed": 1, "status": "ok",
             "final_test_acc": acc} for part, acc in (("sweep", 97.0), ("signal_ablation", 11.0))]
    q = F.quantized_metrics(pd.DataFrame(rows))
    assert q["final_test_acc"] == {"weights+activations": {F.FTP_OS: {"6": 97.0}}}
    assert q["signal_ablation"]["weights+activations"][F.FTP_OS]["6"]["mean"] == 11.0
    norms = pd.DataFrame([{"level": "w", "method": "m", "bits": 6, "seed": s, "layer": "W2", "norm": v}
                          for s, v in ((1, 3.0), (2, 5.0))])
    assert F.ablation_norm_metrics(norms) == {"w": {"m": {"6": {"W2": 5.0}}}}
    blown = norms.assign(norm=[3.0, float("nan")])  # NaN weights are the worst blow-up, not a missing value
    assert F.ablation_norm_metrics(blown) == {"w": {"m": {"6": {"W2": float("inf")}}}}


def test_signal_ablation_figure_names_overflowed_weights():
    """A run whose weights overflowed (inf / NaN) cannot sit on the log axis: it is left out of the bars and
    the panel says so, instead of silently dropping it."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from repro.figures import ftp as F
    lv = "weights+activations+targets"
    fin = pd.DataFrame([{"part": "signal_ablation", "method": F.FTP_OS, "level": lv, "bits": 6, "seed": s,
                         "status": "ok", "final_test_acc": a} for s, a in ((1, 11.0), (2, 60.0))])
    norms = pd.DataFrame([{"level": lv, "method": F.FTP_OS, "bits": 6, "seed": s, "layer": f"W{k}", "norm": v}
                          for s, vs in ((1, (50.0, float("inf"))), (2, (48.0, 1e9))) for k, v in enumerate(vs, 1)])
    fig = F.plot_signal_ablation(fin, norms, "mnist")
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == ["not finite (overflowed), left out: w+a+targets 1 matrix"]
    plt.close(fig)


def test_stable_gamma_runs_the_ftp_readings_again_and_is_checked_against_the_sweeps_bp():
    """``stable_gamma``: the FTP readings (only) at another γ on the same grid, labelled by part; the 32-bit
    τ₁ runs are the table's γ-sweep runs (same key: shared); their numbers and checks stay out of the sweep's
    (whose claims are at the spec's γ) and are measured against the sweep's BP (BP has no γ)."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = {**load_params("ftp_quantized", root / "params.yaml"), "seeds": [1, 2], "bits": [32, 4],
         "levels": ["full"], "signal_ablation": None, "stable_gamma": 0.05, "master_copy": None, "paper_length": None}
    jobs = F.quantized_jobs(P, "mnist")
    st = [j for j in jobs if j["part"] == "stable_gamma"]
    assert sorted((j["method"], j["bits"], j["seed"]) for j in st) == sorted(
        (m, b, s) for m in ("FTP", F.FTP_OS) for b in (32, 4) for s in (1, 2))
    assert {j["config"]["rule"]["gamma"] for j in st} == {0.05} and {j["gamma"] for j in st} == {0.05}
    assert {j["config"]["rule"]["gamma"] for j in jobs if j["part"] == "sweep" and j["method"] == "FTP"} == {0.2}
    same = [{k: v for k, v in j.items() if k not in ("gamma", "part")} for j in st]
    assert same == [{k: v for k, v in j.items() if k not in ("gamma", "part")} for j in
                    F.quantized_jobs({**P, "gamma": 0.05, "stable_gamma": None, "methods": ["FTP", F.FTP_OS],
                                      "master_copy": None, "paper_length": None}, "mnist")]
    T = load_params("ftp_table", root / "params.yaml")
    sweep = {run_key(j["config"]) for j in F.table_jobs(T, "mnist") if j["gamma"] == 0.05 and j["part"] == "table"}
    assert {run_key(j["config"]) for j in st if j["bits"] == 32 and j["method"] == "FTP"} <= sweep
    assert len(F.quantized_jobs({**P, "stable_gamma": None}, "mnist")) == len(jobs) - len(st)
    for bad in (0, -0.1, "0.05", True):
        with pytest.raises(ConfigError, match=r"ftp_quantized\.stable_gamma=.* must be a number > 0, or null"):
            F.quantized_jobs({**P, "stable_gamma": bad}, "mnist")

    def row(m, bits, acc, part="sweep"):
        return {"part": part, "method": m, "level": "full", "bits": bits, "seed": 1, "status": "ok",
                "final_test_acc": acc, "gamma": 0.05 if part == "stable_gamma" else None}
    rows = [row("BP", 32, 98.0), row("BP", 4, 80.0), row("FTP", 32, 10.0), row("FTP", 4, 10.0),
            row("FTP", 32, 97.0, "stable_gamma"), row("FTP", 4, 90.0, "stable_gamma"),
            row(F.FTP_OS, 32, 97.5, "stable_gamma"), row(F.FTP_OS, 4, 70.0, "stable_gamma")]
    q = F.quantized_metrics(pd.DataFrame(rows))
    assert q["final_test_acc"] == {"full": {"BP": {"32": 98.0, "4": 80.0}, "FTP": {"32": 10.0, "4": 10.0}}}
    assert q["ftp_degrades_less_than_bp_le4"] is False and "ftp_os_degrades_less_than_bp_le4" not in q
    s = q["stable_gamma"]
    assert s["gamma"] == 0.05 and s["seeds"] == [1] and s["final_test_acc"]["full"]["FTP"] == {"32": 97.0, "4": 90.0}
    assert s["ftp_drops_le4_bits"] == {"4": {"FTP": 7.0, "BP": 18.0}} and s["ftp_degrades_less_than_bp_le4"] is True
    assert s["ftp_os_degrades_less_than_bp_le4"] is False and s["ftp_fp32_within_2_of_bp"] is True
    assert "BP" not in s["final_test_acc"]["full"]


def test_master_copy_part_reruns_the_full_level_with_a_float_copy_and_is_checked_against_bp_with_one():
    """``ftp_quantized.master_copy`` (our labelled variant): its methods, bits and seeds again at the ``full``
    level with ``hardware.master_copy`` (the readings also at ``stable_gamma``), same configs otherwise; its
    checks compare each method's drop from its own float run with BP's drop *with* the copy; bad settings are one
    line each."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = {**load_params("ftp_quantized", root / "params.yaml"), "seeds": [1], "bits": [32, 4], "levels": ["full"],
         "signal_ablation": None, "stable_gamma": 0.05,
         "master_copy": {"bits": [4, 2], "methods": ["BP", F.FTP_OS], "seeds": [1, 2]}}
    jobs = F.quantized_jobs(P, "mnist")
    mc = [j for j in jobs if j["part"] == "master_copy"]
    mcs = [j for j in jobs if j["part"] == "master_copy_stable_gamma"]
    assert sorted((j["method"], j["bits"], j["seed"]) for j in mc) == sorted(
        (m, b, s) for m in ("BP", F.FTP_OS) for b in (4, 2) for s in (1, 2))
    assert sorted((j["method"], j["bits"], j["seed"]) for j in mcs) == sorted(
        (F.FTP_OS, b, s) for b in (4, 2) for s in (1, 2))
    assert all(j["config"]["hardware"]["master_copy"] is True and j["level"] == "full" for j in mc + mcs)
    assert {j["config"]["rule"]["gamma"] for j in mcs} == {0.05} and {j["gamma"] for j in mcs} == {0.05}
    # the same runs as the sweep's but for the copy
    plain = {(j["method"], j["bits"], j["seed"], j["part"]): j for j in jobs}
    twin = plain[("BP", 4, 1, "sweep")]["config"]
    assert {**mc[0]["config"], "hardware": {**mc[0]["config"]["hardware"], "master_copy": False}} != twin
    h = {k: v for k, v in next(j for j in mc if j["method"] == "BP" and j["bits"] == 4 and j["seed"] == 1)
         ["config"]["hardware"].items() if k != "master_copy"}
    assert h == twin["hardware"]
    assert len({run_key(j["config"]) for j in jobs}) == len(jobs)
    assert len(F.quantized_jobs({**P, "master_copy": None}, "mnist")) == len(jobs) - len(mc) - len(mcs)
    assert not [j for j in F.quantized_jobs({**P, "stable_gamma": None}, "mnist") if j["part"] == "master_copy_stable_gamma"]
    narrowed = F.quantized_jobs({**P, "methods": ["BP", "PEPITA"]}, "mnist")  # the sweep narrowed narrows the copy too
    assert {j["method"] for j in narrowed if j["part"].startswith("master_copy")} == {"BP"}
    for bad, msg in (({"bits": [4]}, "must be null or a mapping with exactly bits, methods and seeds"),
                     ({"bits": [32], "methods": ["BP"], "seeds": [1]}, r"bits=\[32\] must be a non-empty list"),
                     ({"bits": [4], "methods": ["SGD"], "seeds": [1]}, r"methods=\['SGD'\]: must be .* FC methods"),
                     ({"bits": [4], "methods": ["BP"], "seeds": ["1"]}, r"seeds=\['1'\] must be")):
        with pytest.raises(ConfigError, match=r"ftp_quantized\.master_copy.*" + msg):
            F.quantized_jobs({**P, "master_copy": bad}, "mnist")

    def row(m, bits, acc, part="sweep"):
        return {"part": part, "method": m, "level": "full", "bits": bits, "seed": 1, "status": "ok",
                "final_test_acc": acc, "gamma": 0.05 if "stable" in part else None}
    rows = [row("BP", 32, 98.0), row("BP", 4, 10.0), row(F.FTP_OS, 32, 97.0), row(F.FTP_OS, 4, 11.0),
            row(F.FTP_OS, 32, 96.0, "stable_gamma"), row(F.FTP_OS, 4, 20.0, "stable_gamma"),
            row("BP", 4, 97.0, "master_copy"), row(F.FTP_OS, 4, 60.0, "master_copy"),
            row(F.FTP_OS, 4, 95.5, "master_copy_stable_gamma")]
    q = F.quantized_metrics(pd.DataFrame(rows))
    assert q["ftp_os_compared_at_le4"] == [] and q["ftp_os_degrades_less_than_bp_le4"] is False  # both at chance
    m = q["master_copy"]
    assert m["final_test_acc"] == {"BP": {"4": 97.0}, F.FTP_OS: {"4": 60.0}} and m["seeds"] == [1]
    assert m["ftp_os_drops_le4_bits"] == {"4": {F.FTP_OS: 37.0, "BP": 1.0}}
    assert m["ftp_os_degrades_less_than_bp_le4"] is False and m["ftp_os_fp32_within_2_of_bp"] is True
    s = m["stable_gamma"]  # against BP with the copy; its float point is the stable part's 32-bit run
    assert s["gamma"] == 0.05 and s["ftp_os_drops_le4_bits"] == {"4": {F.FTP_OS: 0.5, "BP": 1.0}}
    assert s["ftp_os_degrades_less_than_bp_le4"] is True and "BP" not in s["final_test_acc"]
    assert "master_copy" not in F.quantized_metrics(pd.DataFrame(rows[:6]))


def test_paper_length_part_is_the_sweeps_full_level_at_the_specs_length_and_checked_against_bp_at_it():
    """``ftp_quantized.paper_length`` (labelled part): the ``full`` level again at other epochs and milestones —
    the same configs as the sweep's at that length (so the runs a spec-scale sweep trained are these), the
    readings also at ``stable_gamma``; its checks compare drops with BP's runs of the same length; the figure
    shows final and best epochs; bad settings are one line each."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    L = {"epochs": 100, "milestones": [60, 90], "methods": ["BP", F.FTP_OS, "DRTP"], "seeds": [1, 2], "bits": [32, 4]}
    P = {**load_params("ftp_quantized", root / "params.yaml"), "seeds": [1], "bits": [32, 8], "levels": ["full"],
         "methods": ["BP", "FTP", F.FTP_OS], "signal_ablation": None, "stable_gamma": 0.05, "master_copy": None,
         "paper_length": L}
    jobs = F.quantized_jobs(P, "mnist")
    pl = [j for j in jobs if j["part"] == "paper_length"]
    pls = [j for j in jobs if j["part"] == "paper_length_stable_gamma"]
    # DRTP is not in the sweep's methods: left out, as master_copy does
    assert sorted((j["method"], j["bits"], j["seed"]) for j in pl) == sorted(
        (m, b, s) for m in ("BP", F.FTP_OS) for b in (32, 4) for s in (1, 2))
    assert sorted((j["method"], j["bits"], j["seed"]) for j in pls) == sorted((F.FTP_OS, b, s) for b in (32, 4) for s in (1, 2))
    assert {j["epochs"] for j in pl + pls} == {100} and {j["gamma"] for j in pls} == {0.05}
    # the same runs as the sweep's (and its stable part's) at that length: the spec-scale sweep's keys
    at_length = {**P, "epochs": 100, "milestones": [60, 90], "seeds": [1, 2], "bits": [32, 4], "paper_length": None}
    twins = {(j["part"], j["method"], j["bits"], j["seed"]): run_key(j["config"]) for j in F.quantized_jobs(at_length, "mnist")}
    for j in pl + pls:
        part = "sweep" if j["part"] == "paper_length" else "stable_gamma"
        assert run_key(j["config"]) == twins[(part, j["method"], j["bits"], j["seed"])]
        assert j["config"]["epochs"] == 100 and j["config"]["optim"]["milestones"] == [60, 90]
    assert "hardware" not in next(j for j in pl if j["bits"] == 32)["config"]  # 32 bits: the float run
    assert len(F.quantized_jobs({**P, "paper_length": None}, "mnist")) == len(jobs) - len(pl) - len(pls)
    assert not [j for j in F.quantized_jobs({**P, "stable_gamma": None}, "mnist") if j["part"] == "paper_length_stable_gamma"]
    for bad, msg in (({"epochs": 100}, "must be null or a mapping with exactly bits, epochs, methods, milestones, seeds"),
                     ({**L, "epochs": 0}, r"epochs=0 must be an integer ≥ 1"),
                     ({**L, "milestones": [60, 100]}, r"milestones=\[60, 100\] must be a list of epochs between 1 and"),
                     ({**L, "bits": [8, 4]}, r"bits=\[8, 4\] must be a list of integers 2 … 32 that includes 32"),
                     ({**L, "methods": ["SGD"]}, r"methods=\['SGD'\]: must be .* FC methods"),
                     ({**L, "seeds": []}, r"seeds=\[\] must be a non-empty list")):
        with pytest.raises(ConfigError, match=r"ftp_quantized\.paper_length.*" + msg):
            F.quantized_jobs({**P, "paper_length": bad}, "mnist")

    def row(m, bits, acc, part, best=None):
        return {"part": part, "method": m, "level": "full", "bits": bits, "seed": 1, "status": "ok", "epochs": 100,
                "final_test_acc": acc, "best_test_acc": acc if best is None else best,
                "gamma": 0.05 if "stable" in part else None}
    rows = [row("BP", 32, 98.0, "sweep"), row("BP", 4, 91.0, "sweep"), row(F.FTP_OS, 32, 97.0, "sweep"),
            row(F.FTP_OS, 4, 11.0, "sweep"),
            row("BP", 32, 98.3, "paper_length"), row("BP", 4, 10.0, "paper_length", best=93.8),
            row(F.FTP_OS, 32, 60.0, "paper_length", best=97.3), row(F.FTP_OS, 4, 9.8, "paper_length"),
            row(F.FTP_OS, 32, 98.0, "paper_length_stable_gamma"), row(F.FTP_OS, 4, 70.0, "paper_length_stable_gamma")]
    q = F.quantized_metrics(pd.DataFrame(rows))
    assert q["final_test_acc"]["full"]["BP"] == {"32": 98.0, "4": 91.0}  # the sweep's own numbers are unchanged
    m = q["paper_length"]
    assert m["epochs"] == 100 and m["seeds"] == [1] and m["diverged"] == {"BP": 0, F.FTP_OS: 0}
    assert m["final_test_acc"]["BP"] == {"32": 98.3, "4": 10.0}
    assert m["ftp_os_fp32_within_2_of_bp"] is False  # 60 vs 98.3 at the spec's length
    assert m["ftp_os_compared_at_le4"] == [] and m["ftp_os_degrades_less_than_bp_le4"] is False  # both at chance
    s = m["stable_gamma"]  # against the same length's BP runs
    assert s["gamma"] == 0.05 and s["ftp_os_drops_le4_bits"] == {"4": {F.FTP_OS: 28.0, "BP": 88.3}}
    assert s["ftp_os_compared_at_le4"] == ["4"] and s["ftp_os_degrades_less_than_bp_le4"] is True
    assert "paper_length" not in F.quantized_metrics(pd.DataFrame(rows[:4]))
    fig = F.plot_quantized(pd.DataFrame(rows), "mnist", P, part="paper_length")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["level = full: final epoch", "level = full: best epoch"]
    assert "the spec's length: 100 epochs, lr ×0.1 at 60, 90; seed 1 (spec: 3 seeds)" in fig._suptitle.get_text()
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_update_sparsity_measures_the_sweeps_runs_only():
    """The ℓ0 diagnostic restarts the sweep's own runs (one level, first seed): a labelled part's runs at the same
    bits (paper_length, master_copy, …) must not be averaged in — paper_length's seed 2 once was."""
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    P = {**load_params("ftp_quantized", root / "params.yaml"), "seeds": [1, 2, 3]}
    P["paper_length"] = {**P["paper_length"], "seeds": [1, 2]}
    jobs = F._sparsity_jobs(P, "mnist", "full")
    assert {j["part"] for j in jobs} == {"sweep"} and {j["seed"] for j in jobs} == {1}
    assert sorted((j["method"], j["bits"]) for j in jobs) == sorted((m, b) for m in P["methods"] for b in P["bits"])
    import inspect
    assert "@torch_threads(1)" in inspect.getsource(F.update_sparsity)  # the diagnostic, not the job list, on 1 thread


def test_noise_master_copy_reruns_the_stored_kinds_with_a_copy_and_is_judged_against_bp_with_one():
    """``ftp_noise.master_copy`` (our labelled variant): H1 write noise and H4 conductance levels (the kinds that
    change the stored weights) again with ``hardware.master_copy`` at some of the sweep's values, for its methods
    and seeds (the readings also at ``stable_gamma``); otherwise the sweep's configs. Its checks compare each
    method's drop from its own clean run with BP's drop with the copy; bad settings are one line each."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    N = {**load_params("ftp_noise", root / "params.yaml"), "seeds": [1], "stable_gamma": 0.05,
         "master_copy": {"kinds": {"write_noise": [0.02], "conductance_bits": [6, 4]}, "methods": ["BP", F.FTP_OS],
                         "seeds": [1, 2]}}
    jobs = F.noise_jobs(N, "mnist")
    mc = [j for j in jobs if j["part"] == "master_copy"]
    mcs = [j for j in jobs if j["part"] == "master_copy_stable_gamma"]
    settings = [("write_noise", 0.02), ("conductance_bits", 6), ("conductance_bits", 4)]
    assert sorted((j["method"], j["kind"], j["value"], j["seed"]) for j in mc) == sorted(
        (m, k, v, s) for m in ("BP", F.FTP_OS) for k, v in settings for s in (1, 2))
    assert sorted((j["method"], j["kind"], j["value"], j["seed"]) for j in mcs) == sorted(
        (F.FTP_OS, k, v, s) for k, v in settings for s in (1, 2))
    assert {j["config"]["rule"]["gamma"] for j in mcs} == {0.05} and {j["gamma"] for j in mcs} == {0.05}
    sweep = {(j["part"], j["method"], j["kind"], j["value"], j["seed"]): j["config"] for j in jobs}
    for j in mc + mcs:  # the sweep's run (same part's γ) plus the copy, nothing else
        twin = sweep[("sweep" if j["part"] == "master_copy" else "stable_gamma", j["method"], j["kind"], j["value"], 1)]
        assert j["config"]["hardware"] == {**twin["hardware"], "master_copy": True}
        assert {**j["config"], "hardware": twin["hardware"], "seed": 1} == twin
    assert len({run_key(j["config"]) for j in jobs}) == len(jobs) - sum(  # clean runs are shared across kinds
        1 for j in jobs if "hardware" not in j["config"]) + len({run_key(j["config"]) for j in jobs
                                                                if "hardware" not in j["config"]})
    assert len(F.noise_jobs({**N, "master_copy": None}, "mnist")) == len(jobs) - len(mc) - len(mcs)
    assert not [j for j in F.noise_jobs({**N, "stable_gamma": None}, "mnist") if j["part"] == "master_copy_stable_gamma"]
    narrowed = F.noise_jobs({**N, "methods": ["BP", "FTP"]}, "mnist")  # the sweep narrowed narrows the copy too
    assert {j["method"] for j in narrowed if j["part"].startswith("master_copy")} == {"BP"}
    ok = {"methods": ["BP"], "seeds": [1]}
    for bad, msg in (({"kinds": {"write_noise": [0.02]}}, "must be null or a mapping with exactly kinds, methods"),
                     ({**ok, "kinds": {"read_noise": [0.1]}}, r"kinds=.* must map some of \['write_noise', "
                                                              r"'conductance_bits'\] \(the kinds that change"),
                     ({**ok, "kinds": {"write_noise": [0.03]}}, r"kinds\.write_noise=\[0\.03\] must be a "
                                                                r"non-empty list of the sweep's noisy values"),
                     ({**ok, "kinds": {"conductance_bits": [32]}}, r"kinds\.conductance_bits=\[32\]"),
                     ({**ok, "kinds": {"write_noise": [0.02]}, "methods": ["SGD"]}, r"methods=\['SGD'\]: must be"),
                     ({**ok, "kinds": {"write_noise": [0.02]}, "seeds": [True]}, r"seeds=\[True\] must be")):
        with pytest.raises(ConfigError, match=r"ftp_noise\.master_copy.*" + msg):
            F.noise_jobs({**N, "master_copy": bad}, "mnist")

    def row(m, v, acc, part="sweep", seed=1, status="ok"):
        return {"part": part, "kind": "write_noise", "method": m, "value": v, "seed": seed, "status": status,
                "final_test_acc": acc, "gamma": 0.05 if "stable" in part else None}
    rows = [row("BP", 0.0, 98.0), row("BP", 0.02, 10.0), row(F.FTP_OS, 0.0, 97.0), row(F.FTP_OS, 0.02, 11.0),
            row("BP", 0.05, 10.0), row(F.FTP_OS, 0.05, 10.0),  # a sweep value the copy did not run: not compared
            row(F.FTP_OS, 0.0, 96.0, "stable_gamma"), row(F.FTP_OS, 0.02, 20.0, "stable_gamma"),
            row("BP", 0.02, 90.0, "master_copy"), row(F.FTP_OS, 0.02, 60.0, "master_copy"),
            row(F.FTP_OS, 0.02, 10.0, "master_copy", seed=2, status="diverged"),
            row(F.FTP_OS, 0.02, 93.0, "master_copy_stable_gamma")]
    m = F.noise_metrics(pd.DataFrame(rows))
    assert m["compared_at"]["write_noise"][F.FTP_OS] is None and m["ftp_os_more_robust_write_noise"] is False
    c = m["master_copy"]
    assert c["final_test_acc"] == {"write_noise": {"BP": {"0": 98.0, "0.02": 90.0}, F.FTP_OS: {"0": 97.0, "0.02": 35.0}}}
    assert c["seeds"] == [1, 2] and c["diverged"] == {"write_noise": 1}
    assert c["compared_at"]["write_noise"][F.FTP_OS] == 0.02 and c["ftp_os_more_robust_write_noise"] is False  # 62 > 8
    s = c["stable_gamma"]  # against BP with the copy; its clean point is the stable part's run
    assert s["gamma"] == 0.05 and s["seeds"] == [1] and s["diverged"] == {"write_noise": 0}
    assert s["final_test_acc"] == {"write_noise": {F.FTP_OS: {"0": 96.0, "0.02": 93.0}}}
    assert s["drop_at_harshest"]["write_noise"] == {"value": 0.02, "BP": 8.0, F.FTP_OS: 3.0}
    assert s["ftp_os_more_robust_write_noise"] is True
    assert "master_copy" not in F.noise_metrics(pd.DataFrame(rows[:8]))
    fig = F.plot_noise_master_copy(pd.DataFrame(rows), "mnist", {**N, "epochs": 10})
    top, zoom = fig.axes[0], fig.axes[1]  # one column (write noise): the two storages, then the copy alone
    assert top.get_title().startswith("H1") and [t.get_text() for t in zoom.get_xticklabels()] == ["0", "0.02"]
    assert {tuple(l.get_xdata()) for l in zoom.get_lines() if len(l.get_xdata()) == 2} == {(0.0, 0.02)}
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_paper_length_rows_are_the_table_rows_at_other_epochs_and_stay_out_of_the_table():
    """``paper_length`` trains the FC rows again with other epochs/milestones: same configs otherwise (so a later
    full-length table reuses them), labelled by part, kept out of the 10-epoch means and checked on their own."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    T = load_params("ftp_table", root / "params.yaml")
    L = T["paper_length"]
    jobs = F.table_jobs(T, "mnist")
    long = [j for j in jobs if j["part"] == "paper_length" and j["gamma"] in (None, T["gamma"])  # γ runs: below
            and not j["method"].endswith(" CNN")]  # the CNN rows (cnn_methods on cnn_seeds): the next test
    assert {j["part"] for j in jobs} == {"table", "paper_length"} | ({"val_gamma"} if L.get("val_gamma") else set())
    assert sorted((j["method"], j["seed"]) for j in long) == sorted((m, s) for m in L["methods"] for s in L["seeds"])
    full = F.table_jobs({**T, "epochs": L["epochs"], "milestones": L["milestones"], "paper_length": None}, "mnist")
    full_keys = {run_key(j["config"]) for j in full}
    assert all(run_key(j["config"]) in full_keys for j in long)  # a 100-epoch table would reuse these runs
    assert all(j["config"]["epochs"] == L["epochs"] for j in long)
    assert not [j for j in F.table_jobs(T, "cifar10") if j["part"] == "paper_length"]  # datasets: mnist only
    with pytest.raises(ConfigError, match="paper_length.methods"):
        F.table_jobs({**T, "paper_length": {**L, "methods": ["BP", "FF"]}}, "mnist")

    def row(part, m, acc, status="ok"):
        return {"part": part, "method": m, "gamma": 0.2 if m.startswith("FTP") else None, "seed": 1,
                "status": status, "final_test_acc": acc, "best_test_acc": acc}
    fin = pd.DataFrame([row("table", "BP", 98.0), row("table", "FTP", 9.8, "diverged"), row("table", F.FTP_OS, 97.5),
                        row("paper_length", "BP", 98.4), row("paper_length", "FTP", 11.4),
                        row("paper_length", F.FTP_OS, 96.0)])
    sweep_point = {**row("table", "FTP", 9.8, "diverged"), "gamma": 1.0}  # a γ-sweep run: not the table's
    m = F.metrics(pd.concat([fin, pd.DataFrame([sweep_point])], ignore_index=True), T)
    assert m["final_test_acc"]["BP"]["mean"] == 98.0 and m["ftp_os_fp32_within_2_of_bp"] is True
    assert m["diverged"] == {"BP": 0, "FTP": 1, F.FTP_OS: 0} and m["gamma_sweep"]["1.0"] == 9.8
    pl = m["paper_length"]
    assert pl["epochs"] == L["epochs"] and pl["final_test_acc"]["BP"]["mean"] == 98.4
    assert pl["ftp_os_fp32_within_2_of_bp"] is False and pl["ftp_fp32_within_2_of_bp"] is False  # 2.4 > 2
    assert "paper_length" not in F.metrics(fin[fin.part == "table"], T)



def test_paper_length_cnn_rows_are_the_tables_cnn_runs_at_that_length_and_get_their_own_gap():
    """``paper_length.cnn_methods`` (on ``cnn_seeds``): the table's CNN rows at paper length — the very configs a
    100-epoch table trains, so runs trained ahead at the spec's scale serve them — with the CNN gap in its metrics
    and the rows in the paper-length panel; an unknown method is one line."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.models import ConfigError
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    T = load_params("ftp_table", root / "params.yaml")
    L = {**T["paper_length"], "cnn_methods": ["BP", "FTP"], "cnn_seeds": [2]}
    Tc = {**T, "paper_length": L}
    cnn = [j for j in F.table_jobs(Tc, "mnist") if j["part"] == "paper_length" and j["method"].endswith("CNN")]
    assert sorted((j["method"], j["seed"]) for j in cnn) == [("BP CNN", 2), ("FTP CNN", 2)]
    full = F.table_jobs({**T, "epochs": L["epochs"], "milestones": L["milestones"], "paper_length": None}, "mnist")
    full_cnn = {run_key(j["config"]) for j in full if j["method"].endswith("CNN")}
    assert {run_key(j["config"]) for j in cnn} <= full_cnn
    assert all(j["config"]["model"]["arch"] == "cnn" and j["config"]["epochs"] == L["epochs"] for j in cnn)
    assert [j for j in F.table_jobs({**Tc, "paper_length": {**L, "cnn_seeds": []}}, "mnist")
            if j["part"] == "paper_length" and j["method"].endswith("CNN")] == []
    # the table's own CNN rows are unchanged by the refactor into _cnn_job: same rule, net and batch
    t = next(j for j in F.table_jobs(T, "mnist") if j["method"] == "FTP CNN")["config"]
    assert t["rule"] == {"name": "ftp", "gamma": T["gamma"]} and t["batch_size"] == T["cnn"]["batch_size"]
    assert t["model"]["cnn"] == {"channels": T["cnn"]["channels"], "kernel": T["cnn"]["kernel"], "padding": 0,
                                 "bn": False, "bias": False}
    with pytest.raises(ConfigError, match=r"paper_length\.cnn_methods: \['FF'\] unknown"):
        F.table_jobs({**T, "paper_length": {**L, "cnn_methods": ["FF"]}}, "mnist")

    def row(part, m, acc):
        return {"part": part, "method": m, "gamma": 0.2 if m.startswith("FTP") else None, "seed": 1,
                "status": "ok", "final_test_acc": acc, "best_test_acc": acc}
    fin = pd.DataFrame([row("table", "BP", 98.0), row("table", "BP CNN", 98.8), row("table", "FTP CNN", 93.5),
                        row("paper_length", "BP", 98.3), row("paper_length", "BP CNN", 99.0),
                        row("paper_length", "FTP CNN", 95.0)])
    m = F.metrics(fin, Tc)
    assert m["ftp_cnn_gap_to_bp_cnn"] == pytest.approx(5.3) and m["paper_length"]["ftp_cnn_gap_to_bp_cnn"] == 4.0
    fig = F.plot_table(fin, Tc, "mnist")
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["BP", "BP CNN", "FTP CNN"]
    # the panel's title gives the CNN rows' own seed count when it differs from the FC rows'
    assert len(L["seeds"]) != 1 and fig.axes[2].get_title().endswith(f"{len(L['seeds'])} seeds (CNN rows: 1)")
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_paper_length_gammas_rerun_both_ftp_readings_at_other_gammas_and_pick_each_readings_best():
    """``paper_length.gammas``: the FTP readings (only) again at each other γ, at paper length — for τ₁ the same
    config as the table's γ-sweep point at that length (so one record serves both) — kept out of the
    paper-length means at the table's γ, summarised per reading and γ, each reading's best γ checked against BP."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    from repro.train import run_key
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    T = load_params("ftp_table", root / "params.yaml")
    T = {**T, "paper_length": {**T["paper_length"], "gammas": [0.05, T["gamma"]]}}
    L = T["paper_length"]
    extra = [j for j in F.table_jobs(T, "mnist") if j["part"] == "paper_length" and j["gamma"] == 0.05]
    readings = [m for m in L["methods"] if m.startswith("FTP")]
    assert sorted((j["method"], j["seed"]) for j in extra) == sorted((m, s) for m in readings for s in L["seeds"])
    assert all(j["config"]["rule"]["gamma"] == 0.05 and j["config"]["epochs"] == L["epochs"] for j in extra)
    assert [j["config"]["rule"].get("gamma_mode") for j in extra if j["method"] == F.FTP_OS] == ["output_step"] * 3
    full = F.table_jobs({**T, "epochs": L["epochs"], "milestones": L["milestones"], "paper_length": None}, "mnist")
    sweep_keys = {run_key(j["config"]) for j in full if j["method"] == "FTP" and j["gamma"] == 0.05}
    assert {run_key(j["config"]) for j in extra if j["method"] == "FTP"} == sweep_keys

    def row(m, g, acc, status="ok", seed=1):
        return {"part": "paper_length", "method": m, "gamma": g, "seed": seed, "status": status,
                "final_test_acc": acc, "best_test_acc": acc}
    fin = pd.DataFrame([row("BP", None, 98.3), row("FTP", 0.2, 10.0, "diverged"), row(F.FTP_OS, 0.2, 9.8, "diverged"),
                        row("FTP", 0.05, 97.7), row("FTP", 0.05, 97.5, seed=2), row(F.FTP_OS, 0.05, 96.0),
                        row(F.FTP_OS, 0.1, 97.9)])
    pl = F.metrics(fin, T)["paper_length"]
    assert pl["final_test_acc"]["FTP"]["mean"] == 10.0 and pl["diverged"] == {"BP": 0, "FTP": 1, F.FTP_OS: 1}
    assert pl["ftp_fp32_within_2_of_bp"] is False  # the claims' check stays at the table's γ
    assert pl["gamma_sweep"] == {"FTP": {"0.05": pytest.approx(97.6), "0.2": 10.0},
                                 F.FTP_OS: {"0.05": 96.0, "0.1": 97.9, "0.2": 9.8}}
    assert pl["gamma_sweep_diverged"] == {"FTP": {"0.05": 0, "0.2": 1}, F.FTP_OS: {"0.05": 0, "0.1": 0, "0.2": 1}}
    best = pl["gamma_best"]
    assert best["ftp"]["gamma"] == 0.05 and best["ftp"]["seeds"] == 2 and best["ftp"]["within_2_of_bp"] is True
    assert best["ftp_os"]["gamma"] == 0.1 and best["ftp_os"]["final_test_acc"]["mean"] == 97.9
    assert best["ftp_os"]["within_2_of_bp"] is True
    higher_bp = fin.assign(final_test_acc=fin.final_test_acc.where(fin.method != "BP", 100.0))
    assert F.metrics(higher_bp, T)["paper_length"]["gamma_best"]["ftp_os"]["within_2_of_bp"] is False  # 2.1 > 2
    assert "gamma_sweep" not in F.metrics(fin[fin.gamma.isna() | (fin.gamma == 0.2)], T)["paper_length"]
    fig = F.plot_table(pd.concat([fin, pd.DataFrame([{**row("BP", None, 98.1), "part": "table"}])]), T, "mnist")
    assert len(fig.axes) == 4 and "100 epochs" in fig.axes[3].get_title()
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_val_gamma_reruns_the_paper_length_gamma_sweep_on_a_held_out_split_and_picks_gamma_there():
    """``paper_length.val_gamma``: both FTP readings at the table's γ and each ``gammas`` value, same length,
    with the last n training samples held out (only that differs from the paper-length runs); γ is chosen on
    the held-out accuracy, never the test set's, and judged by the full-training-set run's test accuracy."""
    import pandas as pd
    from repro.figures import ftp as F
    from repro.figures.common import load_params
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    T = load_params("ftp_table", root / "params.yaml")
    T = {**T, "paper_length": {**T["paper_length"], "gammas": [0.05, 0.1], "val_gamma": 1000}}
    L = T["paper_length"]
    jobs = F.table_jobs(T, "mnist")
    val = [j for j in jobs if j["part"] == "val_gamma"]
    readings = [m for m in L["methods"] if m.startswith("FTP")]
    assert sorted((j["method"], j["gamma"], j["seed"]) for j in val) == sorted(
        (m, g, s) for m in readings for g in (0.05, 0.1, 0.2) for s in L["seeds"])
    twin = {(j["method"], j["gamma"], j["seed"]): j["config"] for j in jobs if j["part"] == "paper_length"}
    for j in val:  # the paper-length run's config, with the split held out
        c = j["config"]
        assert c["dataset"]["n_val"] == 1000
        assert {**c, "dataset": {**c["dataset"], "n_val": 0}} == {
            **twin[(j["method"], j["gamma"], j["seed"])],
            "dataset": {**c["dataset"], "n_val": 0}}
    assert not [j for j in F.table_jobs({**T, "paper_length": {**L, "val_gamma": 0}}, "mnist")
                if j["part"] == "val_gamma"]

    def row(part, m, g, test, val=None, status="ok", seed=1):
        return {"part": part, "method": m, "gamma": g, "seed": seed, "status": status, "final_test_acc": test,
                "best_test_acc": test, "final_val_acc": val}
    fin = pd.DataFrame([row("paper_length", "BP", None, 98.3),
                        row("paper_length", "FTP", 0.2, 10.0, status="diverged"),
                        row("paper_length", "FTP", 0.05, 97.5), row("paper_length", "FTP", 0.1, 97.9),
                        row("paper_length", F.FTP_OS, 0.05, 98.0), row("paper_length", F.FTP_OS, 0.1, 95.0),
                        # validation prefers 0.05 for τ₁ (the test set would say 0.1) and 0.1 for output step
                        row("val_gamma", "FTP", 0.05, 97.0, 97.4), row("val_gamma", "FTP", 0.1, 97.8, 96.0),
                        row("val_gamma", "FTP", 0.1, 97.8, 98.0, seed=2),
                        row("val_gamma", "FTP", 0.2, 10.0, 9.9, "diverged"),
                        row("val_gamma", F.FTP_OS, 0.05, 97.0, 96.5), row("val_gamma", F.FTP_OS, 0.1, 96.0, 97.5)])
    m = F.metrics(fin, T)
    pl = m["paper_length"]
    v = pl["val_gamma"]
    assert v["ftp"]["gamma"] == 0.05 and v["ftp"]["val_acc"] == {"0.05": 97.4, "0.1": 97.0, "0.2": 9.9}
    assert v["ftp"]["diverged"] == {"0.05": 0, "0.1": 0, "0.2": 1} and v["ftp"]["n_val"] == 1000
    assert v["ftp"]["final_test_acc"]["mean"] == 97.5 and v["ftp"]["held_out_test_acc"]["mean"] == 97.0
    assert v["ftp"]["within_2_of_bp"] is True and pl["ftp_val_gamma_within_2_of_bp"] is True
    assert v["ftp_os"]["gamma"] == 0.1 and v["ftp_os"]["final_test_acc"]["mean"] == 95.0
    assert pl["ftp_os_val_gamma_within_2_of_bp"] is False  # 3.3 points below BP: the pick is kept
    assert pl["final_test_acc"]["FTP"]["mean"] == 10.0  # the held-out runs stay out of the paper-length rows
    assert pl["gamma_best"]["ftp"]["gamma"] == 0.1  # … and out of the test-set γ sweep
    assert "val_gamma" not in F.metrics(fin[fin.part != "val_gamma"], T)["paper_length"]
    fig = F.plot_table(pd.concat([fin, pd.DataFrame([{**row("table", "BP", None, 98.1)}])]), T, "mnist")
    labels = fig.axes[3].get_legend_handles_labels()[1]
    assert "FTP: validation accuracy (1,000 held out)" in labels and "FTP: γ chosen on validation" in labels
    __import__("matplotlib.pyplot").pyplot.close(fig)

