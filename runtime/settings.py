"""Settings: env vars with prefix FTPILOT_, then a TOML file in the user config dir, then defaults.

The file lives at `<user config dir>/ftpilot/config.toml`; FTPILOT_CONFIG_FILE moves it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

APP = "ftpilot"


def config_file() -> Path:
    env = os.environ.get("FTPILOT_CONFIG_FILE")
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir(APP)) / "config.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTPILOT_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP)),
                           description="Store, audits, runs and reports live here.")
    models_dir: Path | None = Field(None, description="Prepared models (default: <data_dir>/models).")
    workspace_root: Path = Field(default_factory=Path.cwd,
                                 description="Tools read and write only inside this folder unless widened.")
    database_url: str | None = Field(None, description="Any SQLAlchemy URL; default SQLite (WAL) in data_dir.")
    default_model: str = Field("default", description="Model used when none is named.")
    hub_offline: bool = Field(True, description="Never touch the model hub unless turned off.")
    allow_outside_workspace: bool = Field(False, description="Let tools touch paths outside workspace_root.")
    allow_pickle: bool = Field(False, description="Load pickle weights (pytorch_model.bin); asked for by name only, "
                               "since unpickling runs code.")
    brain: str = Field("auto", description="auto | vllm | openai | embedded")
    brain_url: str | None = Field(None, description="OpenAI-compatible URL for the vllm/openai brains.")
    brain_model: str | None = Field(None, description="Model the brain serves or loads.")
    brain_tool_parser: str = Field("hermes", description="vllm --tool-call-parser for a self-started vllm brain.")
    allow_remote_engines: bool = Field(False, description="Let engines send prompts (eval rows, data) to URLs that "
                                       "are not on this machine; loopback only by default.")
    serve_dir: Path | None = Field(None, description="State, pid, port and log of the managed vLLM server "
                                   "(default: <data_dir>/serve).")
    vllm_python: Path | None = Field(None, description="Python with vLLM for the managed server (default: the "
                                     "repo's .venv-vllm, or this Python when it has vllm and a GPU).")
    vllm_kvcache_gb: int = Field(2, ge=1, description="KV cache of the managed vLLM server on a CPU, GiB.")
    vllm_dtype: str = Field("auto", description="auto (bf16 where the hardware has it natively) | bfloat16 | "
                            "float32 | float16")
    vllm_max_model_len: int = Field(4096, ge=256, description="Context cap of the managed vLLM server.")
    vllm_max_lora_rank: int = Field(64, ge=1, description="Largest LoRA rank the managed vLLM server accepts.")
    theme: str = Field("textual-dark", description="The chat app's colour theme (the palette's Change theme saves it).")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_file()))

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def resolved_serve_dir(self) -> Path:
        return self.serve_dir or self.data_dir / "serve"

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ftpilot.db'}"


@functools.cache
def get_settings() -> Settings:
    settings = Settings()
    if settings.hub_offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def save_setting(key: str, value) -> Path:
    """Write one setting into the config file, keeping the rest of the file (and its comments) as it was."""
    import tomlkit

    if key not in Settings.model_fields:
        raise KeyError(f"unknown setting {key!r}")
    path = config_file()
    doc = tomlkit.parse(path.read_text()) if path.is_file() else tomlkit.document()
    doc[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written config
    get_settings.cache_clear()
    return path


def reset_settings() -> None:
    """Forget cached settings (tests change env vars between cases)."""
    get_settings.cache_clear()
