"""Forward Target Propagation (arXiv 2506.11030) for MLPs — a RECONSTRUCTION (ftp.md §2.3): no code of
the authors exists and the paper body was unavailable; every reconstructed choice is a parameter.

Pass 1 is ordinary inference (h_l, ŷ). A fixed random G [C, n_1] projects the label and the prediction
into the first hidden layer and gives its target ``τ_1 = h_1 + γ (ψ(y G) − ψ(ŷ G))`` (``gamma_mode:
scale``; ``output_step`` uses ``t = ŷ + γ (y − ŷ)`` and ``τ_1 = h_1 + ψ(t G) − ψ(ŷ G)``). Pass 2 runs
the ordinary forward layers from τ_1: ``τ_l = σ(W_l τ_{l−1} + b_l)``. Each hidden layer minimises
``½‖σ(W_l h_{l−1} + b_l) − τ_l‖²`` (sum over units, batch mean), whose gradient is
``δ_l = (h_l − τ_l) ⊙ σ'(a_l)``, ``∇W_l = δ_lᵀ h_{l−1} / B``; the output layer learns from the true label
(``out_target: label``; ``tau`` trains it towards pass 2's output, an ablation that fails in the spec's
sanity check). Forward evaluations only; no autograd graph.

CNNs (:class:`~repro.models.CNN` without BatchNorm; ftp.md §2.5): G [C, C1·H1·W1] projects into the first
conv block's output map *before pooling*, ``τ_1 = h_1 + γ(ψ(yG) − ψ(ŷG))`` reshaped to [B, C1, H1, W1];
pass 2 runs pool → further conv blocks (their outputs before pooling are their targets) → flatten → FC
layers from τ_1. A conv layer's local loss ½‖act(conv(h_in)) − τ‖² (sum over C, H, W; batch mean) has the
weight gradient ``conv2d_weight(h_in, δ)`` with δ = (h − τ) ⊙ act'(a), computed in closed form.
"""
from __future__ import annotations

import math

import torch

from ..models import ACTIVATIONS, ConfigError, check_choice, dloss_dz, loss_value, prediction
from .base import Batch, Rule, StepOut, dropout_masks, set_grad, signal


class FTP(Rule):
    name = "ftp"
    PARAMS = {"gamma": 0.2, "gamma_mode": "scale", "psi": "act", "g_scale": 1.0, "out_target": "label",
              "pre": "h", "keep": 1.0}

    def __init__(self, **params):
        super().__init__(**params)
        check_choice("rule.gamma_mode", self.params["gamma_mode"], ("scale", "output_step"))
        check_choice("rule.psi", self.params["psi"], ("act", *ACTIVATIONS))
        check_choice("rule.out_target", self.params["out_target"], ("label", "tau"))
        check_choice("rule.pre", self.params["pre"], ("h", "tau"))

    def setup(self, model, n_train):
        self._one_hot = None  # decided on the first batch (psi_label)
        self.cnn = len(getattr(model, "convs", ())) > 0
        if self.cnn:
            if model.bn:
                raise ConfigError("rule 'ftp' on a CNN needs model.cnn.bn=false (local conv losses without BatchNorm)")
            if self.params["keep"] < 1.0:
                raise ConfigError("rule 'ftp' on a CNN: rule.keep must be 1 (dropout is implemented for MLPs only)")
            c = model.sizes[-1]
            h1, w1 = model.spatial[0]
            n1 = model.convs[0].out_channels * h1 * w1
            bound = math.sqrt(6.0 / c) * self.params["g_scale"]
            self.G = torch.rand(c, n1, device=model.layers[0].weight.device) * 2 * bound - bound
            return
        if model.depth < 1:
            raise ConfigError("rule 'ftp' needs at least one hidden layer (model.depth >= 1)")
        c, n1 = model.sizes[-1], model.sizes[1]
        bound = math.sqrt(6.0 / c) * self.params["g_scale"]  # He-uniform, fan-in = n_out
        dev = model.layers[0].weight.device
        self.G = torch.rand(c, n1, device=dev) * 2 * bound - bound

    def psi(self, model, v: torch.Tensor) -> torch.Tensor:
        p = self.params["psi"]
        return model.act.fn(v) if p == "act" else ACTIVATIONS[p].fn(v)

    def psi_label(self, model, y: torch.Tensor) -> torch.Tensor:
        """ψ(y G). For one-hot targets (classification; the data's contract, checked on the first batch) it is
        the labels' rows of ψ(G), computed once per G: a one-hot product picks a row exactly, so this equals
        ψ(y G) bit for bit and saves a [B, C]×[C, n₁] product and ψ on [B, n₁] each step (on the CNN n₁ is the
        whole first feature map). Other targets (regression's [B, 1]) take the product."""
        if getattr(self, "_one_hot", None) is None:
            self._one_hot = y.shape[1] > 1 and torch.equal(
                y, torch.nn.functional.one_hot(y.argmax(1), y.shape[1]).to(y.dtype))
        if not self._one_hot:
            return self.psi(model, y @ self.G)
        if getattr(self, "_psi_G_of", None) is not self.G:  # G set in setup or restored from a checkpoint
            self._psi_G, self._psi_G_of = self.psi(model, self.G), self.G
        return self._psi_G.index_select(0, y.argmax(1))

    def first_target(self, model, h1: torch.Tensor, yhat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = self.params["gamma"]
        base = self.psi(model, yhat @ self.G)
        if self.params["gamma_mode"] == "scale":
            return h1 + signal(model, g * (self.psi_label(model, y) - base), "correction")
        return h1 + signal(model, self.psi(model, (yhat + g * (y - yhat)) @ self.G) - base, "correction")

    @torch.no_grad()
    def targets(self, model, hs: list[torch.Tensor], y: torch.Tensor, masks=None) -> list[torch.Tensor]:
        """τ_1 … τ_{L−1} and pass 2's output pre-activation (last entry)."""
        yhat = prediction(model.loss, hs[-1])
        taus = [signal(model, self.first_target(model, hs[1], yhat, y), "targets")]
        for i in range(1, len(model.layers)):  # pass 2: the ordinary forward layers, from τ_1
            z, h = model.layer(i, taus[-1], None if masks is None or i == len(model.layers) - 1 else masks[i])
            taus.append(signal(model, h, "targets") if i < len(model.layers) - 1 else z)
        return taus

    @torch.no_grad()
    def _cnn_step(self, model, batch: Batch) -> StepOut:
        """Pass 1 keeps every unit's input, pre-activation and output (conv blocks: before pooling); τ_1 from
        G; pass 2 from τ_1 gives each later weight layer's target; closed-form local gradients."""
        B, y, nc = len(batch.x), batch.y, len(model.convs)
        ins, pres, outs = model.unit_pass(model.image(batch.x))
        yhat = prediction(model.loss, outs[-1])
        tau1 = signal(model, self.first_target(model, outs[0].flatten(1), yhat, y), "targets").view_as(outs[0])
        later = model.unit_pass(model.pool(tau1), 1)[2]  # later units' targets (last: pass 2's output)
        taus = [tau1] + [signal(model, t, "targets") for t in later[:-1]] + later[-1:]  # as the MLP path
        n_units = len(model.units)
        for k in range(n_units - 1):  # hidden weight layers: local target losses
            act = model.act if k < nc else model.fc_act
            d = signal(model, outs[k] - taus[k], "errors") * act.grad(pres[k], outs[k])
            gw, gb = model.unit_grad(k, ins[k], d)
            set_grad(model.units[k].weight, gw / B)
            if gb is not None:
                set_grad(model.units[k].bias, gb / B)
        out = model.layers[-1]
        t = y if self.params["out_target"] == "label" else prediction(model.loss, taus[-1])
        d = dloss_dz(model.loss, outs[-1], t)
        set_grad(out.weight, d.t() @ ins[-1])
        if out.bias is not None:
            set_grad(out.bias, d.sum(0))
        return StepOut(loss_value(model.loss, outs[-1], y), outs[-1], {"taus": taus})

    @torch.no_grad()
    def step(self, model, batch: Batch) -> StepOut:
        if self.cnn:
            return self._cnn_step(model, batch)
        x, y = batch.x, batch.y
        B = x.shape[0]
        m = dropout_masks(model, B, self.params["keep"], x.device)
        zs, hs = model.forward_all(x, m)
        taus = self.targets(model, hs, y, m)
        L = len(model.layers)
        for i, lin in enumerate(model.layers[:-1]):  # hidden layers: local target losses
            d = signal(model, hs[i + 1] - taus[i], "errors") * model.act.grad(zs[i], hs[i + 1])
            if m is not None:
                d = d * m[i]
            pre = hs[i] if (i == 0 or self.params["pre"] == "h") else taus[i - 1]
            set_grad(lin.weight, d.t() @ pre / B)
            if lin.bias is not None:
                set_grad(lin.bias, d.sum(0) / B)
        out = model.layers[-1]  # output layer: exact gradient of the batch-mean loss on its own input
        t = y if self.params["out_target"] == "label" else prediction(model.loss, taus[-1])
        d = dloss_dz(model.loss, hs[-1], t)
        set_grad(out.weight, d.t() @ hs[L - 1])
        if out.bias is not None:
            set_grad(out.bias, d.sum(0))
        return StepOut(loss_value(model.loss, hs[-1], y), hs[-1], {"masks": m, "taus": taus})

    def state_dict(self):
        return {"G": self.G}
