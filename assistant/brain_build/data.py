"""The router's data set, generated from the live tool registry and the phrasing families.

Each row: the project line (system), the person's message (user) and the call envelope (assistant), in TRL's
conversational format; its metadata (label, family, style, allowed values) goes to a side list, matched back by
row id after the data tools have run. Seeded: the same seed gives the same rows.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from assistant.brain_build.phrasings import (CONVERSATIONAL, FRAMES, GO_AHEAD, MIXED, PHRASINGS, PLAIN, PREFIXES,
                                             SUFFIXES, VERBS)
from assistant.brain_build.fifth_writer import FIFTH_WRITER
from assistant.brain_build.fourth_writer import FOURTH_WRITER
from assistant.brain_build.second_writer import SECOND_WRITER
from assistant.brain_build.sixth_writer import SIXTH_WRITER
from assistant.brains.router import (COUNT_FIELD, NEXT_STEP, REPLY_LABELS, SURFACES, RouteInput, call_text,
                                     canonical, routable_fields)

# Which field a slot fills, per tool (a slot a tool lacks fills nothing: it is only words then).
PRIMARY_PATH = {"audit_dataset": "path", "clean_dataset": "path", "split_dataset": "path",
                "inspect_dataset": "path", "generate_synthetic": "seeds_path", "recommend_strategy": "train_path",
                "plan_training": "train_path", "train_sft": "train_path", "train_dpo": "train_path",
                "distill": "train_path", "evaluate": "eval_path"}
SLOT_FIELD = {"eval": "eval_path", "out": "out_path", "steps": "max_steps", "lr": "learning_rate",
              "epochs": "epochs", "rank": "lora_r", "bs": "batch_size", "frac": "eval_fraction",
              "pct": "eval_fraction", "beta": "beta",
              "job": "job_id", "method": "method", "mode": "mode", "status": "status", "task": "task"}
NUMBERS = {"steps": ["5", "10", "20", "25", "30", "40", "50", "60", "80", "100", "120", "150", "200", "300", "500"],
           "lr": ["1e-4", "2e-4", "5e-5", "3e-4", "1e-5", "0.0002", "0.0001", "5e-4", "2e-5"],
           "epochs": ["1", "2", "3", "0.5"], "rank": ["4", "8", "16", "32", "64"], "bs": ["2", "4", "8", "16", "32"],
           "frac": ["0.1", "0.2", "0.15", "0.05", "0.25"], "beta": ["0.1", "0.2", "0.05", "0.5"],
           "n": ["3", "5", "8", "10", "20", "50", "100", "200"], "pct": ["5", "10", "15", "20", "25", "30"]}
DIRS = ["data", "datasets", "corpus", "inputs", "my_data", "work/2024", "./data", "~/projects/bot/data",
        "/home/sam/ds", "raw", "exports", "samples", "", "", "data/v2", "files"]
STEMS = ["train", "tickets", "support_chats", "faq", "intents", "reviews", "qa_pairs", "dialogs", "emails",
         "instructions", "customer_msgs", "legal_qa", "recipes", "notes", "code_review", "summaries", "sql_tasks",
         "translations", "train_v2", "train_clean", "seed_examples", "chats_2023", "product_qa", "triage"]
EVAL_STEMS = ["eval", "test", "holdout", "val", "dev", "eval_set", "test_split", "validation"]
PREF_STEMS = ["prefs", "pairs", "preferences", "chosen_rejected", "dpo_data", "feedback", "ranked"]
EXTS = ["jsonl"] * 6 + ["json", "csv", "parquet", "txt"]
TYPO_RATE = 0.15             # rows with a slip (0.3 in training rows measured no better: held-out 0.82, outside 0.83)
WRAP_RATE = 0.35             # share of rows with a prefix or suffix around the request
WEIGHT = {"go_ahead": 3}     # follow-ups need the project line to answer: more rows
# Families by other writers (separate sessions that saw neither phrasings.py nor each other's work), by prefix:
# trained on, never held out, each rendered from its own random stream. (The third writer wrote outside2.jsonl.)
WRITERS = {"w2_": SECOND_WRITER, "w4_": FOURTH_WRITER, "w5_": FIFTH_WRITER, "w6_": SIXTH_WRITER}


@dataclass
class Row:
    id: int
    label: str
    family: str               # label/style
    style: str
    message: str
    context: str
    paths: list[str]
    job_ids: list[str]
    arguments: dict
    target: str
    typo: bool = False
    meta: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The training row: TRL's conversational format."""
        return {"messages": [{"role": "system", "content": self.context}, {"role": "user", "content": self.message},
                             {"role": "assistant", "content": self.target}]}

    def route_input(self) -> RouteInput:
        return RouteInput(self.message, self.context, self.paths, self.job_ids)


def families(tools: dict) -> dict[str, dict[str, list[str]]]:
    """Every label's phrasing families: hand-written ones, and for a registered tool without any, families
    made from its name and description (so every tool in the live registry has rows)."""
    out = {k: {**v, **CONVERSATIONAL.get(k, {})} for k, v in PHRASINGS.items() if k in tools or k in REPLY_LABELS}
    for name, t in tools.items():
        if name not in out:
            words = name.replace("_", " ")
            desc = t.description.rstrip(".").lower()
            out[name] = {"generic": [f"run {words}", f"use the {name} tool", f"{words} please"],
                         "described": [desc, f"I want to {desc[0].lower() + desc[1:]}", f"can you {words}?"]}
    for label, verbs in VERBS.items():
        if label in out:
            out[label]["composed"] = composed(label, verbs)
    for label, templates in MIXED.items():
        if label in out:
            out[label]["mixed"] = templates
    for label, templates in PLAIN.items():
        if label in out:
            out[label]["plain"] = templates
    out["go_ahead"] = dict(GO_AHEAD)   # a copy: the writers below must not add to phrasings.py's own dict
    for prefix, writer in WRITERS.items():
        for label, fams in writer.items():
            if label in out:
                out[label].update({prefix + name: templates for name, templates in fams.items()})
    return out


def writer_of(family: str) -> str:
    """The prefix of the other writer who wrote a family (its name without the label), "" for phrasings.py's."""
    return next((p for p in WRITERS if family.startswith(p)), "")


def composed(label: str, verbs: list[str], frames_per_verb: int = 2) -> list[str]:
    """Templates from the label's verb phrases in shared frames, a seeded draw (the same every build)."""
    rng = random.Random(label)
    return [f.replace("<v>", v) for v in verbs for f in rng.sample(FRAMES, frames_per_verb)]


def held_out_families(fams: dict[str, dict[str, list[str]]], seed: int, share: float = 0.25) -> set[str]:
    """Whole families kept out of training: about `share` of each label's families, never its last two, and never
    one whose removal would leave an argument field it teaches without a training family (the held-out set
    measures new phrasings, not fields the adapter was never shown). Other writers' families are not drawn: the
    held-out rows stay the same with or without them."""
    rng = random.Random(seed)
    held = set()
    for label in sorted(fams):
        names = sorted(f for f in fams[label] if not writer_of(f))
        k = min(len(names) - 2, max(1, round(share * len(names)))) if len(names) >= 3 else (1 if label == "go_ahead" else 0)
        taught = {f: _fields(label, fams[label][f]) for f in names}
        for fam in rng.sample(names, len(names)):
            if len([f for f in names if f"{label}/{f}" in held]) >= k:
                break
            rest = set().union(*(taught[f] for f in names if f != fam and f"{label}/{f}" not in held))
            if taught[fam] <= rest:
                held.add(f"{label}/{fam}")
    return held


def _fields(label: str, templates: list[str]) -> set[str]:
    """The argument fields a family's templates can state."""
    out = set()
    for t in templates:
        for slot in _SLOT.findall(t):
            out.add(PRIMARY_PATH.get(label) if slot == "path" else COUNT_FIELD.get(label) if slot == "n"
                    else SLOT_FIELD.get(slot))
    return out - {None}


# --- rendering --------------------------------------------------------------------------------------------

_CHOICE = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")


def expand(template: str, rng: random.Random) -> str:
    """`[a|b]` -> one of them; `[a]` -> a or nothing."""
    def pick(m: re.Match) -> str:
        opts = m.group(1).split("|")
        return rng.choice(opts) if len(opts) > 1 else (opts[0] if rng.random() < 0.5 else "")

    return re.sub(r"\s+", " ", _CHOICE.sub(pick, template)).strip()


def typo(text: str, rng: random.Random) -> str:
    """One slip (swapped, dropped or doubled letter) in a word of four letters or more, never in a slot."""
    words = list(re.finditer(r"(?<![{\w])[a-z]{4,}(?![\w}])", text))
    if not words:
        return text
    m = rng.choice(words)
    w, i = m.group(0), rng.randrange(1, len(m.group(0)) - 1)
    new = {"swap": w[:i] + w[i + 1] + w[i] + w[i + 2:], "drop": w[:i] + w[i + 1:],
           "double": w[:i] + w[i] + w[i:]}[rng.choice(("swap", "drop", "double"))]
    return text[:m.start()] + new + text[m.end():]


def surface_style(text: str, rng: random.Random) -> str:
    first = text.split(" ", 1)[0]
    if rng.random() < 0.3 and not any(c in first for c in "/.~_"):  # never a path or a name
        text = text[:1].upper() + text[1:]
    if rng.random() < 0.2 and text[-1:].isalnum():
        text += rng.choice([".", "?", "!", " please", " pls", " thanks"])
    return text


def wrap(text: str, rng: random.Random, held: bool) -> str:
    """Sometimes a prefix or a suffix that changes nothing about the request; training rows and held-out rows
    draw from disjoint halves of each list."""
    if rng.random() >= WRAP_RATE:
        return text
    pool = PREFIXES if rng.random() < 0.5 else SUFFIXES
    half = len(pool) // 2
    piece = rng.choice(pool[half:] if held else pool[:half])
    if pool is SUFFIXES:
        return text.rstrip(".!") + piece
    return piece + (text[:1].lower() + text[1:] if not text[:2].isupper() else text)


def _path(rng: random.Random, stems: list[str]) -> str:
    d = rng.choice(DIRS)
    name = f"{rng.choice(stems)}.{rng.choice(EXTS)}"
    return f"{d.rstrip('/')}/{name}" if d else name


def _job(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(12))


def fill(label: str, text: str, tools: dict, rng: random.Random) -> tuple[str, dict, dict]:
    """Put values into the slots; returns (message, arguments in router order, surface forms of numbers)."""
    tool = tools.get(label)
    allowed = set(routable_fields(tool)) if tool is not None else set()
    args: dict = {}
    surface: dict = {}
    used: set[str] = set()

    def value(slot: str) -> str:
        fieldname = (PRIMARY_PATH.get(label) if slot == "path" else COUNT_FIELD.get(label) if slot == "n"
                     else SLOT_FIELD.get(slot))
        if slot == "path":
            stems = PREF_STEMS if label == "train_dpo" else EVAL_STEMS if label == "evaluate" else STEMS
            text_value = _path(rng, stems)
            while text_value in used:
                text_value = _path(rng, stems)
            val = text_value
        elif slot == "eval":
            val = text_value = _path(rng, EVAL_STEMS)
        elif slot == "out":
            val = text_value = _path(rng, [s + "_clean" for s in STEMS] + [s + "_synthetic" for s in STEMS])
        elif slot == "job":
            val = text_value = _job(rng)
        elif slot == "pct":   # "20%" means 0.2
            text_value = rng.choice(NUMBERS["pct"]) + "%"
            val = int(text_value[:-1]) / 100
        elif (label, fieldname) in SURFACES:
            val = rng.choice(sorted(SURFACES[(label, fieldname)]))
            text_value = rng.choice(SURFACES[(label, fieldname)][val])
        else:
            text_value = rng.choice(NUMBERS["n" if slot == "n" else slot])
            val = float(text_value) if any(c in text_value for c in ".e") else int(text_value)
            surface[fieldname] = text_value
        used.add(text_value)
        if fieldname in allowed:
            args[fieldname] = val
        return text_value

    message = _SLOT.sub(lambda m: value(m.group(1)), text)
    order = list(routable_fields(tool)) if tool is not None else []
    args = canonical(tool, {k: args[k] for k in order if k in args})
    return message, args, {k: v for k, v in surface.items() if k in args}


def random_project(rng: random.Random, label: str):
    """A project state: data, a latest run (likelier for run follow-ups), steps done."""
    from assistant.workflow import Project

    p = Project()
    if rng.random() < 0.65:
        p.add_dataset(_path(rng, STEMS), "train", "person")
        if rng.random() < 0.5:
            p.add_dataset(_path(rng, EVAL_STEMS), "eval", "person")
    run_tools = {"run_status", "cancel_run", "resume_run", "export_model", "evaluate"}
    if rng.random() < (0.8 if label in run_tools else 0.35):
        status = rng.choice(["running", "running", "succeeded", "failed", "cancelled", "queued"])
        p.runs.append({"job_id": _job(rng), "tool": rng.choice(["train_sft", "train_sft", "train_dpo", "distill"]),
                       "status": status})
    if p.datasets:  # how far along the plan is: 0 to 4 steps done, in order
        for key in ("audit", "decide", "train", "evaluate")[:rng.randrange(5)]:
            p.done[key] = "2026-01-01T00:00:00+00:00"
    return p


def make_rows(tools: dict, seed: int, per_family: int, held: set[str], per_held_family: int,
              start_id: int = 0) -> tuple[list[Row], list[Row]]:
    """(training rows, held-out rows): `per_family` rows from each kept family, `per_held_family` from each
    held-out one. Each other writer's families draw from that writer's own random stream, after the others: the
    rows of phrasings.py's families, held-out ones included, and of each writer are the same with or without
    another writer."""
    train, heldout = [], []
    fams = families(tools)
    next_id = start_id
    for writer in ["", *WRITERS]:
        rng = random.Random(f"{seed}/{writer}" if writer else seed)
        for label, fam in [(lab, f) for lab in sorted(fams) for f in sorted(fams[lab]) if writer_of(f) == writer]:
            key = f"{label}/{fam}"
            templates = fams[label][fam]
            # a kept family renders each of its templates at least once: held_out_families counts on them
            n = (per_held_family if key in held else max(per_family, len(templates))) * WEIGHT.get(label, 1)
            for i in range(n):
                row = _row(label, fam, templates[i % len(templates)], tools, rng, next_id, key in held)
                next_id += 1
                (heldout if key in held else train).append(row)
    return train, heldout


def _row(label: str, fam: str, template: str, tools: dict, rng: random.Random, rid: int, held: bool) -> Row:
    project = random_project(rng, label)
    text = expand(template, rng)
    slipped = rng.random() < TYPO_RATE
    if slipped:
        text = typo(text, rng)
    message, args, surface = fill(label if label != "go_ahead" else "", text, tools, rng)
    message = wrap(surface_style(message, rng), rng, held)
    name = project.next_step().tool if label == "go_ahead" else label   # what the brain then calls
    item = RouteInput.for_message(message, project)
    return Row(rid, label, f"{label}/{fam}", fam.rstrip("0123456789"), message, item.context, item.paths,
               item.job_ids, args, call_text(NEXT_STEP if label == "go_ahead" else name, args, surface), slipped,
               {"name": name, "project": project.model_dump(mode="json")})
