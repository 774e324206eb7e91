"""Sample tasks with known answers: demo data for a first run, and the data the real-run tests learn.

`tickets`: support tickets to one of three labels, in TRL's conversational format. Deterministic per seed,
varied in wording so that memorising rows does not help on the held-out split. `part="train"` and `part="eval"`
draw from disjoint templates (7 and 3 of each label's 10), so a train/eval pair made that way shares no template
and the audit finds no contamination between them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from runtime.outputs import write_jsonl

Part = Literal["all", "train", "eval"]
EVAL_TEMPLATES = 3  # the last templates of each label, held out for part="eval"

TICKET_LABELS = ("billing", "technical", "shipping")
TICKET_SYSTEM = "Classify the support ticket. Answer with exactly one word: billing, technical, or shipping."

_PRODUCTS = ["router", "laptop", "headphones", "phone case", "smart watch", "camera", "keyboard", "monitor",
             "coffee maker", "tablet", "printer", "speaker", "backpack", "desk lamp", "drone"]
_TEMPLATES = {
    "billing": [
        "I was charged twice for my {p} order, please refund the extra ${n}.",
        "My invoice for the {p} shows ${n} but the price was lower.",
        "Why did my credit card get billed ${n} this month?",
        "I want a refund for the {p}, the payment went through twice.",
        "Can you update the billing address on my account? The last invoice was wrong.",
        "The subscription renewed and charged me ${n} without asking.",
        "There is an unknown charge of ${n} on my statement from your store.",
        "Please cancel my plan and stop charging my card.",
        "I paid for the {p} with a coupon but was billed the full ${n}.",
        "How do I get a receipt for the ${n} payment?",
    ],
    "technical": [
        "My {p} will not turn on after the latest update.",
        "The {p} keeps disconnecting from wifi every {n} minutes.",
        "I get an error code {n} when I try to install the app for my {p}.",
        "The screen of my {p} flickers and then goes black.",
        "How do I reset my {p} to factory settings? It freezes constantly.",
        "The firmware update for the {p} failed at {n} percent.",
        "My {p} is not pairing with bluetooth anymore.",
        "The app crashes whenever I open the settings page.",
        "The {p} overheats after {n} minutes of use.",
        "I cannot log in to the app, it says server error {n}.",
    ],
    "shipping": [
        "My {p} order has not arrived yet, it has been {n} days.",
        "The tracking number for my {p} does not work.",
        "The package with my {p} was delivered to the wrong address.",
        "When will my {p} ship? I ordered it {n} days ago.",
        "The box arrived damaged and the {p} is missing.",
        "Can I change the delivery address for order {n}?",
        "The courier says my {p} was delivered but I never got it.",
        "Is express delivery available for the {p}?",
        "My order {n} is stuck in customs.",
        "I received someone else's package instead of my {p}.",
    ],
}
_PREFIXES = ["", "Hi, ", "Hello, ", "Hey there. ", "Good morning. ", "Urgent: ", "Please help. "]
_SUFFIXES = ["", " Thanks.", " Thank you!", " Please advise.", " This is frustrating.", " Regards, Sam."]


def _templates(label: str, part: Part) -> list[str]:
    t = _TEMPLATES[label]
    return t[:-EVAL_TEMPLATES] if part == "train" else t[-EVAL_TEMPLATES:] if part == "eval" else t


def ticket_text(rng: random.Random, label: str, part: Part = "all") -> str:
    body = rng.choice(_templates(label, part)).format(p=rng.choice(_PRODUCTS), n=rng.randint(2, 400))
    return rng.choice(_PREFIXES) + body + rng.choice(_SUFFIXES)


def ticket_records(n: int, seed: int = 0, system: bool = True, part: Part = "all") -> list[dict]:
    """n conversational records, labels balanced round-robin, no two identical texts."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = TICKET_LABELS[len(rows) % len(TICKET_LABELS)]
        text = ticket_text(rng, label, part)
        if text in seen:
            continue
        seen.add(text)
        messages = ([{"role": "system", "content": TICKET_SYSTEM}] if system else []) + [
            {"role": "user", "content": text}, {"role": "assistant", "content": label}]
        rows.append({"messages": messages})
    return rows


def ticket_preference_records(n: int, seed: int = 0, part: Part = "all") -> list[dict]:
    """Conversational preference pairs: the right label is chosen, a wrong one rejected."""
    rng = random.Random(seed + 7919)
    out = []
    for row in ticket_records(n, seed, part=part):
        prompt, label = row["messages"][:-1], row["messages"][-1]["content"]
        wrong = rng.choice([x for x in TICKET_LABELS if x != label])
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": label}],
                    "rejected": [{"role": "assistant", "content": wrong}]})
    return out


def write_split(folder: Path, rows: list[dict], n_train: int, prefix: str = "") -> tuple[Path, Path]:
    """Write rows[:n_train] to `<prefix>train.jsonl` and the rest to `<prefix>eval.jsonl` in `folder`."""
    return (write_jsonl(folder / f"{prefix}train.jsonl", rows[:n_train]),
            write_jsonl(folder / f"{prefix}eval.jsonl", rows[n_train:]))
