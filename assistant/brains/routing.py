"""Tool choice without trusting a tiny model to choose: narrow the candidates from the message and the plan.

docs/FACTS.md: the 135M model, grammar-constrained over every tool, picked a training tool when asked to audit.
So the embedded brain decides *which* tool from slash commands, intent keywords and the plan's next step, and
lets the model choose only among the few candidates left (and fill arguments it cannot infer). Pins (argument
values read from the message or known from the project) are fixed in the grammar, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Intent words -> tool. Order matters only for readability; every match counts once.
INTENTS: list[tuple[str, str]] = [
    (r"\b(audit|check|inspect(?:ion)? quality|quality|duplicates?|leak(?:age)?|pii|problems? (?:in|with) (?:my |the )?data)\b", "audit_dataset"),
    (r"\b(clean|fix (?:the |my )?data|dedup(?:licate)?|repair|remove duplicates)\b", "clean_dataset"),
    (r"\b(split)\b", "split_dataset"),
    (r"\b(show|look at|peek|preview|inspect|what(?:'s| is) in)\b.*\b(rows?|data|dataset|file)\b", "inspect_dataset"),
    (r"\b(plan (?:the |a )?(?:training|run)|how (?:long|much memory)|memory plan|estimate)\b", "plan_training"),
    (r"\b(train|fine-?tune|finetune|lora|qlora|sft)\b", "train_sft"),
    (r"\b(dpo|preference|align(?:ment)?|chosen|rejected)\b", "train_dpo"),
    (r"\b(distill(?:ation)?|teacher|student)\b", "distill"),
    (r"\b(export|merge|gguf|serve|servable|deploy)\b", "export_model"),
    (r"\b(list (?:the |my )?(?:runs|jobs)|runs|jobs)\b", "list_runs"),
    (r"\b(status|progress|loss|how is (?:the |my )?(?:run|job|training)|eta)\b", "run_status"),
    (r"\b(cancel|stop|kill|abort)\b", "cancel_run"),
    (r"\b(resume|continue (?:the |my )?(?:run|job|training)|restart)\b", "resume_run"),
    (r"\b(eval(?:uate|uation)?|accuracy|score|benchmark|compare)\b", "evaluate"),
    (r"\b(synthe(?:tic|size|sise)|generate (?:more )?(?:data|examples|rows)|augment)\b", "generate_synthetic"),
    (r"\b(should i|decide|decision|worth|recommend|strategy|rag|prompting (?:instead|enough))\b", "recommend_strategy"),
    (r"\b(hardware|gpu|cpu|ram|bf16|machine)\b", "probe_hardware"),
    (r"\b(sample|demo|example) (?:data(?:set)?|task)\b", "create_sample_dataset"),
]
# "fine-tune" words inside a question about whether to fine-tune are a decision, not a training request.
QUESTION_DECIDE = re.compile(r"\b(should|worth|whether|do i need|is it)\b.*\b(fine-?tun|train)", re.I)
# A bare go-ahead follows the plan's next step.
GO_ON = re.compile(r"^\s*(yes|ok(?:ay)?|go(?: on| ahead)?|do it|next(?: step)?|continue|proceed|sure)\W*$", re.I)
# Training words that name a follow-up on a run rather than a new one.
RUN_FOLLOWUP = {"run_status", "cancel_run", "resume_run", "list_runs", "evaluate", "export_model"}


@dataclass
class Route:
    candidates: list[str]
    reason: str
    pins: dict = field(default_factory=dict)


def route(text: str, available: set[str], context: dict | None = None) -> Route | None:
    """The few tools this message can mean, or None for a conversational reply."""
    context = context or {}
    text = text or ""
    if GO_ON.match(text) and context.get("next_tool") in available:
        return Route([context["next_tool"]], f"go-ahead follows the plan's next step ({context['next_tool']})")
    if QUESTION_DECIDE.search(text) and "recommend_strategy" in available:
        return Route(["recommend_strategy"], "a question about whether to fine-tune")
    from assistant.workflow import PATH_RE

    hits: list[str] = []
    low = PATH_RE.sub(" ", text).lower()  # "train.jsonl" is a file name, not a request to train
    for pattern, name in INTENTS:
        if name in available and name not in hits and re.search(pattern, low):
            hits.append(name)
    if not hits:
        return None
    # Follow-ups on a run beat "training" words in the same sentence ("stop the training").
    follow = [h for h in hits if h in RUN_FOLLOWUP and h != "list_runs"]
    if follow and "train_sft" in hits:
        hits = [h for h in hits if h != "train_sft"]
    if "train_dpo" in hits and "train_sft" in hits:
        hits.remove("train_sft")
    if "distill" in hits and "train_sft" in hits:
        hits.remove("train_sft")
    if "clean_dataset" in hits and "audit_dataset" in hits and re.search(r"\b(clean|dedup|fix|repair)", low):
        hits.remove("audit_dataset")
    if "inspect_dataset" in hits and len(hits) > 1:
        hits.remove("inspect_dataset")
    if "list_runs" in hits and len(hits) > 1:
        hits.remove("list_runs")
    if "probe_hardware" in hits and len(hits) > 1:
        hits.remove("probe_hardware")
    return Route(hits[:3], "intent words: " + ", ".join(hits[:3]))


# --- pins: argument values the message or the project already fixes -------------------------------------

NUMBER = r"(\d+(?:\.\d+)?(?:e-?\d+)?)"
_SKIP_WORDS = {"max", "num", "min", "per", "the", "of", "n"}


def _field_types(prop: dict) -> set[str]:
    types = set()
    if "type" in prop:
        types |= set(prop["type"] if isinstance(prop["type"], list) else [prop["type"]])
    for sub in prop.get("anyOf", []):
        types |= _field_types(sub)
    return types


def _enum_values(prop: dict, defs: dict) -> list:
    if "enum" in prop:
        return prop["enum"]
    if "$ref" in prop:
        return _enum_values(defs.get(prop["$ref"].split("/")[-1], {}), defs)
    for sub in prop.get("anyOf", []):
        if (vals := _enum_values(sub, defs)):
            return vals
    return []


def pins_from_text(text: str, schema: dict, prefill: dict | None = None) -> dict:
    """Read argument values from the person's words; fall back to what the project knows (prefill)."""
    from assistant.workflow import mentioned_job_ids, mentioned_paths

    props = schema.get("properties", {})
    defs = schema.get("$defs", {})
    low = (text or "").lower()
    pins: dict = {}
    paths = mentioned_paths(text)
    jobs = mentioned_job_ids(text)
    path_fields = [k for k in props if "path" in k or k in ("dataset", "data", "file", "input", "train", "eval")]
    path_fields = [k for k in path_fields if "out" not in k and "report" not in k]
    # Paths in order of mention: required fields first, then train, then eval, then the rest (preferences):
    # `/decide a.jsonl b.jsonl` means train a, eval b.
    ordered = sorted(path_fields, key=lambda k: ("null" in _field_types(props[k]),
                                                 0 if "train" in k or k in ("path", "dataset", "data", "input")
                                                 else 1 if "eval" in k or "test" in k else 2, k))
    for k, p in zip(ordered, paths):
        pins[k] = p
    for k in props:
        if k in pins:
            continue
        prop = props[k]
        types = _field_types(prop)
        if jobs and ("job" in k or k in ("run", "run_id")) and "string" in types:
            pins[k] = jobs[0]
            continue
        values = _enum_values(prop, defs)
        if values:
            for v in values:
                if isinstance(v, str) and len(v) > 1 and re.search(rf"\b{re.escape(v.lower())}\b", low):
                    pins[k] = v
                    break
            continue
    pins.update(_numbers(low, props, pins))
    for k, v in (prefill or {}).items():
        if k in props and k not in pins and v is not None:
            pins[k] = v
    return pins


_MENTION_AFTER = re.compile(rf"{NUMBER}\s*([a-z][a-z_]*)")
_MENTION_BEFORE = re.compile(rf"\b([a-z][a-z_]*)\s*(?:=|:|of|to)?\s*{NUMBER}")


def _numbers(low: str, props: dict, taken: dict) -> dict:
    """"30 steps", "lr 2e-4", "lora_r=8": each number pins one numeric field, the best-named one
    (exact name, then max_<word>, then the shortest name containing the word)."""
    numeric = {k: _field_types(p) for k, p in props.items()
               if k not in taken and _field_types(p) & {"integer", "number"}}
    out: dict = {}
    mentions = [(m.group(2), m.group(1)) for m in _MENTION_AFTER.finditer(low)]
    mentions += [(m.group(1), m.group(2)) for m in _MENTION_BEFORE.finditer(low)]
    aliases = {"lr": "learning_rate", "rank": "lora_r", "r": "lora_r"}
    for word, num in mentions:
        stem = word.rstrip("s")
        if len(stem) < 2 and word not in aliases:
            continue
        cands = [k for k in numeric if k not in out and (k == aliases.get(word) or k == word or k == stem
                 or stem in [w.rstrip("s") for w in k.split("_")])]
        if not cands:
            continue
        cands.sort(key=lambda k: (k != aliases.get(word), k not in (word, stem), not k.startswith("max_"), len(k)))
        k = cands[0]
        value = float(num)
        out[k] = int(value) if "integer" in numeric[k] and value.is_integer() else value
    return out
