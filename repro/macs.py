"""Analytic multiply-accumulate (MAC) counts per training sample, after the FTP authors' spreadsheet
(``MACC_analysis_FTP.ods``; ftp.md §4.4), for BP, DTP, PEPITA, Forward-Forward and FTP.

A network is a list of layers: ``Dense(n_in, n_out)``, ``Conv(c_in, c_out, k, h_out, w_out)`` (valid
convolution; cost h_out·w_out·c_out·k²·c_in) and ``Pool(elements)`` (charged one operation per input
element, as the sheet does). Terms:

- F: forward MACs of all layers (pooling included); F1: forward MACs of the first weight layer;
- Bk: backward error MACs: every weight layer except the first (its input needs no error) plus pooling;
- U: weight-update MACs (one per weight use: the weight layers' forward MACs, pooling excluded);
- E: output error, n_out; goodness = normalisation = Σ output elements of the weight layers;
- |h1|: output elements of the first weight layer (before pooling), where FTP projects its targets.

Formulas (the sheet's): BP = F + Bk + U + E; FF = 2(F + U + goodness + normalisation);
PEPITA = 2F + U + E + n_out·n_0; DTP = 2F − F1 + E + 2U; FTP = 2F + U + E + 2·n_out·|h1| − F1.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dense:
    n_in: int
    n_out: int

    @property
    def macs(self) -> int:
        return self.n_in * self.n_out

    @property
    def outputs(self) -> int:
        return self.n_out


@dataclass(frozen=True)
class Conv:
    c_in: int
    c_out: int
    k: int
    h_out: int
    w_out: int

    @property
    def macs(self) -> int:
        return self.h_out * self.w_out * self.c_out * self.k * self.k * self.c_in

    @property
    def outputs(self) -> int:
        return self.c_out * self.h_out * self.w_out


@dataclass(frozen=True)
class Pool:
    elements: int  # input elements

    @property
    def macs(self) -> int:
        return self.elements


def terms(layers: list, n_in: int, e_out: int | None = None) -> dict[str, int]:
    weights = [l for l in layers if not isinstance(l, Pool)]
    pools = [l for l in layers if isinstance(l, Pool)]
    n_out = weights[-1].outputs
    units = sum(l.outputs for l in weights)
    return {
        "F": sum(l.macs for l in layers),
        "F1": weights[0].macs,
        "Bk": sum(l.macs for l in weights[1:]) + sum(p.macs for p in pools),
        "U": sum(l.macs for l in weights),
        "E": n_out if e_out is None else e_out,
        "goodness": units,
        "normalisation": units,
        "n_out": n_out,
        "n_0": n_in,
        "h1": weights[0].outputs,
    }


def counts(layers: list, n_in: int, e_out: int | None = None) -> dict[str, int]:
    """MACs per training sample for each method. ``e_out`` overrides E (to mirror a sheet quirk)."""
    t = terms(layers, n_in, e_out)
    F, F1, Bk, U, E = t["F"], t["F1"], t["Bk"], t["U"], t["E"]
    return {
        "BP": F + Bk + U + E,
        "DTP": 2 * F - F1 + E + 2 * U,
        "PEPITA": 2 * F + U + E + t["n_out"] * t["n_0"],
        "FF": 2 * (F + U + t["goodness"] + t["normalisation"]),
        "FTP": 2 * F + U + E + 2 * t["n_out"] * t["h1"] - F1,
    }


def fc(sizes: list[int]) -> list:
    return [Dense(a, b) for a, b in zip(sizes[:-1], sizes[1:])]


def cnn(c_in: int, side: int, classes: int, channels: int = 32, k: int = 5) -> list:
    """PEPITA's Net1conv1fcXL: conv k×k (valid) → max-pool 2 → FC to the classes."""
    h = side - k + 1
    return [Conv(c_in, channels, k, h, h), Pool(channels * h * h), Dense(channels * (h // 2) ** 2, classes)]


NETS = {
    "fc_mnist": (fc([784, 1024, 128, 10]), 784),
    "fc_cifar10": (fc([3072, 1024, 128, 10]), 3072),
    "fc_cifar100": (fc([3072, 1024, 128, 100]), 3072),
    "cnn_mnist": (cnn(1, 28, 10), 784),
    "cnn_cifar10": (cnn(3, 32, 10), 3072),
    "cnn_cifar100": (cnn(3, 32, 100), 3072),
}


def all_counts() -> dict:
    """Counts for the spec's six nets, plus the variant that mirrors the sheet's CIFAR-100 CNN cells
    (they use E = 10 although that net has 100 outputs; its FF cell, which has no E term, does not)."""
    out = {name: counts(layers, n_in) for name, (layers, n_in) in NETS.items()}
    layers, n_in = NETS["cnn_cifar100"]
    out["cnn_cifar100_sheet_E10"] = counts(layers, n_in, e_out=10)
    out["relative_to_bp_percent"] = {
        name: {m: 100.0 * (v / out[name]["BP"] - 1) for m, v in out[name].items()} for name in NETS}
    out["millions"] = {name: {m: round(v / 1e6, 3) for m, v in out[name].items()} for name in NETS if name.startswith("fc")}
    return out
