"""What the backend does with bf16 on each kind of CPU (howsure.backends.transformers.cpu_features): native
bf16 where the CPU has it, unpacked bf16 where oneDNN cannot pack it, and float32 with a
one-line notice where bf16 would be emulated; never a traceback. The other kinds are simulated
(tests/cpu_simulation.py), and an AVX2-only CPU is reproduced for real in a subprocess with
oneDNN limited to AVX2 (``ONEDNN_MAX_CPU_ISA``)."""

import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cpu_simulation import with_native_bf16, without_native_bf16
from howsure.backends import load_backend
from howsure.backends.transformers import cpu_features, onednn
from howsure.backends.transformers.cpu_features import Bf16FallbackWarning
from howsure.backends.transformers.precision import MixedPrecisionLinear, packed_precision
from howsure.core.task import Task

TASK = Task(instruction="Review: {text}\nPositive or negative?",
            labels={"positive": ["positive"], "negative": ["negative"]})
TEXTS = ["good", "a long and winding text that needs many more tokens than the others do", "bad", "fine"]
SRC = Path(__file__).resolve().parents[1] / "src"
needs_onednn = pytest.mark.skipif(not onednn.available(torch.device("cpu")), reason="torch without oneDNN")


def scores(backend):
    return np.stack([s.probabilities for s in backend.label_scores(TASK, TEXTS)])


@pytest.fixture(scope="module")
def float32_scores(tiny_model_dir):
    return scores(load_backend(str(tiny_model_dir)))


@pytest.mark.parametrize("dtype", ["mixed", "bfloat16"])
@pytest.mark.parametrize("packs_bf16", [False, True])  # AVX2 alone; AVX512 without BF16
def test_without_bf16_instructions_a_bf16_mode_computes_in_float32_and_says_so_once(
        tiny_model_dir, float32_scores, monkeypatch, dtype, packs_bf16):
    without_native_bf16(monkeypatch, packs_bf16=packs_bf16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = load_backend(str(tiny_model_dir), dtype=dtype)
    notices = [w for w in caught if issubclass(w.category, Bf16FallbackWarning)]
    assert len(notices) == 1
    message = str(notices[0].message)
    assert "\n" not in message and f"dtype '{dtype}' computes in float32" in message
    assert "avx512_bf16" in message and "amx_bf16" in message and "avx_ne_convert" in message
    assert backend.dtype == "float32" and backend.requested_dtype == dtype
    assert not backend._mixed_layers
    assert {p.dtype for p in backend.model.parameters()} == {torch.float32}
    np.testing.assert_allclose(scores(backend), float32_scores, atol=1e-6)


def test_float32_says_nothing_and_a_cpu_with_bf16_keeps_the_bf16_modes(tiny_model_dir, monkeypatch):
    without_native_bf16(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Bf16FallbackWarning)
        assert load_backend(str(tiny_model_dir)).dtype == "float32"
    with_native_bf16(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Bf16FallbackWarning)
        mixed = load_backend(str(tiny_model_dir), dtype="mixed")
    assert mixed.dtype == "mixed" and mixed._mixed_layers


@needs_onednn
def test_native_bf16_that_onednn_cannot_pack_runs_unpacked(tiny_model_dir, float32_scores, monkeypatch):
    with_native_bf16(monkeypatch, packs_bf16=False)
    mixed = load_backend(str(tiny_model_dir), dtype="mixed")
    layer = mixed.model.model.layers[0]
    assert type(layer.mlp.up_proj) is MixedPrecisionLinear and not layer.mlp.up_proj.packed
    assert layer.mlp.up_proj.weight.dtype == torch.bfloat16 and not layer.mlp.up_proj.weight.is_mkldnn
    assert type(layer.self_attn.q_proj) is onednn.PackedLinear  # float32 layers are still packed
    assert packed_precision(layer.mlp.up_proj) is None  # so the fused MLP runs unfused
    assert 0 < np.abs(scores(mixed) - float32_scores).max() < 0.05
    bf16 = load_backend(str(tiny_model_dir), dtype="bfloat16")
    kinds = {type(m) for m in bf16.model.modules() if "Linear" in type(m).__name__}
    assert kinds == {torch.nn.Linear}  # left as transformers made them, not a traceback
    assert np.abs(scores(bf16) - float32_scores).max() < 0.1


@needs_onednn
def test_packing_leaves_a_layer_it_cannot_pack_as_it_is(monkeypatch):
    without_native_bf16(monkeypatch)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8).bfloat16(), torch.nn.Linear(8, 4))
    packed = onednn.pack_linear_layers(model)
    assert [type(m) for m in model] == [torch.nn.Linear, onednn.PackedLinear] and len(packed) == 1


@pytest.mark.parametrize("limit, native", [
    (None, "amx_bf16"), ("AVX512_CORE_AMX", "amx_bf16"), ("avx512_core_bf16", "avx512_bf16"),
    ("AVX512_CORE", None), ("AVX2", None), ("SOMETHING_NEW", "amx_bf16"),
])
def test_an_isa_limit_decides_which_bf16_instructions_count(monkeypatch, limit, native):
    flags = {**dict.fromkeys(cpu_features.RELEVANT_FLAGS, True), "avx_ne_convert": False}
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: flags)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if limit is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    support = cpu_features.bf16_support()
    assert support.native == native
    assert (support.missing == "") == (native is not None)
    if native is None:
        assert f"ONEDNN_MAX_CPU_ISA={limit}" in support.missing  # the CPU has them, the limit hides them


def test_flags_come_from_proc_cpuinfo_when_torch_cannot_say(monkeypatch):
    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "get_capabilities", broken)
    flags = cpu_features.cpu_flags.__wrapped__()
    assert set(flags) == set(cpu_features.RELEVANT_FLAGS)
    if os.path.exists("/proc/cpuinfo") and " avx2 " in open("/proc/cpuinfo").read():
        assert flags["avx2"]


def test_score_with_mixed_on_a_cpu_without_bf16_prints_one_warning_line(tmp_path, tiny_model_dir, monkeypatch):
    from howsure.cli import app

    without_native_bf16(monkeypatch)
    source = tmp_path / "in.tsv"
    source.write_text("text\ngreat film\nawful\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir),
                                      "--dtype", "mixed"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "computes in float32" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: dtype 'mixed'") and "avx512_bf16" in lines[0]
    assert "Traceback" not in result.output and "Bf16FallbackWarning" not in result.output
    assert len(out.read_text().splitlines()) == 2


def load_bench_scoring():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scoring", SRC.parent / "bench" / "bench_scoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_onednn
def test_the_benchmark_reports_a_missing_bf16_kernel_instead_of_crashing_and_names_the_kernels(
        tiny_model_dir, monkeypatch):
    bench = load_bench_scoring()
    without_native_bf16(monkeypatch)
    assert bench.matmul_gflops("bfloat16", 1, seconds=0.01, kernel="packed") is None
    assert bench.matmul_gflops("float32", 1, seconds=0.01, kernel="best") > 0
    assert bench.rate_text(None) == "unavailable"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Bf16FallbackWarning)
        mixed = load_backend(str(tiny_model_dir), dtype="mixed")
    assert bench.kernels_used(mixed.model) == "oneDNN packed float32 x15"  # 2 layers x 7, and the head
    with_native_bf16(monkeypatch, packs_bf16=False)
    mixed = load_backend(str(tiny_model_dir), dtype="mixed")
    assert bench.kernels_used(mixed.model) == "oneDNN packed float32 x11, bf16 F.linear (mixed) x4"


AVX2_CHILD = """
import json, sys, warnings
import torch
from howsure.backends import load_backend
from howsure.backends.transformers import cpu_features, onednn
from howsure.backends.transformers.cpu_features import Bf16FallbackWarning
from howsure.core.task import Task

report = {"packs_bf16": cpu_features.onednn_packs(torch.bfloat16),
          "packs_float32": cpu_features.onednn_packs(torch.float32),
          "native": cpu_features.bf16_support().native}
try:  # what failed on the AVX2 machine, to show the limit reproduces it
    onednn.pack_weight(torch.ones(8, 16, dtype=torch.bfloat16))
    report["raw_pack_error"] = None
except RuntimeError as exc:
    report["raw_pack_error"] = str(exc)
sys.path.insert(0, sys.argv[2])
import bench_scoring
report["bench_bf16_packed"] = bench_scoring.matmul_gflops("bfloat16", 1, seconds=0.01, kernel="packed")
task = Task(instruction="Review: {text}", labels={"positive": ["positive"], "negative": ["negative"]})
for dtype in ("mixed", "bfloat16", "float32"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = load_backend(sys.argv[1], dtype=dtype)
    report[dtype] = {"dtype": backend.dtype, "notices": [str(w.message) for w in caught
                                                          if issubclass(w.category, Bf16FallbackWarning)],
                     "p": [s.probabilities.tolist() for s in backend.label_scores(task, ["good", "bad"])]}
print(json.dumps(report))
"""


@needs_onednn
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's AVX2 limit is x86's")
def test_an_avx2_only_cpu_for_real_scores_bf16_modes_in_float32(tiny_model_dir):
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, "-c", AVX2_CHILD, str(tiny_model_dir), str(SRC.parent / "bench")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["packs_bf16"] and report["packs_float32"] and report["native"] is None
    assert "bf16 path needs the cpu support" in report["raw_pack_error"]  # the AMD EPYC's error
    assert report["bench_bf16_packed"] is None  # the benchmark's probe crashed here before
    for dtype in ("mixed", "bfloat16"):
        assert report[dtype]["dtype"] == "float32" and len(report[dtype]["notices"]) == 1
        assert "none of amx_bf16, avx512_bf16, avx_ne_convert" in report[dtype]["notices"][0]
        np.testing.assert_allclose(report[dtype]["p"], report["float32"]["p"], atol=1e-6)
    assert report["float32"]["notices"] == []
