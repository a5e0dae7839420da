"""Linear layers packed for oneDNN and the fused gated MLP (howsure.backends.transformers.onednn): the same
function as transformers' own layers, and the original weights' memory handed back."""

import numpy as np
import pytest
import torch

from cpu_simulation import with_native_bf16
from howsure.backends import load_backend
from howsure.backends.transformers import cpu_features, onednn
from howsure.core.task import Task

pytestmark = pytest.mark.skipif(not onednn.available(torch.device("cpu")), reason="torch without oneDNN")
# An AVX2-only CPU cannot pack bf16: these skip there (cpu_isa: allowed in CI), and
# tests/test_cpu_features.py checks what the backend does on such a CPU instead.
needs_bf16_packing = [
    pytest.mark.cpu_isa,
    pytest.mark.skipif(not cpu_features.onednn_packs(torch.bfloat16),
                       reason="oneDNN cannot pack bf16 weights on this CPU (tests/test_cpu_features.py "
                              "covers what the backend does instead)"),
]

TASK = Task(instruction="Review: {text}\nPositive or negative?",
            labels={"positive": ["positive"], "negative": ["negative"]})
TEXTS = ["good", "a long and winding text that needs many more tokens than the others do", "bad", "fine"]


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16_packing)])
def test_a_packed_linear_computes_what_the_linear_layer_does(dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80).to(dtype)
    packed = onednn.PackedLinear(linear)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    with torch.no_grad():
        for shape in [(1, 48), (7, 48), (3, 5, 48)]:  # any number of tokens, batched or flat
            x = torch.randn(shape, dtype=dtype)
            torch.testing.assert_close(packed(x), linear(x), **tolerance)
    assert packed.compute_dtype == dtype and packed.weight.is_mkldnn


def test_the_fused_gate_and_up_compute_silu_gate_times_up():
    torch.manual_seed(0)
    gate, up = torch.nn.Linear(32, 64, bias=False), torch.nn.Linear(32, 64, bias=False)
    x = torch.randn(9, 32)
    with torch.no_grad():
        silu = onednn.packed_linear(x, onednn.pack_weight(gate.weight), activation="swish")
        fused = onednn.packed_linear(x, onednn.pack_weight(up.weight), multiply=silu)
        torch.testing.assert_close(fused, torch.nn.functional.silu(gate(x)) * up(x), atol=1e-5, rtol=1e-5)


def test_the_backend_packs_every_decoder_linear_and_fuses_each_mlp(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), batch_size=8)
    layers = backend.model.model.layers
    kinds = {type(module).__name__ for layer in layers for module in layer.modules()
             if "Linear" in type(module).__name__}
    assert kinds == {"PackedLinear"}
    assert all("forward" in vars(layer.mlp) for layer in layers)  # the fused forward
    assert type(backend.model.lm_head).__name__ == "PackedLinear"
    assert type(backend.model.model.embed_tokens) is torch.nn.Embedding  # keeps the original


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("mixed", 0.02), ("bfloat16", 0.05)])
def test_packed_and_unpacked_backends_give_the_same_scores(tiny_model_dir, dtype, atol, monkeypatch):
    with_native_bf16(monkeypatch)  # where oneDNN cannot pack bf16, both run it unpacked
    packed = load_backend(str(tiny_model_dir), batch_size=8, dtype=dtype, exact_ties=0)
    plain = load_backend(str(tiny_model_dir), batch_size=8, dtype=dtype, exact_ties=0, prepack=False)
    assert type(plain.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    for a, b in zip(packed.label_scores(TASK, TEXTS), plain.label_scores(TASK, TEXTS)):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=atol)


@pytest.mark.cpu_isa
@needs_bf16_packing[1]
def test_mixed_recomputes_near_ties_exactly_with_packed_layers(tiny_model_dir, monkeypatch):
    with_native_bf16(monkeypatch)
    exact = load_backend(str(tiny_model_dir), batch_size=8).label_scores(TASK, TEXTS)
    mixed = load_backend(str(tiny_model_dir), batch_size=8, dtype="mixed", exact_ties=0.49)  # every text
    bf16_matmuls, exact_calls = [], []
    linear = onednn.packed_linear
    monkeypatch.setattr(onednn, "packed_linear", lambda x, *args, **kwargs: (
        bf16_matmuls.append(x.dtype == torch.bfloat16), linear(x, *args, **kwargs))[1])
    for layer in mixed._mixed_layers:  # the fused MLP calls these layers only when exact
        layer.register_forward_hook(lambda module, args, out: exact_calls.append(module.exact))
    scores = mixed.label_scores(TASK, TEXTS)
    assert any(bf16_matmuls) and exact_calls and all(exact_calls)  # a bf16 pass, then the exact one
    for a, b in zip(scores, exact):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_an_mlp_with_another_activation_or_biases_is_not_fused():
    class MLP(torch.nn.Module):
        def __init__(self, activation, bias):
            super().__init__()
            self.gate_proj = torch.nn.Linear(8, 16, bias=bias)
            self.up_proj = torch.nn.Linear(8, 16, bias=bias)
            self.down_proj = torch.nn.Linear(16, 8, bias=bias)
            self.act_fn = activation

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Module() for _ in range(3)])
    model.layers[0].mlp = MLP(torch.nn.GELU(), False)
    model.layers[1].mlp = MLP(torch.nn.SiLU(), True)
    model.layers[2].mlp = MLP(torch.nn.SiLU(), False)
    onednn.pack_linear_layers(model)
    fused = onednn.fuse_gated_mlps(model, lambda layer: getattr(layer, "compute_dtype", None))
    assert fused == 1 and "forward" in vars(model.layers[2].mlp)
    assert "forward" not in vars(model.layers[0].mlp) and "forward" not in vars(model.layers[1].mlp)


def rss_of_mapping(path) -> int:
    """Resident kB of this process's mappings of ``path``."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            inside = len(fields) > 5 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux only")
def test_the_pages_of_a_released_file_mapped_weight_are_handed_back_and_read_again_intact(tmp_path):
    path = tmp_path / "weights.bin"
    values = np.random.default_rng(0).standard_normal(4 * 1024 * 1024, dtype=np.float32)  # 16 MB
    values.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="c")  # a private mapping, as safetensors loads
    weight = torch.from_numpy(mapped)
    torch.testing.assert_close(weight, torch.from_numpy(values), atol=0, rtol=0)  # every page read
    before = rss_of_mapping(path)
    released = onednn.release_file_pages(weight)
    assert released >= 16 * 1024 * 1024 - 2 * 4096
    assert rss_of_mapping(path) < before - 15 * 1024
    torch.testing.assert_close(weight, torch.from_numpy(values), atol=0, rtol=0)  # read again from the file


def test_memory_that_is_not_a_clean_file_mapping_is_left_alone(tmp_path):
    ordinary = torch.arange(1024 * 1024, dtype=torch.float32)
    assert onednn.release_file_pages(ordinary) == 0
    path = tmp_path / "weights.bin"
    np.zeros(1024 * 1024, dtype=np.float32).tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="c")
    mapped[:10] = 7  # a written page: the mapping now holds a private copy
    weight = torch.from_numpy(mapped)
    assert onednn.release_file_pages(weight) == 0
    assert weight[:10].tolist() == [7.0] * 10


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux only")
@pytest.mark.cpu_isa
@needs_bf16_packing[1]
def test_mixed_layers_keep_their_float32_weights_off_memory_between_exact_uses(tmp_path):
    from howsure.backends.transformers.precision import MixedPrecisionLinear

    path = tmp_path / "weights.bin"
    np.random.default_rng(0).standard_normal(1024 * 1024, dtype=np.float32).tofile(path)  # 4 MB
    linear = torch.nn.Linear(1024, 1024, bias=False)
    linear.weight = torch.nn.Parameter(torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c")).view(1024, 1024),
                                       requires_grad=False)
    expected_weight = torch.from_numpy(np.fromfile(path, dtype=np.float32)).view(1024, 1024)
    layer = MixedPrecisionLinear(linear, keep_float32=True, packed=True)
    assert rss_of_mapping(path) < 64  # read for the bf16 copy, then handed back
    x = torch.randn(3, 1024)
    layer.exact = True
    with torch.no_grad():
        out = layer(x)
    torch.testing.assert_close(out, x @ expected_weight.T)
    assert rss_of_mapping(path) < 64  # and again after the exact use


def test_prepack_must_be_true_or_false(tiny_model_dir):
    from howsure.errors import ModelError

    for bad in ("no", 0, None):
        with pytest.raises(ModelError, match=f"prepack must be True or False, got {bad!r}"):
            load_backend(str(tiny_model_dir), prepack=bad)


def test_the_int8_kernels_bench_precision_weighs_against_emulated_bf16_compute_the_product():
    # docs/scoring.md rejects int8 for mixed on these kernels' figures: they must compute x @ W.T.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_precision.py"
    spec = importlib.util.spec_from_file_location("bench_precision", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=generator)
    x = torch.randn(16, 64, generator=generator)
    exact = x @ weight.T
    engines = [e for e in ("onednn", "fbgemm") if e in torch.backends.quantized.supported_engines]
    assert engines, f"torch has no int8 engine here: {torch.backends.quantized.supported_engines}"
    for engine in engines:
        out = bench.dynamic_int8_linear(weight, engine)(x)
        error = float((out - exact).norm() / exact.norm())
        assert 0 < error < 0.05, f"{engine}: relative error {error}"
    x[:, 3] *= 50  # an outlier channel, as the model's MLP inputs have: one scale per tensor is coarser
    per_token = (bench.on_int8_grid(x) - x).norm()
    assert (bench.on_int8_grid(x, per_tensor=True) - x).norm() > 1.5 * per_token
