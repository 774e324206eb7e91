"""The embedded brain: the bundled model in-process on the CPU, the default with no GPU and no URL.

- Plain requests go to the router (assistant/brains/router.py): the bundled model with ftpilot's own LoRA adapter
  names the tool, or a kind of reply, and the arguments the message states, decoded under a JSON-schema grammar
  (every call is valid); the project fills the rest. When the two best labels are close it asks which one was
  meant. "X and then Y" becomes a short plan of calls, each approved as usual.
- Slash commands and forms stay deterministic: the named tool, with the values read from the message and the
  project (the model decodes only a required value still missing, under the grammar).
- Replies come from facts (assistant/brains/replies.py): tool outputs, the registry, the project. The model's own
  prose is used only for small talk, and kept short.
- Without a router adapter (or when it cannot load) the old keyword table routes, and the brain says so.
The model is the transformers engine's (runtime.engines.get_engine): the app holds one copy of the weights.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from assistant.brains import BrainUnavailable, TextDelta, ToolCall, TurnEnd, TurnRequest
from assistant.brains import replies
from assistant.brains.router import ROUTER_DIR, RouteInput, RouteResult, Router, canonical, decide, regex_route
from assistant.workflow import FEW_SHOT_K

PROSE_SYSTEM = ("You are ftpilot, a helpful assistant for fine-tuning small language models. Answer in one or two "
                "short sentences.")
MAX_PROSE_TOKENS = 48
MAX_ARG_TOKENS = 96
log = logging.getLogger("ftpilot.brain")
# Ask instead of calling when the best label's probability beats the runner-up's by less than this
# (the build report's table shows what each threshold asks and what it saves).
CLARIFY_MARGIN = 0.2
MAX_PLAN_STEPS = 4
CLAUSES = re.compile(r"(?:,\s*|\s+)(?:and then|then|after that|afterwards|and)\s+|;\s+", re.I)
# A step another step of the plan already does: the audit reads the same rows and reports their format and count,
# so "look through X and tell me if anything is wrong" is one audit, not inspect then audit.
COVERED_BY = {"inspect_dataset": "audit_dataset"}


def _tool_name(schema: dict) -> str:
    return schema["function"]["name"]


def _call(name: str, args: dict) -> ToolCall:
    return ToolCall(f"call_{uuid.uuid4().hex[:8]}", name, json.dumps(args))


@dataclass
class Plan:
    """The calls left of a multi-step request, tied to the message that asked for them."""

    origin: tuple[int, str]
    steps: list[tuple[str, dict]]
    total: int


class EmbeddedBrain:
    kind = "embedded"

    def __init__(self, model: str = "default", router_adapter: str | Path | None = ROUTER_DIR, serve: bool = False):
        self.model_name = model
        self.model = model
        self.router_adapter = router_adapter
        self.serve = serve                 # also start the managed vLLM server and route through it when up
        self.router: Router | None = None
        self.lexical = None                # the second opinion beside the adapter (lexical.py), when installed
        self.local: Router | None = None   # the in-process router (answers while vLLM starts, and after it fails)
        self.fallback: str | None = None   # why the keyword table routes instead of the adapter
        self.ready = False
        self.state = "not loaded"
        self.last: TurnEnd | None = None
        self._plan: Plan | None = None

    # --- loading ----------------------------------------------------------------------------------------
    def load(self) -> None:
        if self.ready:
            return
        self.state = "loading the model"
        try:
            from runtime.engines import get_engine
            from runtime.errors import FtpilotError

            self.engine = get_engine(f"transformers:{self.model_name}")
        except ImportError as e:  # pragma: no cover - install problem
            raise BrainUnavailable(f"the embedded brain needs torch, transformers and xgrammar: {e}") from e
        except FtpilotError as e:
            raise BrainUnavailable(f"cannot load model {self.model_name!r}: {e}") from e
        ref = self.engine.ref
        self.model = "SmolLM2-135M-Instruct (bundled)" if ref.source == "bundled" else ref.name
        adapter = Path(self.router_adapter) if self.router_adapter else None
        if adapter is None or not (adapter / "adapter_model.safetensors").exists():
            self.fallback = "no router adapter installed (`ftpilot brain build` makes one)"
        else:
            try:
                self.router = self.local = Router(adapter, self.model_name)
                self.router.load()
            except Exception as e:  # noqa: BLE001 - e.g. an adapter for another base model: say so, keep working
                self.router = self.local = None
                self.fallback = f"the router adapter did not load ({type(e).__name__}: {e})"
            self.lexical = self._load_lexical(adapter) if self.router else None
        self.state = "ready" if self.router else f"ready, keyword routing: {self.fallback}"
        self.ready = True
        if self.serve and self.router is not None:
            import threading

            self.state = "starting vLLM (in-process answers meanwhile)"
            threading.Thread(target=self._start_server, daemon=True, name="brain-vllm").start()

    @staticmethod
    def _load_lexical(adapter: Path):
        """The classifier beside the adapter; without it (or scikit-learn) the adapter decides alone."""
        try:
            from assistant.brains.lexical import LexicalRouter

            return LexicalRouter.load(adapter)
        except Exception as e:  # noqa: BLE001 - a damaged file or a missing package must not stop the brain
            log.warning("lexical classifier not loaded: %s: %s", type(e).__name__, e)
            return None

    def _start_server(self) -> None:
        """Start (or join) the managed vLLM server, serve the router adapter on it, then route through it."""
        try:
            from runtime import serving

            st = serving.start(self.model_name, wait=True)
            name = serving.ensure_adapter("ftpilot-router", str(_data_copy(Path(self.router_adapter))))
            from assistant.brains.router import ServedRouter

            self.router = ServedRouter(st.url, name, self.local.tools, self.local.labels)
            self.state = f"ready (vLLM at {st.url})"
        except Exception as e:  # noqa: BLE001 - any failure leaves the in-process router working, and says so
            self.state = f"ready, in-process: vLLM could not start ({type(e).__name__}: {str(e)[:200]})"

    def describe(self) -> str:
        speed = f", {self.last.tokens_per_s:.1f} tok/s" if self.last and self.last.tokens else ""
        how = ("router adapter via vLLM" if self.router is not None and self.router is not self.local
               else "router adapter" if self.router else "keyword routing")
        starting = " · starting vLLM" if self.state.startswith("starting") else ""
        return f"embedded · {self.model} · {how}{starting} · CPU{speed}"

    def _route(self, items: list[RouteInput]) -> list[RouteResult]:
        """Through vLLM when it serves the router; in-process when it does not (or stops answering mid-turn)."""
        router = self.router
        if router is not None and router is not self.local:
            try:
                return router.route_batch(items)
            except Exception as e:  # noqa: BLE001 - openai.APIError and friends: fall back, say so
                self.router = self.local
                self.state = f"ready, in-process: vLLM stopped answering ({type(e).__name__})"
        return self.local.route_batch(items)

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
        if forced in by_name:
            yield from self._forced(forced, text, req, start)
        elif req.tool_choice == "none" or not by_name:
            yield from self._say(self._chat(text, req), start, "conversation")
        else:
            yield from self._routed(text, req, by_name, start)

    def _end(self, content: str, calls: list[ToolCall], start: float, note: str, tokens: int = 0):
        self.last = TurnEnd(content, calls, tokens=tokens, seconds=time.perf_counter() - start, note=note)
        if content:
            yield TextDelta(content)
        yield self.last

    def _say(self, text: str, start: float, note: str):
        yield from self._end(text, [], start, note)

    # --- plain requests -----------------------------------------------------------------------------------
    def _routed(self, text: str, req: TurnRequest, by_name: dict, start: float):
        from assistant.workflow import Project

        project = Project.model_validate(req.context.get("project") or {})
        tools = self._tools(by_name)
        if replies.is_help_question(text):
            yield from self._say(replies.capabilities(tools), start, "question about ftpilot: from the registry")
            return
        if (plan := self._plan_for(text, req, project, tools)) is not None:
            name, args = plan.steps.pop(0)
            call_args, need = self._complete(name, args, req, text, project)
            if not need:
                self._plan = plan if plan.steps else None
                listing = "\n".join(f"{i + 1}. **{n}**" + (f" with {json.dumps(a)}" if a else "")
                                    for i, (n, a) in enumerate([(name, args)] + plan.steps))
                content = (f"That is {plan.total} steps; each asks for your approval before it runs:\n{listing}\n"
                           f"Starting step 1: **{name}**.")
                yield from self._end(content, [_call(name, call_args)], start, "plan from the router")
                return
        item = RouteInput.for_message(text, project)
        if self.router:
            lexical = self.lexical.route_proba([item])[0] if self.lexical else None
            res = decide(self._route([item])[0], lexical, text, tools)
        else:
            res = regex_route(item, tools)
        via = " (the lexical classifier was surer)" if res.source.endswith("+lexical") else ""
        note = (f"router: {res.name} p={res.p_best:.2f}{via}" + (f", runner-up {res.runner_up} p={res.p_runner_up:.2f}"
                                                                 if res.runner_up else "")
                if self.router else f"keyword routing ({self.fallback}): {res.name}")
        yield from self._decide(res, item, text, req, project, tools, start, note)

    def _decide(self, res: RouteResult, item: RouteInput, text: str, req: TurnRequest, project, tools: dict,
                start: float, note: str):
        if res.error:
            yield from self._say(replies.unclear(item.paths[:1] if item.paths else []), start, f"{note}; {res.error}")
            return
        close = res.runner_up is not None and res.margin < CLARIFY_MARGIN and self.router is not None
        if close and res.name in tools and res.runner_up in tools:
            yield from self._say(replies.clarify(res.name, res.runner_up, tools), start, f"{note}; asked")
            return
        if res.name == "help":
            yield from self._say(replies.capabilities(tools), start, note)
        elif res.name == "project":
            yield from self._say(replies.project_summary(project), start, note)
        elif close and res.name in tools:   # the runner-up is a kind of reply: check the one guess
            yield from self._say(replies.clarify(res.name, None, tools), start, f"{note}; asked")
        elif res.name == "unclear":
            yield from self._say(replies.unclear([p for p in item.paths if p in text][:1]), start, note)
        elif res.name == "chat" or res.name not in tools:
            yield from self._say(self._chat(text, req), start, note)
        else:
            args, need = self._complete(res.name, res.arguments, req, text, project)
            if need:
                yield from self._say(replies.missing(res.name, need), start, f"{note}; missing {need}")
            else:
                yield from self._end("", [_call(res.name, args)], start, note)

    def _complete(self, name: str, routed: dict, req: TurnRequest, text: str, project) -> tuple[dict, list[str]]:
        """The router's arguments over what the project knows; returns (arguments, required fields still missing)."""
        from tools.registry import get_tool

        model = get_tool(name).input_model
        args = {**req.context.get("prefill", {}).get(name, {}), **canonical(get_tool(name), routed)}
        if name == "recommend_strategy" and not args.get("task"):
            args["task"] = text.strip()[:300]   # the person's own words describe the task
        if name == "evaluate":
            args["candidates"] = list(args.get("candidates") or [{"model": project.base_model, "name": "base"}])
            shots = re.search(r"\b(\d+|few)[- ]?shot", text, re.I)
            k = (int(shots.group(1)) if shots.group(1).isdigit() else FEW_SHOT_K) if shots else None
            # "against a 5-shot prompt": that prompt is a candidate too, unless the project's comparison has it
            if k and args.get("train_path") and all(c.get("few_shot") != k for c in args["candidates"]):
                args["candidates"].append({"model": project.base_model, "few_shot": k, "name": f"{k}-shot"})
        need = [f for f, fi in model.model_fields.items() if fi.is_required() and args.get(f) in (None, "", [])]
        return args, need

    def _plan_for(self, text: str, req: TurnRequest, project, tools: dict) -> Plan | None:
        """"prepare X and then train on it": each clause routed; a plan when every clause names a different tool
        with a clear margin."""
        clauses = [c.strip(" ,.") for c in CLAUSES.split(text) if c and c.strip(" ,.")]
        if self.router is None or len(clauses) < 2 or len(clauses) > MAX_PLAN_STEPS:
            return None
        items = [RouteInput.for_message(c, project) for c in clauses]
        lexical = self.lexical.route_proba(items) if self.lexical else [None] * len(items)
        results = [decide(r, p, c, tools) for r, p, c in zip(self._route(items), lexical, clauses)]
        results = [r for r in results if COVERED_BY.get(r.name) not in {x.name for x in results}]
        if len(results) < 2:
            return None
        names = [r.name for r in results]
        if any(r.error or r.name not in tools or r.margin < CLARIFY_MARGIN for r in results) or \
                any(a == b for a, b in zip(names, names[1:])):
            return None
        origin = _last_user(req.messages)
        return Plan(origin, [(r.name, r.arguments) for r in results], len(results))

    # --- slash commands and forms: deterministic ------------------------------------------------------------
    def _forced(self, name: str, text: str, req: TurnRequest, start: float):
        schema = next(t for t in req.tools if _tool_name(t) == name)
        args, need, tokens = self.fill_arguments(name, schema, text, req.context.get("prefill", {}).get(name, {}))
        if need:
            yield from self._say(replies.missing(name, need), start, f"named by the command; missing {need}")
            return
        yield from self._end("", [_call(name, args)], start, "named by the command", tokens)

    def fill_arguments(self, name: str, schema: dict, text: str, prefill: dict,
                       drop: frozenset = frozenset()) -> tuple[dict, list[str], int]:
        """Values read from the message (paths in order, numbers by their words, enum words), then the project's;
        the model decodes only required fields still unknown, under the grammar. Returns (arguments, fields it
        could not fill, tokens generated); output cut at the token cap is a missing field, never a crash."""
        from assistant.brains.routing import pins_from_text
        from runtime.engines import ChatRequest, Sampling
        from tools.registry import get_tool

        params = schema["function"]["parameters"]
        model = get_tool(name).input_model
        args = {k: v for k, v in pins_from_text(text, params, prefill).items() if k not in drop}
        need = [k for k, f in model.model_fields.items() if f.is_required() and k not in args]
        if not need:
            return args, [], 0
        sub = {"type": "object", "properties": {k: params["properties"][k] for k in need}, "required": need,
               "additionalProperties": False}
        if "$defs" in params:
            sub["$defs"] = params["$defs"]
        desc = "\n".join(f"- {k}: {params['properties'][k].get('description', '')}" for k in need)
        msgs = [{"role": "system", "content": f"Fill the arguments of the tool {name} as JSON.\n{desc}"},
                {"role": "user", "content": text}]
        comp = self.engine.generate([ChatRequest(msgs, json_schema=sub)], Sampling(max_new_tokens=MAX_ARG_TOKENS))[0]
        if comp.error or comp.finish_reason != "stop" or not isinstance(comp.parsed, dict):
            return args, need, comp.completion_tokens
        args.update(comp.parsed)
        return args, [], comp.completion_tokens

    # --- after a tool ran -------------------------------------------------------------------------------------
    def _after_tool(self, req: TurnRequest, start: float):
        """Say what each result means; on a validation error of a call this brain made, retry without the bad
        fields; continue a plan while its steps succeed."""
        results, i = [], len(req.messages) - 1
        while i >= 0 and req.messages[i].get("role") == "tool":
            results.insert(0, req.messages[i])
            i -= 1
        calls = {c["id"]: c for c in (req.messages[i].get("tool_calls") or [])} if i >= 0 else {}
        texts, all_ok, last_name = [], True, None
        for res in results:
            call = calls.get(res.get("tool_call_id"), {}).get("function", {})
            name, body = call.get("name", "tool"), replies.result_body(res.get("content"))
            args = _loads(call.get("arguments"))
            err = body.get("error")
            if err and err.get("code") == "validation_error" and (retry := self._retry(name, args, err, req)):
                yield from self._end("", [retry], start, "retry without the invalid field(s)")
                return
            all_ok &= not err
            last_name = name
            texts.append(replies.summarize(name, body, args))
        text = "\n\n".join(texts)
        plan = self._plan
        if plan is not None and plan.origin == _last_user(req.messages) and plan.steps:
            step = plan.total - len(plan.steps) + 1
            if all_ok:
                from assistant.workflow import Project

                name, args = plan.steps.pop(0)
                user = plan.origin[1]
                call_args, need = self._complete(name, args, req, user,
                                                 Project.model_validate(req.context.get("project") or {}))
                if not need:
                    self._plan = plan if plan.steps else None
                    content = f"{text}\n\nStep {step} of {plan.total}: **{name}**."
                    yield from self._end(content, [_call(name, call_args)], start, "plan continues")
                    return
                text += f"\n\nThe plan stops before step {step} ({name}): " + replies.missing(name, need)
            else:
                text += f"\n\nThe plan stops here: step {step - 1} did not succeed."
            self._plan = None
        elif (nxt := replies.next_step_text(last_name, all_ok, req.context)):
            text += f"\n\n{nxt}"
        yield from self._say(text, start, "summary from the result")

    def _retry(self, name: str, old: dict, err: dict, req: TurnRequest) -> ToolCall | None:
        schema = next((t for t in req.tools if _tool_name(t) == name), None)
        bad = {f["loc"].split(".")[0] for f in err.get("fields", [])}
        if schema is None or not bad:
            return None
        user = _last_user(req.messages)[1]
        prefill = {k: v for k, v in req.context.get("prefill", {}).get(name, {}).items() if k not in bad}
        args, need, _ = self.fill_arguments(name, schema, user, prefill, drop=frozenset(bad))
        return _call(name, args) if not need and args != old else None

    # --- conversation -------------------------------------------------------------------------------------------
    def _chat(self, text: str, req: TurnRequest) -> str:
        """Greetings, thanks and concepts from fixed words; anything else one or two short sentences of the
        model's own (nothing factual is asked there), then the plan's next step."""
        answer = replies.small_talk(text) or replies.glossary(text) or self._prose(req)
        tip = replies.next_step_text(None, False, req.context)
        return answer + (f"\n\n{tip}" if tip else "")

    def _prose(self, req: TurnRequest) -> str:
        from runtime.engines import ChatRequest, Sampling

        history = [m for m in req.messages if m.get("role") in ("user", "assistant") and m.get("content")][-4:]
        msgs = [{"role": "system", "content": PROSE_SYSTEM}] + [{"role": m["role"], "content": m["content"]}
                                                                 for m in history]
        comp = self.engine.generate([ChatRequest(msgs)], Sampling(max_new_tokens=MAX_PROSE_TOKENS))[0]
        text = comp.text.strip()
        if comp.finish_reason == "length" and "." in text:
            text = text[: text.rfind(".") + 1]   # end on a whole sentence
        return text or "I'm here to help you fine-tune a model; /help lists what I can do."

    def _tools(self, by_name: dict) -> dict:
        from tools.registry import all_tools

        return {n: t for n, t in all_tools().items() if n in by_name}


def _data_copy(adapter: Path) -> Path:
    """The shipped adapter copied into the data dir once (per content), where the server may read it whatever
    the workspace root is."""
    import shutil

    from runtime.paths import data_subdir, sha256_file

    dest = data_subdir("brain") / f"router-{sha256_file(adapter / 'adapter_model.safetensors')[:12]}"
    if not (dest / "adapter_config.json").exists():
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(adapter, tmp, ignore=shutil.ignore_patterns("report.*", "*.md", "*.sh"))
        tmp.replace(dest)
    return dest


def _last_user(messages: list[dict]) -> tuple[int, str]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i, messages[i].get("content") or ""
    return -1, ""


def _loads(text) -> dict:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text or "{}")
    except (TypeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
