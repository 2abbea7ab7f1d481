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


def test_noise_models():
    g = torch.Generator().manual_seed(2)
    w = torch.ones(100_000)
    w[0] = 2.0
    assert abs(float((write_noise(w, 0.05, g) - w).std()) - 0.1) < 2e-3  # κ·max|W| = 0.1
    r = read_noise(w[1:], 0.1, g)
    assert abs(float(r.std()) - 0.1) < 2e-3 and write_noise(w, 0) is w
