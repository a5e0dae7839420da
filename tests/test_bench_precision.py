"""The int8 arithmetic that bench/bench_precision.py --smoothquant measures, on a toy layer:
docs/scoring.md rejects int8 for `mixed` on its figures, so it must compute what it says."""

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_precision.py"
    spec = importlib.util.spec_from_file_location("bench_precision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_layer_and_inputs(outlier: float = 30.0):
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=generator) * 0.1)
    x = torch.randn(32, 64, generator=generator)
    x[:, 5] *= outlier  # an outlier channel, as the model's MLP inputs have
    return linear, x


def test_smoothing_leaves_the_product_unchanged_and_moves_range_to_the_weight(bench):
    linear, x = toy_layer_and_inputs()
    smooth = bench.smoothing(x.abs().amax(0), linear.weight.detach(), alpha=0.5)
    torch.testing.assert_close((x / smooth) @ (linear.weight.detach() * smooth).T, linear(x).detach(), rtol=1e-5, atol=1e-5)
    ratio = lambda t: float((t.abs().amax(1) / t.pow(2).mean(1).sqrt()).median())  # max over rms per token
    assert ratio(x / smooth) < ratio(x) / 2


def test_smoothed_int8_layer_is_the_product_on_the_int8_grid_and_smoothing_helps(bench):
    linear, x = toy_layer_and_inputs()
    exact = linear(x).detach()
    plain = bench.SmoothedInt8Linear(linear, torch.ones(64))(x)
    torch.testing.assert_close(plain, bench.on_int8_grid(x) @ bench.on_int8_grid(linear.weight.detach()).T)
    smooth = bench.smoothing(x.abs().amax(0), linear.weight.detach(), alpha=0.5)
    smoothed = bench.SmoothedInt8Linear(linear, smooth)(x)
    error = lambda y: float((y - exact).norm() / exact.norm())
    assert 0 < error(smoothed) < error(plain) / 2 < 0.05
    seven_bits = bench.SmoothedInt8Linear(linear, smooth, weight_bits=7)(x)
    assert error(seven_bits) > error(smoothed)


def test_int_mm_error_is_zero_with_seven_bit_weights(bench):
    # exact on any CPU: oneDNN's AVX2 kernel saturates only with weights beyond +-64
    assert bench.int_mm_error(63, rows=8) == 0
