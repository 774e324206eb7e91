"""The shipped adapter's documents, written from the build's report: report.md, README.md (data card) and
reproduce.sh. Every number in them comes from report.json."""

from __future__ import annotations

SET_TITLES = {"heldout_families": "held-out phrasing families", "outside": "hand-written outside requests"}


def _ci(m: dict) -> str:
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def _delta(d: dict) -> str:
    return f"{d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def accuracy_table(report: dict) -> list[str]:
    lines = ["| requests | router | n | right tool | exact call (tool and arguments) |", "|---|---|---|---|---|"]
    for set_name, s in report["sets"].items():
        for rname, r in s["routers"].items():
            lines.append(f"| {SET_TITLES.get(set_name, set_name)} | {rname} | {r['n']} | {_ci(r['tool_accuracy'])} "
                         f"| {_ci(r['exact_call_accuracy'])} |")
    return lines


def report_markdown(r: dict) -> str:
    m = r["machine"]
    t = r["train"]
    lines = ["# Router adapter: build report", "",
             f"Built {r['built']} in **{r['seconds'] / 60:.1f} min** on {m['cpus']} CPUs; 1-minute load average "
             f"{m['load_avg_1m_mean']} on average (samples {m['load_avg_1m_samples']}). A shared machine: "
             "times scale with its load. Steps (s): " + ", ".join(f"{k} {v}" for k, v in r["steps_s"].items()) + "."
             + (f" The rule columns (lexical, brain) were re-measured on {r['rescored']} from the recorded "
                "calls (`ftpilot brain rescore`), after a change to what runs after the adapter." if r.get("rescored")
                else ""),
             "", "## Accuracy (95% bootstrap intervals)", "", *accuracy_table(r), "",
             "Exact call: the right tool with exactly the expected arguments (defaults dropped, numbers compared "
             "by value). *base*: the bundled model without the adapter, prompted with the tool list, decoded the "
             "same way; *regex*: the keyword table the brain used before; *lexical*: a linear classifier over "
             "the request's character and word n-grams (paths, run ids and numbers read as placeholders), fitted "
             "on the adapter's training rows "
             "(assistant/brains/lexical.py), with the stated values below; *brain*: what the brain runs, the "
             "adapter's call unless the classifier prefers another label by more than the adapter's own label "
             "margin (`router.combine`; nothing tuned), then the values the message states in so many words "
             "filled in and numbers or enum values the message does not contain dropped "
             "(assistant/brains/router.py "
             "`stated_values`).", "",
             "## Differences (paired bootstrap, same requests)", "",
             "| requests | comparison | right tool | exact call |", "|---|---|---|---|"]
    for set_name, s in r["sets"].items():
        for comp, d in s["deltas"].items():
            lines.append(f"| {SET_TITLES.get(set_name, set_name)} | {comp} | {_delta(d['tool_accuracy'])} | "
                         f"{_delta(d['exact_call_accuracy'])} |")
    lat = r["latency"]
    lines += ["", "## Speed", "",
              f"Routing one message (model loaded, adapter): p50 {lat['p50_s']} s, max {lat['max_s']} s over "
              f"{lat['n']} messages (load average {lat['load_avg_1m']} then).", "",
              "## Asking when unsure", "",
              "The brain asks a short question instead of calling when the probability margin between the two best "
              "labels is small. What each threshold would do (adapter):", "",
              "| requests | margin below | asked | exact call accuracy of the calls made |", "|---|---|---|---|"]
    for set_name, s in r["sets"].items():
        for row in s["margins"]:
            lines.append(f"| {SET_TITLES.get(set_name, set_name)} | {row['margin_below']} | {row['asked']} | "
                         f"{row['exact_call_accuracy_of_rest']} |")
    lines += ["", "## By phrasing style (adapter, exact call)", "", "| requests | style | exact / n |", "|---|---|---|"]
    for set_name, s in r["sets"].items():
        for style, v in s["by_style"].items():
            lines.append(f"| {SET_TITLES.get(set_name, set_name)} | {style} | {v['exact']} / {v['n']} |")
    lines += ["", "## Mistakes (adapter)", ""]
    for set_name, s in r["sets"].items():
        for x in s["mistakes"]:
            lines.append(f"- ({set_name}) \"{x['message']}\": expected `{x['expected']['name']}` "
                         f"{x['expected']['arguments']}, got `{x['got']['name']}` {x['got']['arguments']} "
                         f"(margin {x['got']['margin']})")
    lines += ["", "## Mistakes (brain)", ""]
    for set_name, s in r["sets"].items():
        for x in s.get("brain_mistakes", []):
            lines.append(f"- ({set_name}) \"{x['message']}\": expected `{x['expected']['name']}` "
                         f"{x['expected']['arguments']}, got `{x['got']['name']}` {x['got']['arguments']}")
    p = r.get("perplexity") or {}
    if p:
        lines += ["", "## Perplexity of the held-out calls (evaluate tool)", "", "| candidate | perplexity | eval loss |",
                  "|---|---|---|"]
        for name, met in p["results"].items():
            lines.append(f"| {name} | {_ci(met['perplexity'])} | {_ci(met['eval_loss'])} |")
    d, pr = r["data"], r["prepare"]
    lines += ["", "## Data", "",
              f"- {d['rows']} training rows from {d['families'] - len(d['held_families'])} phrasing families; "
              f"{d['heldout_rows']} evaluation rows from {len(d['held_families'])} held-out families: "
              + ", ".join(d["held_families"]),
              f"- audit_dataset ({pr['audit']['rows']} rows): " + "; ".join(
                  f"{f['check']} {f['severity']} ×{f['count']}" for f in pr["audit"]["findings"]) or "no findings",
              f"- clean_dataset: {pr['clean']['input_rows']} → {pr['clean']['output_rows']} rows "
              f"(dropped {pr['clean']['dropped']}: {pr['clean']['reasons']})",
              f"- split_dataset: {pr['split']['train_rows']} train / {pr['split']['eval_rows']} validation rows",
              "", "## Training (train_sft)", "",
              f"- run {t['job_id']}: {t['global_step']} steps in {t['train_runtime_s']} s; train loss "
              f"{t['train_loss_first']} → {t['train_loss']}; validation loss {t['eval_loss_before']} → {t['eval_loss']}",
              f"- adapter: {r['adapter']['size_mb']} MB fp16 safetensors, sha256 {r['adapter']['sha256']}",
              *([f"- lexical classifier: {lx['classes']} labels, {lx['features']} n-gram features, "
                 f"{lx['size_mb']} MB"] if (lx := r.get("lexical")) else []),
              "", "## Reproduce", "", f"`{r['reproduce']}` (or `./reproduce.sh`)", ""]
    return "\n".join(lines)


def data_card(r: dict) -> str:
    c = r["config"]
    lines = ["# ftpilot's router adapter", "",
             "A LoRA adapter for the bundled SmolLM2-135M-Instruct (Apache-2.0) that reads one plain request and "
             "writes the call ftpilot should make: `{\"name\": tool or reply kind, \"arguments\": {...}}`. ftpilot "
             "built it with its own tools (`ftpilot brain build`): generated data, audit_dataset, clean_dataset, "
             "split_dataset, train_sft, evaluate. Beside it, a lexical classifier fitted on the same rows "
             "(lexical.json, lexical.safetensors) overrules it where it prefers another label by more than the "
             "adapter's own margin.", "",
             "## Use", "",
             "The embedded brain loads it on the transformers engine's model and decodes under a JSON-schema "
             "grammar (assistant/brains/router.py). Input: a system line with the project state "
             "(`Project: data: train, eval; latest run train_sft succeeded; next step evaluate`) and the person's message. Output labels: the "
             f"{len(r['data']['labels'])} tools, replies and `next_step` below; arguments only as stated in the "
             "message.", "",
             "Labels: " + ", ".join(f"`{x}`" for x in r["data"]["labels"] if x != "go_ahead")
             + " (follow-ups such as \"go ahead\" are `next_step`, which the router resolves to the next step's tool "
             "from the project line).", "",
             "## Data", "",
             f"{r['data']['rows']} rows generated from the live tool registry with seed {c['seed']}: phrasing families "
             "per label (imperative, question, indirect, terse, path first, follow-ups, requests with a reason or "
             "context, synonyms, the tool's verb phrases in frames every tool shares, requests that name other steps "
             "in passing, requests that say the outcome wanted in everyday words; and, for training only, families "
             "by other writers, each in a separate session that saw neither these, the held-out ones nor each "
             "other's: goals, situations, beginners, non-native English (second writer); ML jargon and phone "
             "shorthand (fourth); polite, indirect requests and other fields' words (fifth); questions and "
             "problems described instead of actions (sixth)), prefixes and suffixes (held-out "
             "rows get their own), typos (about 15% of rows), argument values (paths, eval paths, steps, learning "
             "rates, methods, run ids) and random "
             "project states. "
             "No person's data. Whole families are held out for evaluation; clean_dataset dropped training rows that "
             "overlap them. 80 requests written by hand in another style (assistant/brain_build/outside.jsonl) are "
             "never trained on.", "",
             "## Training", "",
             f"LoRA r={c['lora_r']}, alpha {c['lora_alpha']}, the linear layers of "
             f"{'the top ' + str(c['lora_layers']) + ' decoder layers' if c.get('lora_layers') else 'every layer'}, "
             f"learning rate {c['learning_rate']}, "
             f"batch {c['batch_size']}, {c['max_steps'] or str(c['epochs']) + ' epoch(s)'}, seed {c['seed']}; "
             f"stored in fp16 ({r['adapter']['size_mb']} MB).", "",
             "## Results", "", *accuracy_table(r), "", "Details, intervals of the differences, speed, mistakes: "
             "report.md. Rebuild: reproduce.sh.", "",
             "## Limits", "",
             "English only; one tool per request (the brain splits \"X and then Y\" into a plan); arguments are the "
             "values a message states, so anything else comes from the project or a form. A small margin between "
             "the two best labels makes the brain ask instead of guess.", ""]
    return "\n".join(lines)


def reproduce_sh(r: dict) -> str:
    return ("#!/usr/bin/env bash\n"
            "# Rebuilds this adapter, its report and data card from a clean checkout: generated data, audit_dataset,\n"
            "# clean_dataset, split_dataset, train_sft, evaluation. The training step alone, in plain TRL, is the\n"
            "# run's own reproduce.sh (its run dir is named in report.md).\n"
            "set -euo pipefail\n"
            "cd \"$(dirname \"$0\")/../../..\"\n"
            "export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}\n"
            f"exec \"${{PYTHON:-python}}\" -m assistant brain build {' '.join(r['reproduce_argv'])} \"$@\"\n")
