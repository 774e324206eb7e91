"""Generation engines: one interface, three backends (and `auto`, which picks one).

    from runtime.engines import get_engine, ChatRequest, Sampling
    eng = get_engine("transformers:default")   # or "vllm:MODEL", "auto:MODEL", "openai:http://127.0.0.1:8000/v1"
    outs = eng.generate([ChatRequest([{"role": "user", "content": "hi"}], json_schema={...}, adapter=None)],
                        Sampling(max_new_tokens=64))
    outs[0].text, outs[0].parsed, outs[0].completion_tokens, outs[0].latency_s

Spec forms for `get_engine`: a string "BACKEND:TARGET" (transformers|hf : model name or dir; openai : base URL,
optionally "#model"; vllm : model, served by the managed vLLM server of runtime/serving.py; auto : model, through
that server when it runs or can start here, else transformers in-process), a bare model name (transformers), or a
dict {"backend", "model", "base_url", "api_key", ...}. Engines other than openai are cached per process.
The transformers engine is also the one with `score()` (perplexity, eval loss). OpenAI URLs are loopback only
unless the `allow_remote_engines` setting allows others. No torch import at this module's top level.
"""

from __future__ import annotations

import logging
import threading

from runtime.engines.base import ChatRequest, Completion, Engine, Sampling, as_request, check_schema
from runtime.errors import BadInput

__all__ = ["ChatRequest", "Completion", "Engine", "Sampling", "as_request", "check_schema", "get_engine",
           "parse_spec", "clear_engines"]

BACKENDS = ("transformers", "openai", "vllm", "auto")
log = logging.getLogger("ftpilot.engines")
_CACHE: dict[tuple, Engine] = {}
_CACHE_LOCK = threading.Lock()


def parse_spec(spec: str | dict) -> dict:
    """Normalise an engine spec to a dict with at least `backend` and `model` (or `base_url`)."""
    if isinstance(spec, dict):
        d = dict(spec)
        d.setdefault("backend", "transformers")
    else:
        s = str(spec).strip()
        backend, _, target = s.partition(":")
        if backend in ("transformers", "hf"):
            d = {"backend": "transformers", "model": target or "default"}
        elif backend in ("vllm", "auto"):
            d = {"backend": backend, "model": target or "default"}
        elif backend == "openai":
            url, _, model = target.partition("#")
            d = {"backend": "openai", "base_url": url, "model": model or None}
        elif s.startswith(("http://", "https://")):
            url, _, model = s.partition("#")
            d = {"backend": "openai", "base_url": url, "model": model or None}
        else:
            d = {"backend": "transformers", "model": s or "default"}
    if d["backend"] == "hf":
        d["backend"] = "transformers"
    if d["backend"] not in BACKENDS:
        raise BadInput(f"unknown engine backend {d['backend']!r}", hint=f"Use one of: {', '.join(BACKENDS)}.")
    if d["backend"] == "openai" and not d.get("base_url"):
        raise BadInput("the openai engine needs a base_url", hint="e.g. openai:http://127.0.0.1:8000/v1")
    return d


def get_engine(spec: str | dict = "transformers:default", *, cache: bool = True) -> Engine:
    d = parse_spec(spec)
    backend = d.pop("backend")
    if backend == "openai":
        from runtime.engines.openai_http import OpenAIEngine

        return OpenAIEngine(**d)
    key = (backend, tuple(sorted((k, str(v)) for k, v in d.items())))
    with _CACHE_LOCK:
        if cache and key in _CACHE:
            return _CACHE[key]
        if backend == "auto":
            eng: Engine = _auto(**d)
        elif backend == "transformers":
            from runtime.engines.hf import TransformersEngine

            eng = TransformersEngine(**d)
        else:
            from runtime.engines.vllm_engine import VLLMEngine

            eng = VLLMEngine(**d)
        if cache:
            _CACHE[key] = eng
        return eng


def _auto(model: str = "default", **kw) -> Engine:
    """The managed vLLM server when it is up or can start here; transformers in-process otherwise."""
    from runtime import serving
    from runtime.errors import FtpilotError

    if serving.available():
        from runtime.engines.vllm_engine import VLLMEngine

        try:
            return VLLMEngine(model, **kw)
        except FtpilotError as e:
            log.warning("vLLM engine unavailable (%s: %s); using transformers in-process", e.code, e.message)
    from runtime.engines.hf import TransformersEngine

    return TransformersEngine(model)


def clear_engines() -> None:
    with _CACHE_LOCK:
        for eng in _CACHE.values():
            eng.close()
        _CACHE.clear()
