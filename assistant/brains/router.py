"""The router: the bundled model with ftpilot's own LoRA adapter reads a plain request and names one tool (or a
kind of reply) and its arguments. `ftpilot brain build` trains the adapter (assistant/brain_build).

A row: system = one line of project state, user = the person's message, answer = the call envelope
`{"name": N, "arguments": {...}}` holding only what the message states (the brain fills the rest from the
project). Decoding runs on the transformers engine's loaded model (one copy of the weights in the app):
  1. every label is scored, log p(name + '",' | prompt + '{"name": "'), in one batched pass over the prompt's
     cache; a softmax over labels gives the best two and their margin (a small margin: the brain asks);
  2. the arguments decode greedily under an xgrammar grammar built from the tool's schema: only the fields a
     message can state, path fields limited to the paths the message or the project names, job ids to known
     ids, so every call parses and validates. Output cut at the token cap is an error value, never a crash.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from assistant.brains.routing import NUMBER

# Replies that are not tool calls: "what can you do", "what is in my project", conversation, and requests too
# vague to map (the brain answers those with a question).
REPLY_LABELS = ("help", "project", "chat", "unclear")
# "go ahead", "yes", "next": the project's suggested next step. The router names this label and resolves it from the
# project line itself (a 135M model copies a tool name out of its context unreliably; a label it learns well).
NEXT_STEP = "next_step"
# The arguments a message can state, per tool, in the order the router writes them.
ROUTABLE: dict[str, tuple[str, ...]] = {
    "audit_dataset": ("path", "eval_path"),
    "clean_dataset": ("path", "out_path", "eval_path"),
    "split_dataset": ("path", "eval_fraction", "eval_rows"),
    "inspect_dataset": ("path", "examples"),
    "create_sample_dataset": ("task", "train_rows"),
    "generate_synthetic": ("seeds_path", "method", "n", "out_path"),
    "recommend_strategy": ("train_path", "eval_path"),
    "plan_training": ("train_path", "method", "max_steps", "batch_size"),
    "train_sft": ("train_path", "eval_path", "method", "max_steps", "epochs", "learning_rate", "lora_r",
                  "batch_size"),
    "train_dpo": ("train_path", "eval_path", "method", "beta", "max_steps", "learning_rate"),
    "distill": ("train_path", "mode", "max_steps"),
    "evaluate": ("eval_path", "limit"),
    "export_model": ("job_id",),
    "list_runs": ("status", "limit"),
    "run_status": ("job_id",),
    "cancel_run": ("job_id",),
    "resume_run": ("job_id",),
    "probe_hardware": (),
}
# The field a count ("50 more", "the first 5 rows") fills, per tool.
COUNT_FIELD = {"generate_synthetic": "n", "inspect_dataset": "examples", "evaluate": "limit", "list_runs": "limit",
               "split_dataset": "eval_rows", "create_sample_dataset": "train_rows"}
# Enum values and the words people use for them.
SURFACES = {
    ("train_sft", "method"): {"lora": ["LoRA", "lora"], "qlora": ["QLoRA", "qlora", "4-bit qlora"],
                              "full": ["full fine-tuning", "full finetune", "full fine-tune"]},
    ("plan_training", "method"): {"lora": ["LoRA", "lora"], "qlora": ["QLoRA", "qlora"], "full": ["full fine-tuning"]},
    ("train_dpo", "method"): {"dpo": ["DPO", "dpo"], "kto": ["KTO", "kto"], "orpo": ["ORPO", "orpo"]},
    ("generate_synthetic", "method"): {"self_instruct": ["self-instruct", "Self-Instruct"],
                                       "evol_instruct": ["evol-instruct", "Evol-Instruct"]},
    ("distill", "mode"): {"logit": ["logit", "logit-level"], "gkd": ["GKD", "on-policy gkd"],
                          "sequence": ["sequence-level", "sequence"]},
    ("list_runs", "status"): {"running": ["running", "active"], "failed": ["failed", "crashed", "errored"],
                              "succeeded": ["succeeded", "finished", "completed"],
                              "cancelled": ["cancelled", "canceled", "stopped"], "queued": ["queued", "waiting"]},
    ("create_sample_dataset", "task"): {"tickets": ["ticket", "support ticket", "tickets"],
                                        "tickets_preferences": ["preference", "preference-pair", "ticket preference"]},
}
# Verb phrases the reader also knows, which the data's templates ("show the {status} runs") cannot use.
_QUANTIZED = ["4-bit", "4bit", "quantized", "quantised", "4-bit lora"]
_ALL_WEIGHTS = ["full fine-tune", "full finetune", "full-parameter", "full parameter", "all the weights", "all weights"]
READ_ALSO = {("list_runs", "status"): {"failed": ["blew up", "died", "broke", "failures"],
                                       "running": ["in progress", "ongoing", "still going"],
                                       "succeeded": ["successful"], "cancelled": ["killed", "aborted"],
                                       "queued": ["pending"]},
             ("train_sft", "method"): {"qlora": _QUANTIZED, "full": _ALL_WEIGHTS},
             ("plan_training", "method"): {"qlora": _QUANTIZED, "full": _ALL_WEIGHTS},
             ("distill", "mode"): {"gkd": ["on-policy"], "sequence": ["seq-level"]},
             ("generate_synthetic", "method"): {"self_instruct": ["self instruct"],
                                                "evol_instruct": ["evol instruct"]}}
ROUTER_DIR = Path(__file__).resolve().parent / "router_model"   # the shipped adapter, its card and report
PREFIX = '{"name": "'
ARGS_KEY = ' "arguments":'
MAX_ARG_TOKENS = 64
SCORE_CHUNK = 96          # candidate sequences per scoring pass (bounds the logits tensor)
EXPAND = 3                # labels are scored in full only for the most likely first name tokens


def is_path_field(name: str) -> bool:
    return name == "path" or name.endswith("_path")


def is_job_field(name: str) -> bool:
    return name == "job_id"


def routable_fields(tool) -> tuple[str, ...]:
    """The fields of a registered tool the router may fill: the table above, else its path and job fields."""
    fields = tool.input_model.model_fields
    if tool.name in ROUTABLE:
        return tuple(f for f in ROUTABLE[tool.name] if f in fields)
    return tuple(f for f in fields if is_path_field(f) or is_job_field(f))


def labels(tools: dict) -> list[str]:
    """Tool names, then the reply labels: the router's whole vocabulary of decisions."""
    return sorted(tools) + list(REPLY_LABELS) + [NEXT_STEP]


def is_label(name: str, tools: dict) -> bool:
    return name in tools or name in REPLY_LABELS or name == NEXT_STEP


def project_line(project) -> str:
    """The router's system line: what the project holds, in few tokens. Paths and run ids stay out of it (the
    router writes only values the message states; the project's own values reach it as allowed values)."""
    parts = []
    data = [role for role in ("train", "eval", "preferences") if project.latest_dataset(role)]
    parts.append(("data: " + ", ".join(data)) if data else "no data yet")
    if (run := project.latest_run()):
        parts.append(f"latest run {run.get('tool')} {run.get('status')}")
    parts.append(f"next step {project.next_step().tool}")
    return "Project: " + "; ".join(parts)


def project_values(project) -> tuple[list[str], list[str]]:
    """Paths and run ids the project knows (allowed argument values besides those in the message)."""
    paths = [d["path"] for d in project.datasets if d.get("path")]
    return list(dict.fromkeys(paths)), [r["job_id"] for r in project.runs if r.get("job_id")]


def canonical(tool, arguments: dict) -> dict:
    """Arguments as a call means them: a value equal to the field's default says nothing ("a LoRA run" is the
    default method), so it is dropped; targets and predictions are compared in this form."""
    if tool is None:
        return {}
    fields = tool.input_model.model_fields
    return {k: v for k, v in arguments.items() if k not in fields or fields[k].is_required()
            or fields[k].default != v}


def call_text(name: str, arguments: dict, surface: dict | None = None) -> str:
    """The envelope as the router writes it; `surface` keeps numbers as the person wrote them ("2e-4")."""
    parts = []
    for k, v in arguments.items():
        raw = (surface or {}).get(k)
        parts.append(f'"{k}": {raw if raw is not None else json.dumps(v)}')
    return f'{PREFIX}{name}",{ARGS_KEY} {{' + ", ".join(parts) + "}}"


# --- inputs and results -----------------------------------------------------------------------------------

@dataclass
class RouteInput:
    message: str
    context: str = "Project: no data yet; next step audit_dataset"
    paths: list[str] = field(default_factory=list)     # allowed path values (message + project)
    job_ids: list[str] = field(default_factory=list)   # allowed run ids (message + project)

    @classmethod
    def for_message(cls, message: str, project=None) -> "RouteInput":
        from assistant.workflow import Project, mentioned_job_ids, mentioned_paths

        project = project or Project()
        paths, jobs = project_values(project)
        return cls(message, project_line(project), list(dict.fromkeys(mentioned_paths(message) + paths)),
                   list(dict.fromkeys(mentioned_job_ids(message) + jobs)))


@dataclass
class RouteResult:
    name: str
    arguments: dict
    p_best: float = 1.0
    runner_up: str | None = None
    p_runner_up: float = 0.0
    seconds: float = 0.0
    source: str = "adapter"      # adapter | base | regex
    error: str | None = None     # e.g. arguments cut off at the token cap
    text: str = ""

    @property
    def margin(self) -> float:
        return self.p_best - self.p_runner_up


# --- prompts ----------------------------------------------------------------------------------------------

def adapter_messages(item: RouteInput) -> list[dict]:
    return [{"role": "system", "content": item.context}, {"role": "user", "content": item.message}]


def base_messages(item: RouteInput, tools: dict) -> list[dict]:
    """The base model has no adapter: it gets the tool list (shared by every row, so it is computed once)."""
    lines = [f"- {n}: {t.description}" for n, t in sorted(tools.items())]
    lines += ["- help: the person asks what ftpilot can do", "- project: the person asks about the project state",
              "- chat: conversation, thanks, general questions", "- unclear: the request is too vague to map",
              f"- {NEXT_STEP}: the person agrees to the project's next step (go ahead, yes, continue)"]
    system = ("You route a request to one ftpilot tool. Answer with JSON {\"name\": tool, \"arguments\": {...}} "
              "holding only the arguments the request states.\nTools:\n" + "\n".join(lines))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{item.context}\nRequest: {item.message}"}]


# --- the router -------------------------------------------------------------------------------------------

class Router:
    """Routes messages with the bundled model: with the router adapter (`adapter`) or, as a baseline, the base
    model prompted with the tool list (`adapter=None`)."""

    def __init__(self, adapter: str | Path | None, model: str = "default", tools: dict | None = None,
                 label_names: list[str] | None = None):
        from tools.registry import all_tools

        self.adapter = str(adapter) if adapter else None
        self.model = model
        self.tools = tools if tools is not None else all_tools()
        self.labels = [n for n in (label_names or labels(self.tools)) if is_label(n, self.tools)]
        self._engine = None
        self._compiler = None
        self._grammars: dict[str, object] = {}
        self._shared: _Batch | None = None    # the base prompt's tool list, computed once

    @property
    def source(self) -> str:
        return "adapter" if self.adapter else "base"

    def load(self) -> None:
        if self._engine is not None:
            return
        import xgrammar as xgr

        from runtime.engines import get_engine

        self._engine = get_engine(f"transformers:{self.model}")
        tok = self._engine.tokenizer
        with self._engine.hold(self.adapter):   # loads the adapter once
            pass
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=self._engine.vocab_size)
        self._compiler = xgr.GrammarCompiler(info)
        self._label_ids = [tok(n + '",', add_special_tokens=False)["input_ids"] for n in self.labels]
        self._args_ids = tok(ARGS_KEY, add_special_tokens=False)["input_ids"]

    def messages(self, item: RouteInput) -> list[dict]:
        return adapter_messages(item) if self.adapter else base_messages(item, self.tools)

    def route(self, item: RouteInput) -> RouteResult:
        return self.route_batch([item])[0]

    def route_batch(self, items: list[RouteInput], batch_size: int = 16) -> list[RouteResult]:
        self.load()
        out: list[RouteResult] = []
        for i in range(0, len(items), batch_size):
            out += self._route_chunk(items[i:i + batch_size])
        return out

    # --- one batch -------------------------------------------------------------------------------------
    def _route_chunk(self, items: list[RouteInput]) -> list[RouteResult]:
        import torch

        start = time.perf_counter()
        eng = self._engine
        tok = eng.tokenizer
        prompts = [tok(eng.prompt_text(self.messages(it)) + PREFIX, add_special_tokens=False)["input_ids"]
                   for it in items]
        with eng.hold(self.adapter) as lm:
            batch, shared = self._start_batch(lm, prompts)
            first = torch.log_softmax(batch.append([p[shared:] for p in prompts]), -1)
            probs = torch.softmax(self._score(batch, first), -1)
            ranked = [self._ranked(probs[b], it) for b, it in enumerate(items)]
            said = [self.labels[int(probs[b].argmax())] for b in range(len(items))]   # the label as written
            schemas = [self.args_schema(r[0][0], it) for r, it in zip(ranked, items)]
            last = batch.append([self._label_ids[self.labels.index(n)] + self._args_ids for n in said])
            texts, errors = self._decode(batch, last, [self._grammar(s) for s in schemas])
        seconds = (time.perf_counter() - start) / len(items)
        results = []
        for b, (ranks, text, err) in enumerate(zip(ranked, texts, errors)):
            args: dict = {}
            if err is None:
                try:
                    args = json.loads(PREFIX + said[b] + '",' + ARGS_KEY + text)["arguments"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    err = f"the arguments did not parse: {e}"
            (name, p), (runner, p2) = ranks[0], ranks[1] if len(ranks) > 1 else (None, 0.0)
            results.append(RouteResult(name, args, p, runner, p2, seconds, self.source, err, text))
        return results

    def _ranked(self, probs, item: RouteInput) -> list[tuple[str, float]]:
        """Decisions by probability, `next_step` resolved to the project's next tool (its probability added to that
        tool's when the model also named it)."""
        total: dict[str, float] = {}
        for j, p in enumerate(probs.tolist()):
            name = resolve_label(self.labels[j], item)
            total[name] = total.get(name, 0.0) + p
        return sorted(total.items(), key=lambda kv: -kv[1])[:2]

    def _start_batch(self, lm, prompts: list[list[int]]) -> tuple["_Batch", int]:
        """A batch holding the prompt start every row shares (the base prompt's tool list), computed once per
        router and copied per batch; returns it and the shared length."""
        tok = self._engine.tokenizer
        if self.adapter or not prompts:
            return _Batch(lm, tok.pad_token_id), 0
        system = self.messages(RouteInput(""))[:1]
        ids = tok(tok.apply_chat_template(system, tokenize=False), add_special_tokens=False)["input_ids"]
        if not all(p[:len(ids)] == ids and len(p) > len(ids) for p in prompts):
            return _Batch(lm, tok.pad_token_id), 0
        if self._shared is None:
            self._shared = _Batch(lm, tok.pad_token_id)
            self._shared.append([ids])
        batch = self._shared.select([0] * len(prompts))
        batch.lm = lm   # the engine may have wrapped its model since (PEFT): use the one held now
        return batch, len(ids)

    def _score(self, batch: "_Batch", first):
        """Log-probability of each label after the prompt, shape (rows, labels). A label is p(first token) times
        p(rest | first); the rest is computed only for labels whose first token is among the row's EXPAND most
        likely first tokens (a few sequences instead of every label); the others keep p(first token), an upper
        bound already below those."""
        import torch

        rows = first.shape[0]
        firsts = torch.tensor([ids[0] for ids in self._label_ids])
        scores = first[:, firsts].clone()
        todo = []
        for b in range(rows):
            top = []
            for j in scores[b].argsort(descending=True).tolist():
                if self._label_ids[j][0] not in top:
                    top.append(self._label_ids[j][0])
                if len(top) == EXPAND:
                    break
            todo += [(b, j) for j in range(len(self.labels)) if self._label_ids[j][0] in top]
        for c in range(0, len(todo), SCORE_CHUNK):
            part = todo[c:c + SCORE_CHUNK]
            sub = batch.select([b for b, _ in part])
            seqs = [self._label_ids[j] for _, j in part]
            logp = torch.log_softmax(sub.append(seqs, every=True), -1)
            for i, ((b, j), ids) in enumerate(zip(part, seqs)):
                scores[b, j] += sum(logp[i, t - 1, ids[t]] for t in range(1, len(ids)))
        return scores

    def _decode(self, batch: "_Batch", logits, grammars: list) -> tuple[list[str], list[str | None]]:
        """Greedy decoding under one grammar per row; a lone row also takes forced tokens without asking the
        model (the grammar leaves one choice), then feeds them in one pass."""
        import xgrammar as xgr

        tok = self._engine.tokenizer
        matchers = [xgr.GrammarMatcher(g) for g in grammars]
        rows = len(matchers)
        mask = xgr.allocate_token_bitmask(rows, self._engine.vocab_size)
        out: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        for _ in range(MAX_ARG_TOKENS):
            logits = logits.float()[:, : self._engine.vocab_size].clone()
            for i, m in enumerate(matchers):
                if not done[i]:
                    m.fill_next_token_bitmask(mask, i)
            xgr.apply_token_bitmask_inplace(logits, mask)
            picks = logits.argmax(-1).tolist()
            segs: list[list[int]] = []
            for i, m in enumerate(matchers):
                seg = []
                if not done[i]:
                    seg = [picks[i]]
                    m.accept_token(picks[i])
                    while rows == 1 and not m.is_completed():
                        m.fill_next_token_bitmask(mask, 0)
                        forced = _only_token(mask[0])
                        if forced is None:
                            break
                        m.accept_token(forced)
                        seg.append(forced)
                    out[i] += seg
                    done[i] = m.is_completed()
                segs.append(seg)
            if all(done):
                break
            logits = batch.append(segs)
        texts = [tok.decode(ids, skip_special_tokens=True) for ids in out]
        errors = [None if d else f"cut off after {MAX_ARG_TOKENS} tokens" for d in done]
        return texts, errors

    # --- grammars ---------------------------------------------------------------------------------------
    def args_schema(self, name: str, item: RouteInput) -> dict:
        return args_schema(self.tools, name, item)

    def _grammar(self, schema: dict):
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            body = xgr.Grammar.from_json_schema(key, any_whitespace=False, separators=(", ", ": "))
            g = xgr.Grammar.concat(xgr.Grammar.from_ebnf('root ::= " "'), body, xgr.Grammar.from_ebnf('root ::= "}"'))
            self._grammars[key] = self._compiler.compile_grammar(g)
        return self._grammars[key]


def args_schema(tools: dict, name: str, item: RouteInput) -> dict:
    """The arguments object the router may write for `name` on this message: the fields a message can state,
    paths limited to the paths the message or project names, run ids to known ids."""
    props: dict = {}
    defs: dict = {}
    if name in tools:
        from tools.registry import strict_schema

        params = strict_schema(tools[name].input_model)
        defs = params.get("$defs", {})
        for f in routable_fields(tools[name]):
            if is_path_field(f):
                if item.paths:
                    props[f] = {"type": "string", "enum": item.paths}
            elif is_job_field(f):
                if item.job_ids:
                    props[f] = {"type": "string", "enum": item.job_ids}
            else:
                props[f] = _non_null(params["properties"][f])
    schema = {"type": "object", "properties": props, "required": [], "additionalProperties": False}
    if defs and "$ref" in json.dumps(props):
        schema["$defs"] = defs
    return schema


def _non_null(prop: dict) -> dict:
    """A strict schema's optional field is anyOf [X, null]: the router writes X or leaves the field out."""
    if "anyOf" in prop:
        kept = [p for p in prop["anyOf"] if p.get("type") != "null"]
        if len(kept) == 1:
            return {k: v for k, v in kept[0].items() if k != "description"}
    return {k: v for k, v in prop.items() if k != "description"}


def _only_token(mask_row) -> int | None:
    """The single token a grammar bitmask allows, or None when it allows several."""
    import torch

    words = torch.nonzero(mask_row).flatten()
    if len(words) != 1:
        return None
    w = int(words[0])
    bits = [b for b in range(32) if (int(mask_row[w]) >> b) & 1]
    return w * 32 + bits[0] if len(bits) == 1 else None


class _Batch:
    """Rows that grow segment by segment over one KV cache. Segments are right-padded; padding stays masked and
    positions count real tokens only, so rows of different lengths share every forward pass."""

    def __init__(self, lm, pad_id: int):
        self.lm, self.pad = lm, pad_id or 0
        self.cache = None
        self.mask = None      # (rows, seen) attention mask
        self.pos = None       # (rows,) next position of each row

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def append(self, segs: list[list[int]], every: bool = False):
        """Feed one segment per row; returns the logits at each row's last new token (rows, vocab), or at
        every new position (rows, length, vocab) with `every`."""
        import torch

        width = max(1, max(len(s) for s in segs))
        ids = torch.tensor([s + [self.pad] * (width - len(s)) for s in segs])
        new = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in segs])
        if self.mask is None:
            self.pos = torch.zeros(len(segs), dtype=torch.long)
            self.mask = new[:, :0]
        positions = self.pos[:, None] + (new.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, new], -1)
        # The decoder alone, then the vocabulary projection only where logits are needed (a prompt's last token),
        # not at every position: for this model the projection is a fifth of the compute. LoRA layers sit inside
        # the decoder (PEFT injects them in place), so an active or disabled adapter applies here as well.
        causal = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        out = causal.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                           past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.pos = self.pos + new.sum(-1)
        hidden = out.last_hidden_state
        if not every:
            hidden = hidden[torch.arange(len(segs)), (new.sum(-1) - 1).clamp(min=0)]
        return causal.lm_head(hidden)

    def select(self, rows: list[int]) -> "_Batch":
        """A copy holding `rows`, in that order, repeats allowed (the original is untouched)."""
        import copy

        sub = _Batch(self.lm, self.pad)
        sub.cache = copy.deepcopy(self.cache)
        sub.cache.batch_select_indices(rows)
        sub.mask, sub.pos = self.mask[rows], self.pos[rows]
        return sub


# --- the same router through a served model (the managed vLLM server) -------------------------------------------

class ServedRouter:
    """The router adapter served per request by an OpenAI-compatible server (the managed vLLM server). The
    envelope decodes under `response_format` json_schema, which vLLM enforces (its named tool_choice does not
    constrain arguments, docs/FACTS.md): one branch per label, each with that label's arguments. The margin is
    read from the returned logprobs: at each token of the name, the chosen token against the best alternative
    that still spells another label (normalised over those), the smallest such margin."""

    source = "served"

    def __init__(self, base_url: str, model: str, tools: dict, label_names: list[str], timeout: float = 60.0):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key="not-needed", timeout=timeout, max_retries=0)
        self.model, self.tools = model, tools
        self.labels = [n for n in label_names if is_label(n, tools)]

    def envelope_schema(self, item: RouteInput) -> dict:
        return {"anyOf": [{"type": "object", "properties": {"name": {"const": n},
                                                             "arguments": args_schema(self.tools, n, item)},
                           "required": ["name", "arguments"], "additionalProperties": False} for n in self.labels]}

    def route(self, item: RouteInput) -> RouteResult:
        start = time.perf_counter()
        r = self.client.chat.completions.create(
            model=self.model, messages=adapter_messages(item), temperature=0, max_tokens=MAX_ARG_TOKENS + 16,
            logprobs=True, top_logprobs=5,
            response_format={"type": "json_schema", "json_schema": {"name": "call", "strict": True,
                                                                    "schema": self.envelope_schema(item)}})
        choice = r.choices[0]
        text = choice.message.content or ""
        seconds = time.perf_counter() - start
        try:
            body = json.loads(text)
            name, args = body["name"], body.get("arguments") or {}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            cut = "cut off" if choice.finish_reason == "length" else "did not parse"
            return RouteResult("unclear", {}, 0.0, seconds=seconds, source=self.source, text=text,
                               error=f"the call {cut}: {e}")
        p, runner, p2 = self._margin(name, text, choice.logprobs.content if choice.logprobs else None)
        name, runner = resolve_label(name, item), runner and resolve_label(runner, item)
        if runner == name:   # next_step and the next step's own name: one decision, as Router._ranked adds them
            p, runner, p2 = p + p2, None, 0.0
        return RouteResult(name, args, p, runner, p2, seconds, self.source, text=text)

    def route_batch(self, items: list[RouteInput], batch_size: int = 16) -> list[RouteResult]:
        """Concurrent requests: the server batches them."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=batch_size) as pool:
            return list(pool.map(self.route, items))

    def _margin(self, name: str, text: str, tokens) -> tuple[float, str | None, float]:
        """(p of the chosen label, the runner-up label, its p) from per-token logprobs of the name."""
        start = text.find(f'"{name}"', text.find('"name"')) + 1
        if not tokens or start <= 0:
            return 1.0, None, 0.0
        p_path, runner, p_runner, pos = 1.0, None, 0.0, 0
        for t in tokens:
            if pos >= start + len(name):
                break
            end = pos + len(t.token)
            if end > start:   # this token writes part of the name (maybe after the opening quote)
                lead, head = text[pos:start] if pos < start else "", text[start:pos] if pos > start else ""
                rivals: dict[str, float] = {}
                for alt in t.top_logprobs or []:
                    if alt.token == t.token or not alt.token.startswith(lead):
                        continue
                    spelled = head + alt.token[len(lead):]
                    other = next((lab for lab in self.labels if lab != name and spelled and (
                        (lab + '"').startswith(spelled) or spelled.startswith(lab + '"'))), None)
                    if other:
                        rivals[other] = max(rivals.get(other, 0.0), math.exp(alt.logprob))
                p_tok = math.exp(t.logprob)
                total = p_tok + sum(rivals.values())
                if rivals:
                    other, p_other = max(rivals.items(), key=lambda kv: kv[1])
                    if p_path * p_other / total > p_runner:
                        runner, p_runner = other, p_path * p_other / total
                p_path *= p_tok / total
            pos = end
        return p_path, runner, p_runner


# --- the keyword table, as a measured baseline and fallback ------------------------------------------------

def regex_route(item: RouteInput, tools: dict) -> RouteResult:
    """Today's keyword table (`routing.route`) and its pins, restricted to the fields the router may fill."""
    from assistant.brains.routing import pins_from_text, route
    from tools.registry import strict_schema

    start = time.perf_counter()
    r = route(item.message, set(tools), {"next_tool": _next_tool(item.context)})
    if r is None:
        return RouteResult("chat", {}, seconds=time.perf_counter() - start, source="regex")
    name = r.candidates[0]
    allowed = routable_fields(tools[name])
    pins = pins_from_text(item.message, strict_schema(tools[name].input_model))
    args = {k: pins[k] for k in allowed if k in pins}
    return RouteResult(name, args, 1.0 / len(r.candidates), r.candidates[1] if len(r.candidates) > 1 else None,
                       seconds=time.perf_counter() - start, source="regex")


def combine(routed: RouteResult, lexical: dict[str, float] | None, tools: dict) -> RouteResult:
    """The brain's decision: the router's call, unless the lexical classifier (`lexical.py`) prefers another label
    by more than the router's own label margin, or the router's arguments were cut off; then the classifier's label
    with the router's arguments that fit it (`stated_values` fills the rest). The two are trained on the same rows
    and err on different requests; neither threshold nor weight is tuned. The build report measures each alone."""
    lexical = {k: v for k, v in (lexical or {}).items() if k in tools or k in REPLY_LABELS}
    if not lexical:
        return routed
    own = lexical_call(lexical)   # its margin is its own, not a tie with the router's same label
    lead = own.p_best - lexical.get(routed.name, 0.0)
    if routed.error is None and (own.name == routed.name or lead <= routed.margin):
        return routed
    # the router's values that fit the new tool, less its paths: a path's role depends on the tool (the one path
    # of `evaluate` is its eval set, of `train_sft` its training set), so `stated_values` places them again
    fields = routable_fields(tools[own.name]) if own.name in tools and not routed.error else ()   # cut off: none kept
    kept = {k: v for k, v in routed.arguments.items()
            if k in fields and (own.name == routed.name or not is_path_field(k))}
    return replace(own, arguments=kept, seconds=routed.seconds, source=f"{routed.source}+lexical", text=routed.text)


def lexical_call(proba: dict[str, float]) -> RouteResult:
    """The lexical classifier's own call: its best label without arguments, with its runner-up."""
    ranked = sorted(proba.items(), key=lambda kv: -kv[1])
    second, p_second = ranked[1] if len(ranked) > 1 else (None, 0.0)
    return RouteResult(ranked[0][0], {}, ranked[0][1], second, p_second, source="lexical")


def decide(routed: RouteResult, lexical: dict[str, float] | None, message: str, tools: dict) -> RouteResult:
    """The brain's decision on a plain request, and what the build report's *brain* column measures: the router's
    call or the lexical classifier's label where it is surer (`combine`), then the values the message states."""
    return stated_values(combine(routed, lexical, tools), message, tools)


def resolve_label(name: str, item: RouteInput) -> str:
    """A decision as the brain acts on it: `next_step` becomes the project's next tool (unclear without one)."""
    return name if name != NEXT_STEP else (_next_tool(item.context) or "unclear")


def _next_tool(context: str) -> str | None:
    m = re.search(r"next step (\w+)", context or "")
    return m.group(1) if m else None


# --- values the message states in so many words -------------------------------------------------------------

_COUNT = re.compile(r"\b(\d{1,6})\s+((?:[a-z-]+\s+){0,3}?)(?:examples?|rows?|records?|samples?|items?|entries|"
                    r"lines|runs?|jobs?|pairs?|conversations?|questions?|ones|more)\b|"
                    r"\b(?:top|first|last|latest)\s+(\d{1,6})\b")
_NEW = re.compile(r"\b(?:new|more|extra|additional|fresh)\b")
_PERCENT = re.compile(r"(?<![\w.])(\d{1,2}(?:\.\d+)?)\s*(?:%|percent\b)")
_RATIO = re.compile(r"(?<![\w./])(\d{2})\s*/\s*(\d{1,2})(?![\w./])")
_EVAL_WORDS = "eval|evaluation|validation|test|dev|holdout"   # what people call an eval set
_BEFORE_EVAL = re.compile(r"(?:\bleak(?:s|ing|ed)? into|\boverlap(?:s|ping)?(?: with)?|\bagainst|\bvalidat\w* on|"
                          r"\b(?:appears?|appearing|shows? up|showing up|occurs?) in|"
                          r"\b(?:evaluat\w*|test\w*) (?:it |them |the model )?on|\beval(?:uation)? loss on|"
                          rf"\b(?:{_EVAL_WORDS})(?: set| file| data| split)?"
                          r"(?: is| =|:| in| from)?)\s+$")
_AFTER_EVAL = re.compile(rf"^\s*(?:as|for|to) (?:the |my |an? )?(?:{_EVAL_WORDS})|"
                         r"^\s*(?:to|for) (?:keep an eye on|track|watch|measure) (?:the )?eval")
_BEFORE_OUT = re.compile(r"(?:\b(?:into|to|as|write|save|output|put (?:it|them) in)\s+|[-=]>\s*)$")
_EVAL_NAME = re.compile(rf"(?:^|[\W_])(?:{_EVAL_WORDS}|val|valid|heldout)(?:[\W_]|$)")   # in a file name
_THOUSANDS = re.compile(r"(?<![\w.])(\d{1,3})k\b")


def stated_values(res: RouteResult, message: str, tools: dict) -> RouteResult:
    """The routed call with the fields it left out filled from values the message states in so many words: a
    count with its noun ("50 more", "the first 5 rows"), a percentage or a ratio ("80/20") for the eval share, a
    number with its name ("60 steps", "lr 1e-4"; "2k" is 2000), the one run id or the one enum word the message
    names (or the value as the schema spells it), an output path after "to/into/as" or an arrow, an eval set after
    "leak into"/"against" or before "for eval" (of two paths no words place, the one named like an eval set), the
    one path it names when the router wrote none; a path the router put in the wrong role moves to its role.
    The model reads intent well and copies literals less well; a literal read exactly is never a guess. What the
    router wrote is kept, except a number the message does not contain, an enum value other than the one the
    message names, and an enum value where the message names none (a method or status the model made up)."""
    tool = tools.get(res.name)
    if tool is None or res.error:
        return res
    from tools.registry import strict_schema

    fields = routable_fields(tool)
    props = strict_schema(tool.input_model).get("properties", {})
    low = _THOUSANDS.sub(lambda m: str(int(m.group(1)) * 1000), message.lower())   # "2k rows" is 2000
    said = _numbers_in(low)
    found: dict = {}
    if (count := COUNT_FIELD.get(res.name)) in fields and (n := _stated_count(low)) is not None:
        found[count] = n
    if share := _share_field(props, fields):   # "20%", else the one bare decimal below 1 ("hold out 0.05")
        if m := _PERCENT.search(low):
            found[share] = float(m.group(1)) / 100
        elif (m := _RATIO.search(low)) and int(m.group(1)) + int(m.group(2)) == 100:   # "80/20": the eval part
            found[share] = int(m.group(2)) / 100
        elif (v := _one_share(said)) is not None:
            found[share] = v
    named = _named_numbers(low, tool.name, props, fields)
    found.update({k: v for k, v in named.items() if k not in found})
    named_enums, unnamed = {}, set()
    for f in fields:
        also = READ_ALSO.get((res.name, f), {})
        words = {v: ws + also.get(v, []) + [v] for v, ws in SURFACES.get((res.name, f), {}).items()}
        if words and (v := _one_enum_value(low, words)) is not None:
            named_enums[f] = v
        elif words and not _names_any(low, words):
            unnamed.add(f)
    found.update(named_enums)
    from assistant.workflow import mentioned_job_ids, mentioned_paths

    if "job_id" in fields and len(jobs := mentioned_job_ids(message)) == 1:
        found["job_id"] = jobs[0]
    arguments, placed = _place_paths(res.arguments, fields, mentioned_paths(message), message)
    found.update(placed)
    kept = {k: v for k, v in arguments.items()   # a number the message lacks was made up; one named for another field
            if (not _is_number(v) or (said[float(v)] > 0 and not _named_elsewhere(k, v, named, said)))
            and k not in unnamed}                   # as is a method or status no word of the message names
    args = {**{k: v for k, v in found.items() if k not in kept}, **kept, **named_enums}   # the one value named wins
    ordered = canonical(tool, {k: args[k] for k in fields if k in args})
    return res if ordered == res.arguments else replace(res, arguments=ordered)


def _stated_count(low: str) -> int | None:
    """The count the message asks for: "50 more", "1000 new ones", "the first 5 rows", "the top 3"; of several,
    the one said to be new ("I only have 40 examples, make 1000 new ones" asks for 1000)."""
    counts = [(int(m.group(1) or m.group(3)), bool(m.group(2) and _NEW.search(m.group(2)) or
                                                   m.group(0).endswith("more"))) for m in _COUNT.finditer(low)]
    return next((n for n, new in counts if new), counts[0][0] if counts else None)


def path_role(message: str, path: str) -> str:
    """What the words around a path make it: "eval" (leak into X, against X, X for eval), "out" (into X, write
    X, save as X) or "main"."""
    i = message.find(path)
    before, after = message[:i].lower(), message[i + len(path):].lower()
    if _BEFORE_EVAL.search(before) or _AFTER_EVAL.search(after):
        return "eval"
    return "out" if _BEFORE_OUT.search(before) and i > 0 else "main"


def _eval_by_name(paths: list[str], roles: dict[str, str]) -> dict[str, str]:
    """Two paths the words give no role ("data is in train.jsonl and eval.jsonl", "a.csv / a_val.csv"): the one
    whose file name says eval is the eval set, when exactly one does and no path is the eval set by the words."""
    plain = [p for p in paths if roles[p] == "main"]
    named = [p for p in plain if _EVAL_NAME.search(re.split(r"[\\/]", p)[-1].rsplit(".", 1)[0].lower())]
    if len(plain) >= 2 and len(named) == 1 and "eval" not in roles.values():
        return {**roles, named[0]: "eval"}
    return roles


def _place_paths(args: dict, fields: tuple[str, ...], paths: list[str], message: str) -> tuple[dict, dict]:
    """(the router's arguments less the paths its words contradict, the paths to place by their role in the fields
    left empty)."""
    by_role = {"main": next((f for f in fields if is_path_field(f) and f not in ("out_path", "eval_path")),
                            "eval_path" if "eval_path" in fields else None),
               "eval": "eval_path" if "eval_path" in fields else None,
               "out": "out_path" if "out_path" in fields else None}
    placed: dict[str, str] = {}
    roles = _eval_by_name(paths, {p: path_role(message, p) for p in paths})
    for p in paths:
        role = roles[p]
        # a tool without a field for the role ("make a holdout from X" to split_dataset): X is what it works on
        target = by_role.get(role) or (by_role["main"] if role in ("out", "eval") else None)
        if target and target not in placed:
            placed[target] = p
    wrong = [f for f, v in args.items() if is_path_field(f) and v in placed.values() and placed.get(f) != v]
    if wrong:   # the router's paths contradict the words ("output to X" is no input): the words' placement wins
        args = {k: v for k, v in args.items() if not is_path_field(k)}
    main = by_role["main"]
    if main in args and main in placed and args[main] not in paths:   # a path the person names beats a remembered one
        args = {k: v for k, v in args.items() if k != main}
    return args, {f: p for f, p in placed.items() if f not in args and p not in args.values()}


def _numbers_in(low: str) -> Counter:
    """How often the text writes each number, by value; a percentage also counts as its fraction."""
    out: Counter = Counter()
    for m in re.finditer(rf"(?<![\w.]){NUMBER}(?!\w|\.\d)(\s*%)?", low):   # "135M", "8b" name no number
        out[float(m.group(1))] += 1
        if m.group(2):
            out[float(m.group(1)) / 100] += 1
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _named_elsewhere(field_name: str, value, named: dict, said: Counter) -> bool:
    """The message writes `value` once, with another field's name ("2 epochs" is not 2 steps)."""
    return said[float(value)] == 1 and any(f != field_name and float(v) == float(value) for f, v in named.items())


def _share_field(props: dict, fields: tuple[str, ...]) -> str | None:
    """The tool's one field bounded below 1 (a share, like the eval fraction), if it has exactly one."""
    shares = [f for f in fields if any(float(b.get("exclusiveMaximum", b.get("maximum", 2))) <= 1
                                       for b in props.get(f, {}).get("anyOf", [props.get(f, {})]))]
    return shares[0] if len(shares) == 1 else None


def _one_share(said: Counter) -> float | None:
    """The one decimal between 0 and 1 the text writes ("hold out 0.05 of it"), if there is exactly one."""
    values = {v for v in said if 0 < v < 1}
    return values.pop() if len(values) == 1 else None


def _named_numbers(low: str, tool_name: str, props: dict, fields: tuple[str, ...]) -> dict:
    """"60 steps", "lr 1e-4", "rank 32", "beta 0.3": numbers with their field's name (the keyword table's reader)."""
    from assistant.brains.routing import pins_from_text

    numeric = {k: v for k, v in props.items() if k in fields and not is_path_field(k)
               and not is_job_field(k) and (tool_name, k) not in SURFACES}
    pins = pins_from_text(low, {"properties": numeric})
    return {k: v for k, v in pins.items() if _is_number(v)}


_NOT_THIS = re.compile(r"(?:\binstead of|\brather than|\bnot|\bthan)\s+(?:the\s+|a\s+|plain\s+|usual\s+)*$")


def _as_word(word: str) -> str:
    """The pattern of an enum word standing on its own ("lora" not inside "qlora" or "4-bit-lora")."""
    return rf"(?<![\w-]){re.escape(word.lower())}(?![\w])"


def _names_any(low: str, surfaces: dict[str, list[str]]) -> bool:
    """Whether the text names any of the enum's values, as a word ("qlora", "4-bit", "failed")."""
    return any(re.search(_as_word(w), low) for ws in surfaces.values() for w in ws)


def _one_enum_value(low: str, surfaces: dict[str, list[str]]) -> str | None:
    """The enum value the text names, when it names exactly one (longest words first, so "ticket preference" is
    not also "ticket"); a value named only to be set aside ("instead of plain DPO", "rather than LoRA") is not
    the one asked for."""
    spans: list[tuple[int, int]] = []
    named = set()
    for word, value in sorted(((w.lower(), v) for v, ws in surfaces.items() for w in ws), key=lambda x: -len(x[0])):
        for m in re.finditer(_as_word(word), low):
            if not any(a < m.end() and m.start() < b for a, b in spans):
                spans.append((m.start(), m.end()))
                if not _NOT_THIS.search(low[:m.start()]):
                    named.add(value)
    return named.pop() if len(named) == 1 else None
