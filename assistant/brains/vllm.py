"""The vllm brain: the openai brain against `vllm serve`, either at a URL or started here on a GPU with
`vllm serve MODEL --enable-auto-tool-choice --tool-call-parser P` (model and parser from settings)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from assistant.brains import BrainUnavailable
from assistant.brains.openai import OpenAIBrain


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model: str, port: int, tool_parser: str) -> list[str]:
    exe = shutil.which("vllm") or str(Path(sys.executable).with_name("vllm"))
    return [exe, "serve", model, "--port", str(port), "--host", "127.0.0.1",
            "--enable-auto-tool-choice", "--tool-call-parser", tool_parser]


class VLLMBrain(OpenAIBrain):
    kind = "vllm"

    def __init__(self, url: str | None = None, model: str | None = None, tool_parser: str = "hermes",
                 start_timeout: float = 900.0):
        self.proc: subprocess.Popen | None = None
        self.tool_parser = tool_parser
        self.start_timeout = start_timeout
        self.served_model = model
        self.log_path: Path | None = None
        super().__init__(url or "http://127.0.0.1:0", model)
        self.self_started = url is None

    def load(self) -> None:
        if self.self_started and self.proc is None:
            self._start()
        super().load()

    def _start(self) -> None:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise BrainUnavailable("vllm is not installed: pip install -e '.[gpu]' on a GPU machine, "
                                   "or set brain_url to a running `vllm serve`")
        if not shutil.which("nvidia-smi"):
            raise BrainUnavailable("no GPU here for a self-started vllm brain; use brain=embedded or brain_url")
        from runtime.models import resolve_model
        from runtime.settings import get_settings

        model = resolve_model(self.served_model or "default").path
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}/v1"
        self.log_path = get_settings().data_dir / "vllm-brain.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(serve_command(model, port, self.tool_parser), stdout=log,
                                     stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)
        import httpx

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrainUnavailable(f"vllm serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    self.model = model
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.close()
        raise BrainUnavailable(f"vllm serve did not become healthy in {self.start_timeout:.0f} s; see {self.log_path}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
