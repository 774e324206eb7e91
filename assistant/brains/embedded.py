"""The embedded brain: the bundled model in-process on the CPU, the default with no GPU and no URL.

Tool calls are always valid JSON for the tool's schema: the tool is narrowed from the message and the plan
(`routing.route`), argument values the message or project fixes are pinned, and the model decodes only the
remaining required fields (and, among several candidates, the tool name) under an xgrammar JSON-schema grammar.
After a tool result, it writes a factual summary from the result itself (a 135M model's paraphrase of numbers
is not trustworthy); for conversation it streams the model's own prose.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Iterator

from assistant.brains import BrainUnavailable, TextDelta, ToolCall, TurnEnd, TurnRequest
from assistant.brains.routing import pins_from_text, route

PROSE_SYSTEM = ("You are ftpilot, a helpful assistant for fine-tuning small language models. Answer briefly "
                "in plain words. You can audit datasets, train LoRA models, evaluate and export them.")
MAX_PROSE_TOKENS = 160
MAX_ARG_TOKENS = 160


def _tool_name(schema: dict) -> str:
    return schema["function"]["name"]


class EmbeddedBrain:
    kind = "embedded"

    def __init__(self, model: str = "default"):
        self.model_name = model
        self.model = model
        self.ready = False
        self.last: TurnEnd | None = None
        self._lock = threading.Lock()
        self._grammars: dict[str, object] = {}

    # --- loading ----------------------------------------------------------------------------------------
    def load(self) -> None:
        if self.ready:
            return
        try:
            import torch
            import xgrammar as xgr
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from runtime.models import resolve_model
        except ImportError as e:  # pragma: no cover - install problem
            raise BrainUnavailable(f"the embedded brain needs torch, transformers and xgrammar: {e}") from e
        try:
            ref = resolve_model(self.model_name)
        except Exception as e:  # noqa: BLE001 - becomes a visible brain error
            raise BrainUnavailable(f"cannot load model {self.model_name!r}: {e}") from e
        self.path = ref.path
        self.model = ref.name if ref.source != "bundled" else "SmolLM2-135M-Instruct (bundled)"
        self.tok = AutoTokenizer.from_pretrained(ref.path)
        self.lm = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
        self.lm.eval()
        vocab = getattr(self.lm.config, "vocab_size", None) or len(self.tok)
        self._xgr = xgr
        self._compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(self.tok, vocab_size=vocab))
        self.ready = True

    def describe(self) -> str:
        speed = f", {self.last.tokens_per_s:.1f} tok/s" if self.last and self.last.tokens else ""
        return f"embedded · {self.model} · CPU{speed}"

    # --- generation -------------------------------------------------------------------------------------
    def _prompt_ids(self, messages: list[dict]):
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)

    def _compiled(self, schema: dict):
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def generate_json(self, messages: list[dict], schema: dict, max_new_tokens: int = MAX_ARG_TOKENS) -> tuple[dict, int]:
        """Decode one JSON value under `schema`; returns (value, tokens generated)."""
        import torch
        from xgrammar.contrib.hf import LogitsProcessor

        enc = self._prompt_ids(messages)
        with self._lock, torch.inference_mode():
            out = self.lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                   logits_processor=[LogitsProcessor(self._compiled(schema))],
                                   pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
        new = out[0, enc["input_ids"].shape[1]:]
        text = self.tok.decode(new, skip_special_tokens=True)
        return json.loads(text), int(new.shape[0])

    def generate_text(self, messages: list[dict], max_new_tokens: int = MAX_PROSE_TOKENS) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        enc = self._prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def work():
            try:
                with self._lock, torch.inference_mode():
                    self.lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                                     repetition_penalty=1.15,
                                     pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(e)
                streamer.end()

        t = threading.Thread(target=work, daemon=True)
        t.start()
        yield from streamer
        t.join()
        if errors:
            raise errors[0]

    # --- a turn -----------------------------------------------------------------------------------------
    def stream(self, req: TurnRequest) -> Iterator[TextDelta | TurnEnd]:
        if not self.ready:
            self.load()
        start = time.perf_counter()
        last = req.messages[-1] if req.messages else {"role": "user", "content": ""}
        if last.get("role") == "tool":
            yield from self._after_tool(req, start)
            return
        text = last.get("content") or ""
        by_name = {_tool_name(t): t for t in req.tools}
        forced = req.tool_choice.get("function", {}).get("name") if isinstance(req.tool_choice, dict) else None
        candidates, reason = [], ""
        if req.tool_choice != "none" and by_name:
            if forced in by_name:
                candidates, reason = [forced], "named by the command"
            elif (r := route(text, set(by_name), req.context)) is not None:
                candidates, reason = r.candidates, r.reason
        if candidates:
            yield from self._tool_turn(text, candidates, reason, by_name, req, start)
            return
        yield from self._prose_turn(req, start)

    def _tool_turn(self, text, candidates, reason, by_name, req, start) -> Iterator[TurnEnd]:
        tokens = 0
        if len(candidates) > 1:
            listing = "\n".join(f"- {c}: {by_name[c]['function']['description']}" for c in candidates)
            msgs = [{"role": "system", "content": "Pick the one tool that does what the person asks.\n" + listing},
                    {"role": "user", "content": text}]
            picked, n = self.generate_json(msgs, {"type": "object", "properties": {"tool": {"enum": candidates}},
                                                  "required": ["tool"], "additionalProperties": False}, 24)
            tokens += n
            name = picked["tool"]
            reason += f"; the model picked {name} among {len(candidates)}"
        else:
            name = candidates[0]
        args, n = self.fill_arguments(name, by_name[name], text, req.context.get("prefill", {}).get(name, {}))
        tokens += n
        call = ToolCall(f"call_{uuid.uuid4().hex[:8]}", name, json.dumps(args))
        self.last = TurnEnd("", [call], tokens=tokens, seconds=time.perf_counter() - start, note=reason)
        yield self.last

    def fill_arguments(self, name: str, schema: dict, text: str, prefill: dict,
                       drop: set[str] = frozenset()) -> tuple[dict, int]:
        """Pinned values from the message/project; the model decodes only required fields still unknown."""
        from tools.registry import get_tool

        params = schema["function"]["parameters"]
        model = get_tool(name).input_model
        pins = {k: v for k, v in pins_from_text(text, params, prefill).items() if k not in drop}
        need = [k for k, f in model.model_fields.items() if f.is_required() and k not in pins]
        args = dict(pins)
        if not need:
            return args, 0
        sub = {"type": "object", "properties": {k: params["properties"][k] for k in need},
               "required": need, "additionalProperties": False}
        if "$defs" in params:
            sub["$defs"] = params["$defs"]
        desc = "\n".join(f"- {k}: {params['properties'][k].get('description', '')}" for k in need)
        msgs = [{"role": "system", "content": f"Fill the arguments of the tool {name} as JSON.\n{desc}"},
                {"role": "user", "content": text}]
        filled, n = self.generate_json(msgs, sub)
        args.update(filled)
        return args, n

    def _after_tool(self, req: TurnRequest, start: float) -> Iterator[TextDelta | TurnEnd]:
        """Summarize tool results from the results; on a validation error, retry with the bad fields dropped."""
        results, i = [], len(req.messages) - 1
        while i >= 0 and req.messages[i].get("role") == "tool":
            results.insert(0, req.messages[i])
            i -= 1
        calls = {c["id"]: c for c in (req.messages[i].get("tool_calls") or [])} if i >= 0 else {}
        for res in results:
            body = _loads(res.get("content"))
            call = calls.get(res.get("tool_call_id"))
            err = body.get("error") if isinstance(body, dict) else None
            if err and err.get("code") == "validation_error" and call:
                bad = {f["loc"].split(".")[0] for f in err.get("fields", [])}
                name = call["function"]["name"]
                schema = next((t for t in req.tools if _tool_name(t) == name), None)
                old = _loads(call["function"]["arguments"]) or {}
                if schema is not None and bad:
                    user = next((m.get("content") or "" for m in reversed(req.messages) if m.get("role") == "user"), "")
                    prefill = {k: v for k, v in req.context.get("prefill", {}).get(name, {}).items() if k not in bad}
                    args, n = self.fill_arguments(name, schema, user, prefill, drop=bad)
                    if args != old:
                        c = ToolCall(f"call_{uuid.uuid4().hex[:8]}", name, json.dumps(args))
                        self.last = TurnEnd("", [c], tokens=n, seconds=time.perf_counter() - start,
                                            note=f"retry without the invalid field(s) {sorted(bad)}")
                        yield self.last
                        return
        text = "\n\n".join(summarize_result(calls.get(r.get("tool_call_id"), {}).get("function", {}).get("name", "tool"),
                                            _loads(r.get("content"))) for r in results)
        if (nxt := req.context.get("next_step")):
            text += f"\n\nNext suggested step: **{nxt}** (`{req.context.get('next_slash', '')}`)."
        yield TextDelta(text)
        self.last = TurnEnd(text, [], tokens=0, seconds=time.perf_counter() - start, note="summary from the result")
        yield self.last

    def _prose_turn(self, req: TurnRequest, start: float) -> Iterator[TextDelta | TurnEnd]:
        history = [m for m in req.messages if m.get("role") in ("user", "assistant") and m.get("content")][-6:]
        msgs = [{"role": "system", "content": PROSE_SYSTEM}] + [{"role": m["role"], "content": m["content"]}
                                                                 for m in history]
        parts, first, n = [], None, 0
        for piece in self.generate_text(msgs):
            if not piece:
                continue
            if first is None:
                first = time.perf_counter() - start
            n += 1
            parts.append(piece)
            yield TextDelta(piece)
        content = "".join(parts)
        n_tokens = len(self.tok(content)["input_ids"]) if content else 0
        if (nxt := req.context.get("next_step")):
            tip = (f"\n\n_Next suggested step: **{nxt}** (`{req.context.get('next_slash', '')}`); "
                   "the plan panel and /help list the rest._")
            content += tip
            yield TextDelta(tip)
        self.last = TurnEnd(content, [], tokens=n_tokens, seconds=time.perf_counter() - start, first_token_s=first,
                            note="prose")
        yield self.last


def _loads(text) -> dict | list | None:
    if isinstance(text, (dict, list)):
        return text
    try:
        return json.loads(text or "null")
    except (TypeError, json.JSONDecodeError):
        return {"text": str(text)}


def _short(value, limit: int = 80) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def summarize_result(name: str, body) -> str:
    """A few factual lines from a tool result: its scalar fields and small dicts, errors with their hint."""
    if not isinstance(body, dict):
        return f"`{name}` returned: {_short(body, 300)}"
    if body.get("error"):
        err = body["error"]
        lines = [f"`{name}` failed: {err.get('message', err)}"]
        for f in err.get("fields", [])[:5]:
            lines.append(f"- `{f.get('loc')}`: {f.get('msg')}")
        if err.get("hint"):
            lines.append(f"Hint: {err['hint']}")
        return "\n".join(lines)
    out = body.get("output", body)
    if not isinstance(out, dict):
        return f"`{name}` returned: {_short(out, 300)}"
    lines = [f"`{name}` done."]
    for k, v in list(out.items())[:12]:
        if isinstance(v, (str, int, float, bool)) or v is None:
            lines.append(f"- {k}: {_short(v, 400 if k in ('summary', 'message', 'recommendation', 'error') else 100)}")
        elif isinstance(v, dict) and len(json.dumps(v, default=str)) < 160:
            lines.append(f"- {k}: {_short(v, 160)}")
        elif isinstance(v, list):
            lines.append(f"- {k}: {len(v)} item(s)")
            for item in v[:6]:
                if isinstance(item, dict):
                    head = [str(x) for x in item.values() if isinstance(x, (str, int, float)) and len(str(x)) < 60]
                    msg = next((x for key, x in item.items() if key in ("message", "detail", "reason", "text")
                                and isinstance(x, str)), "")
                    lines.append("  - " + " · ".join(head[:4]) + (f" — {_short(msg, 120)}" if msg and msg not in head else ""))
                elif isinstance(item, (str, int, float)):
                    lines.append(f"  - {_short(item, 120)}")
    return "\n".join(lines)
