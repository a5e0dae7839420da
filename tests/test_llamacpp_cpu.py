"""llama.cpp's AMX weight repacking stays off where llama.cpp reports AMX (howsure.backends.llamacpp_cpu):
the decision, the swap of llama-cpp-python's model defaults, and the real backend and CLI on this CPU."""

import types
import warnings

import pytest
from typer.testing import CliRunner

from howsure.backends.llamacpp_cpu import (AMX_OPT_IN, LlamaCppAmxWarning, amx_reported, extra_buffers_notice,
                                           without_amx_repacking)

WITH_AMX = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 | "
WITHOUT_AMX = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | REPACK = 1 | "


def test_extra_buffers_are_off_only_where_llama_cpp_reports_amx_and_no_one_opted_in():
    assert extra_buffers_notice(WITHOUT_AMX, {}) is None
    assert extra_buffers_notice(WITHOUT_AMX, {AMX_OPT_IN: "0"}) is None
    notice = extra_buffers_notice(WITH_AMX, {})
    assert "AMX" in notice and f"{AMX_OPT_IN}=1" in notice
    assert extra_buffers_notice(WITH_AMX, {AMX_OPT_IN: "0"}) == notice
    assert extra_buffers_notice(WITH_AMX, {AMX_OPT_IN: "1"}) is None
    # Anything but 1 or 0 keeps the crashing path off and names what was read.
    assert "'yes'" in extra_buffers_notice(WITH_AMX, {AMX_OPT_IN: "yes"})


class _Params:
    use_extra_bufts = True


def _fake_llama_cpp(system_info: str):
    module = types.SimpleNamespace(llama_model_default_params=_Params)
    return types.SimpleNamespace(llama_print_system_info=lambda: system_info.encode(), llama_cpp=module)


def test_the_block_swaps_llama_cpps_model_defaults_and_puts_them_back(monkeypatch):
    monkeypatch.delenv(AMX_OPT_IN, raising=False)
    fake = _fake_llama_cpp(WITH_AMX)
    with pytest.warns(LlamaCppAmxWarning, match="AMX"):
        with without_amx_repacking(fake) as off:
            assert off and fake.llama_cpp.llama_model_default_params().use_extra_bufts is False
    assert fake.llama_cpp.llama_model_default_params is _Params
    with pytest.warns(LlamaCppAmxWarning), pytest.raises(RuntimeError), without_amx_repacking(fake):
        raise RuntimeError("a failed load still restores the defaults")
    assert fake.llama_cpp.llama_model_default_params is _Params


def test_without_amx_the_block_changes_nothing_and_says_nothing(monkeypatch):
    monkeypatch.delenv(AMX_OPT_IN, raising=False)
    fake = _fake_llama_cpp(WITHOUT_AMX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with without_amx_repacking(fake) as off:
            assert not off and fake.llama_cpp.llama_model_default_params is _Params


@pytest.mark.model
def test_the_bundled_gguf_loads_without_extra_buffers_exactly_where_llama_cpp_reports_amx(
        bundled_model_ready, monkeypatch, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")  # a failure in CI, where make test installs it
    from howsure.backends import load_backend
    from howsure.cli import app
    from howsure.core.task import load_task

    monkeypatch.delenv(AMX_OPT_IN, raising=False)
    amx = amx_reported(llama_cpp.llama_print_system_info().decode())
    print(f"\nllama.cpp reports AMX: {amx}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = load_backend(bundled_model_ready, "llamacpp", threads=2)
    assert backend.amx_repacking_off is amx
    assert backend.llm.model_params.use_extra_bufts is (not amx)
    assert any(issubclass(w.category, LlamaCppAmxWarning) for w in caught) is amx
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True  # put back
    # A decode runs (where the AMX path is on, this is where llama-cpp-python 0.3.36 segfaulted).
    scores = backend.label_scores(load_task("sentiment"), ["a gorgeous, witty film", "the worst film of the year"])
    assert scores[0].probabilities[0] > scores[1].probabilities[0]
    # The CLI says it in one line.
    source = tmp_path / "in.tsv"
    source.write_text("content\na gorgeous, witty film\n")
    result = CliRunner().invoke(app, ["score", "-i", str(source), "-o", str(tmp_path / "out.jsonl"),
                                      "--text-column", "content", "--backend", "llamacpp", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert ("warning: llama.cpp reports AMX" in result.output) is amx
