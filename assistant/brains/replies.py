"""What the brain says, written from facts only: tool outputs, the tool registry and the project state.

After a tool result: what happened, with the numbers that matter (findings by check, the decision and its
reasons, loss before/after, metric deltas with intervals, a running job's step, loss and ETA) and the next
step. Questions about ftpilot itself are answered from the registry and the project. Nothing here is generated
by a model, so nothing here can be invented; a tool's output is read as data, field by field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def result_body(content: Any) -> dict:
    """A tool message's content as {"output": ...} or {"error": ...}. The agent may wrap results in an envelope
    that marks them as untrusted data (`untrusted_data`, `tool`): those keys are dropped, nothing in the
    output is ever taken as an instruction."""
    if isinstance(content, str):
        try:
            content = json.loads(content or "null")
        except json.JSONDecodeError:
            return {"output": {"text": content}}
    if not isinstance(content, dict):
        return {"output": {"value": content}}
    body = {k: v for k, v in content.items() if k not in ("untrusted_data", "tool")}
    return body if ("output" in body or "error" in body) else {"output": body}


def _n(x, nd: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{nd}f}".rstrip("0").rstrip(".") if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def _dur(s) -> str:
    if not isinstance(s, (int, float)):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _ci(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = (m.get("ci95") or [None, None])[:2]
    return f"{_n(m['value'])} [{_n(lo)}, {_n(hi)}]" if lo is not None else _n(m["value"])


# --- one function per tool ----------------------------------------------------------------------------------

def audit_dataset(o: dict, args: dict) -> str:
    lines = [f"Audited `{args.get('path', '?')}`: {o.get('rows')} rows, format {o.get('format')}."]
    findings = sorted(o.get("findings") or [], key=lambda f: SEVERITY_ORDER.get(f.get("severity"), 3))
    if not findings:
        lines.append("No findings: every check passed.")
    for f in findings[:8]:
        rows = f.get("rows") or []
        where = f" (rows {', '.join(map(str, rows[:5]))}{'…' if len(rows) > 5 else ''})" if rows else ""
        lines.append(f"- **{f.get('severity')}** {f.get('check')}: {f.get('count')}{where}. {f.get('message', '')}")
    if len(findings) > 8:
        lines.append(f"- and {len(findings) - 8} more in the report")
    for r in (o.get("recommendations") or [])[:3]:
        lines.append(f"Recommendation: {r}")
    if o.get("report_path"):
        lines.append(f"Report: `{o['report_path']}` (/audits shows it).")
    return "\n".join(lines)


def clean_dataset(o: dict, args: dict) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in (o.get("reasons") or {}).items()) or "none"
    return (f"Cleaned `{args.get('path', '?')}`: {o.get('input_rows')} → {o.get('output_rows')} rows in "
            f"`{o.get('out_path')}`; dropped {o.get('dropped')}, changed {o.get('changed')} (by reason: {reasons}). "
            f"Every change is listed in `{o.get('manifest_path')}`. The original is untouched.")


def split_dataset(o: dict, args: dict) -> str:
    strat = "stratified by label" if o.get("stratified") else "not stratified (no label set)"
    return (f"Split `{args.get('path', '?')}` (seed {o.get('seed')}, {strat}): {o.get('train_rows')} train rows in "
            f"`{o.get('train_path')}`, {o.get('eval_rows')} eval rows in `{o.get('eval_path')}`; "
            f"{o.get('duplicate_groups')} duplicate group(s) kept on one side.")


def inspect_dataset(o: dict, args: dict) -> str:
    lines = [f"`{o.get('path')}`: {o.get('rows')} rows, format {o.get('format')} ({o.get('kind')}), "
             f"{o.get('malformed')} malformed; fields: {', '.join(o.get('fields') or []) or 'none'}."]
    for i, ex in enumerate((o.get("examples") or [])[:3]):
        text = json.dumps(ex, ensure_ascii=False)
        lines.append(f"- example {i + 1}: {text[:300]}{'…' if len(text) > 300 else ''}")
    return "\n".join(lines)


def create_sample_dataset(o: dict, args: dict) -> str:
    rows = o.get("rows") or {}
    return (f"Wrote the sample task: `{o.get('train_path')}` ({rows.get('train', '?')} rows) and "
            f"`{o.get('eval_path')}` ({rows.get('eval', '?')} rows), format {o.get('format')}.")


def generate_synthetic(o: dict, args: dict) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in (o.get("counts") or {}).items())
    return (f"Generated {o.get('rows_written')} rows into `{o.get('out_path')}` (seeds untouched). "
            f"Through the filters: {counts}. Provenance: `{o.get('manifest_path')}`.")


def recommend_strategy(o: dict, args: dict) -> str:
    lines = [f"Recommendation: **{o.get('recommendation')}**. {o.get('summary', '')}".strip()]
    for r in (o.get("reasons") or [])[:6]:
        lines.append(f"- {r.get('rule')} (favours {r.get('favours')}): {r.get('detail')}")
    if o.get("missing_data"):
        lines.append("Missing: " + "; ".join(o["missing_data"]))
    return "\n".join(lines)


def plan_training(o: dict, args: dict) -> str:
    est = o.get("estimate") or {}
    lines = [f"{'Fits' if o.get('fits') else 'Does not fit'}: {o.get('method')} in {o.get('precision')}, batch "
             f"{o.get('batch_size')} × accumulation {o.get('grad_accum')}, gradient checkpointing "
             f"{'on' if o.get('gradient_checkpointing') else 'off'}; peak about {_n(est.get('total_mb'), 0)} MB of "
             f"a {_n(o.get('budget_mb'), 0)} MB budget."]
    if o.get("expected_minutes") is not None:
        lines.append(f"About {_n(o['expected_minutes'], 1)} min for {o.get('expected_steps')} steps.")
    lines += [f"- {x}" for x in (o.get("notes") or [])[:4]]
    return "\n".join(lines)


def run_started(o: dict, args: dict, tool: str = "train_sft") -> str:
    m = o.get("metrics") or {}
    status = o.get("status")
    if status == "succeeded":
        return (f"Run `{o.get('job_id')}` succeeded: {m.get('global_step', '?')} steps in "
                f"{_dur(m.get('train_runtime_s'))}; train loss {_n(m.get('train_loss_first'))} → {_n(m.get('train_loss'))}"
                + (f"; eval loss {_n(m.get('eval_loss_before'))} → {_n(m.get('eval_loss'))}" if "eval_loss" in m else "")
                + (f". Adapter: `{o['adapter_path']}`." if o.get("adapter_path") else "."))
    if status in ("failed", "cancelled"):
        return f"Run `{o.get('job_id')}` {status}: {o.get('error') or 'no error recorded'}. Log: `{o.get('log_path')}`."
    plan = o.get("plan") or {}
    eta = f", planned about {_n(plan.get('expected_minutes'), 1)} min" if plan.get("expected_minutes") else ""
    return (f"Started {tool} as job `{o.get('job_id')}` ({status}{eta}); it runs in the background and I will "
            f"report when it ends. Ask \"how is it going?\" any time, or open /runs.")


def run_status(o: dict, args: dict) -> str:
    job = o.get("job") or {}
    last = o.get("last_metrics") or {}
    res = job.get("result") or {}
    m = res.get("metrics") or {}
    step = f"step {job.get('step') or 0}/{job.get('total_steps') or '?'}"
    head = f"Run `{job.get('job_id')}` ({job.get('kind')}, {job.get('method')}) is **{job.get('status')}**"
    if job.get("status") == "running" or job.get("status") == "queued":
        parts = [step]
        if isinstance(last.get("loss"), (int, float)):
            parts.append(f"loss {_n(last['loss'])}")
        if last.get("s_per_step"):
            parts.append(f"{_n(last['s_per_step'], 1)} s/step")
        parts.append(f"about {_dur(o['eta_s'])} left" if o.get("eta_s") is not None else "ETA not known yet")
        text = f"{head}: " + ", ".join(parts) + "."
    elif job.get("status") == "succeeded":
        text = (f"{head}: {m.get('global_step', job.get('step'))} steps; train loss {_n(m.get('train_loss_first'))} → "
                f"{_n(m.get('train_loss'))}" + (f"; eval loss {_n(m.get('eval_loss_before'))} → {_n(m.get('eval_loss'))}"
                                                 if "eval_loss" in m else "") + ".")
    else:
        text = f"{head} at {step}" + (f": {job.get('error')}" if job.get("error") else "") + "."
    if o.get("checkpoint"):
        text += f" Last checkpoint: `{o['checkpoint']}`."
    return text


def list_runs(o: dict, args: dict) -> str:
    runs = o.get("runs") or []
    if not runs:
        return "No runs yet" + (f" with status {args['status']}" if args.get("status") else "") + "."
    lines = [f"{len(runs)} run(s), newest first:"]
    for r in runs[:10]:
        loss = (r.get("metrics") or {}).get("train_loss")
        lines.append(f"- `{r.get('job_id')}` {r.get('kind')} {r.get('status')}, step {r.get('step') or 0}/"
                     f"{r.get('total_steps') or '?'}" + (f", final loss {_n(loss)}" if loss is not None else ""))
    return "\n".join(lines)


def cancel_run(o: dict, args: dict) -> str:
    ck = f"; checkpoint `{o['checkpoint']}` (resume_run continues from it)" if o.get("checkpoint") else ""
    return f"Run `{o.get('job_id')}` is now {o.get('status')}{ck}."


def evaluate(o: dict, args: dict) -> str:
    lines = [f"Evaluated on {o.get('n')} rows (95% bootstrap intervals):"]
    for r in o.get("results") or []:
        ms = r.get("metrics") or {}
        lines.append(f"- {r.get('name')}: " + ", ".join(f"{k} {_ci(v)}" for k, v in list(ms.items())[:4]))
    for c in o.get("comparisons") or []:
        for k, d in list((c.get("metrics") or {}).items())[:4]:
            sig = "the interval excludes 0" if d.get("excludes_zero") else "the interval includes 0: no clear difference"
            lines.append(f"- {c.get('candidate')} vs {c.get('baseline')}, {k}: {d.get('delta'):+.3f} "
                         f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] ({sig})")
    if o.get("report_path"):
        lines.append(f"Report: `{o['report_path']}` (/evals shows it).")
    return "\n".join(lines)


def export_model(o: dict, args: dict) -> str:
    return (f"Merged `{o.get('adapter_path')}` into `{o.get('merged_dir')}` ({o.get('size_mb')} MB safetensors). "
            f"Serve it with `{o.get('serve_merged')}`, or the base with the adapter: `{o.get('serve_adapter')}`.")


def probe_hardware(o: dict, args: dict) -> str:
    gpus = o.get("gpus") or []
    gpu = ", ".join(f"{g.get('name')} ({g.get('memory_gb')} GB)" for g in gpus) or "no GPU"
    return (f"This machine: {o.get('cpu_model')}, {o.get('cpu_cores')} cores, {o.get('ram_gb')} GB RAM; {gpu}; "
            f"device {o.get('device')}, bf16 {'yes' if o.get('bf16') else 'no'}.")


SUMMARIES: dict[str, Callable[[dict, dict], str]] = {
    "audit_dataset": audit_dataset, "clean_dataset": clean_dataset, "split_dataset": split_dataset,
    "inspect_dataset": inspect_dataset, "create_sample_dataset": create_sample_dataset,
    "generate_synthetic": generate_synthetic, "recommend_strategy": recommend_strategy,
    "plan_training": plan_training, "train_sft": run_started,
    "train_dpo": lambda o, a: run_started(o, a, "train_dpo"), "distill": lambda o, a: run_started(o, a, "distill"),
    "resume_run": lambda o, a: run_started(o, a, "resume_run"), "run_status": run_status, "list_runs": list_runs,
    "cancel_run": cancel_run, "evaluate": evaluate, "export_model": export_model, "probe_hardware": probe_hardware,
}
# The step worth proposing after a tool succeeded (the plan panel's own order).
NEXT = {"create_sample_dataset": ("audit the data", "/audit"), "audit_dataset": ("clean it or train", "/clean, /train"),
        "clean_dataset": ("train on the cleaned copy", "/train"), "split_dataset": ("train", "/train"),
        "generate_synthetic": ("audit the new rows", "/audit"), "recommend_strategy": ("train", "/train"),
        "train_sft": ("evaluate against the base", "/eval"), "train_dpo": ("evaluate against the base", "/eval"),
        "distill": ("evaluate against the base", "/eval"), "evaluate": ("export it", "/export")}


def summarize(name: str, content: Any, args: dict | None = None) -> str:
    """One tool result in plain words, from its fields."""
    body = result_body(content)
    if body.get("error"):
        return error_text(name, body["error"])
    out = body.get("output")
    fn = SUMMARIES.get(name)
    if fn is None or not isinstance(out, dict):
        return generic(name, out)
    try:
        return fn(out, args or {})
    except (KeyError, TypeError, ValueError, AttributeError):  # an output shape this version does not know
        return generic(name, out)


def error_text(name: str, err: dict) -> str:
    if not isinstance(err, dict):
        return f"`{name}` failed: {err}"
    lines = [f"`{name}` did not run: {err.get('message', err)}" if err.get("code") in (
        "rejected_by_person", "validation_error", "repeated_call", "unknown_tool", "invalid_json")
        else f"`{name}` failed: {err.get('message', err)}"]
    for f in (err.get("fields") or [])[:5]:
        lines.append(f"- `{f.get('loc')}`: {f.get('msg')}")
    if err.get("hint"):
        lines.append(f"Hint: {err['hint']}")
    return "\n".join(lines)


def generic(name: str, out: Any) -> str:
    """A tool this module has no words for: its scalar fields, as they are."""
    if not isinstance(out, dict):
        return f"`{name}` returned: {str(out)[:300]}"
    items = [f"- {k}: {str(v)[:200]}" for k, v in out.items() if isinstance(v, (str, int, float, bool))][:12]
    return "\n".join([f"`{name}` finished:"] + items)


def next_step_text(name: str | None, ok: bool, context: dict) -> str:
    if ok and name in NEXT:
        what, slash = NEXT[name]
        return f"Next: {what} ({slash})."
    if context.get("next_step"):
        return f"Next suggested step: **{context['next_step']}** (`{context.get('next_slash', '')}`)."
    return ""


# --- questions about ftpilot itself --------------------------------------------------------------------------

# "What can you do?" and its close kin are answered from the registry without asking the router: the adapter's
# build held this phrasing family out and routed it to chat (margin 0.11); a question about ftpilot itself must
# never become a call or free prose.
HELP_QUESTION = re.compile(r"^\s*(?:so\s+|ok(?:ay)?\s+|hi\W+|hey\W+)?(?:what\s+(?:else\s+)?can\s+(?:you|i)\s+"
                           r"(?:do|ask(?:\s+you)?)(?:\s+(?:for\s+me|here|with\s+you))?|what\s+(?:are\s+)?(?:your|my)\s+"
                           r"(?:options|commands|tools)|what\s+tools\s+do\s+you\s+have|help|commands)\s*[?.!]*\s*$", re.I)


def is_help_question(text: str) -> bool:
    return bool(HELP_QUESTION.match(text or ""))


def capabilities(tools: dict) -> str:
    lines = ["I act through ftpilot's tools; each one you can also run from the plan panel or a slash command:"]
    for name, t in sorted(tools.items()):
        lines.append(f"- **{name}**: {t.description}")
    lines.append("Ask in plain words (\"audit data/train.jsonl\", \"train on it for 30 steps\", \"how is the run "
                 "going?\"); jobs that train, generate or delete ask for your approval first. /help lists the keys.")
    return "\n".join(lines)


def project_summary(project) -> str:
    lines = ["What this project holds:"]
    lines.append(f"- task: {project.task or 'not stated yet'}; base model: {project.base_model}")
    for d in project.datasets[-6:]:
        lines.append(f"- {d.get('role')} data: `{d.get('path')}` (from {d.get('source')})")
    if not project.datasets:
        lines.append("- no data yet (create_sample_dataset writes a sample task)")
    for a in project.audits[-2:]:
        lines.append(f"- audit of `{(a.get('args') or {}).get('path', '?')}`: {a.get('rows', '?')} rows")
    for r in project.runs[-4:]:
        lines.append(f"- run `{r.get('job_id')}` ({r.get('tool')}): {r.get('status')}")
    for e in project.evaluations[-2:]:
        lines.append(f"- evaluation on `{(e.get('args') or {}).get('eval_path', '?')}`")
    if project.decision:
        lines.append(f"- decision: {project.decision.get('recommendation', '?')}")
    nxt = project.next_step()
    lines.append(f"Next suggested step: **{nxt.title}** (`{nxt.slash}`).")
    return "\n".join(lines)


def unclear(paths: list[str]) -> str:
    what = f" for `{paths[0]}`" if paths else ""
    return (f"I can't tell which step you mean{what}: audit, clean or train? Say it in a few words "
            "(\"audit it\", \"clean it\", \"train on it for 30 steps\") or use /audit, /clean, /train.")


def clarify(best: str, runner_up: str | None, tools: dict) -> str:
    def say(n: str) -> str:
        t = tools.get(n)
        return f"**{n}** ({t.description.split(';')[0].split('.')[0].lower()})" if t else f"**{n}**"

    if runner_up is None or runner_up not in tools:
        return f"Do you mean {say(best)}? Say it in a few more words, or use its slash command, and I'll start it."
    return f"Do you mean {say(best)} or {say(runner_up)}? Say which (or use its slash command) and I'll start it."


def missing(name: str, fields: list[str]) -> str:
    if fields == ["job_id"]:
        return (f"There is no run in this project for {name} yet: start one with /train, or name a job id "
                "(/runs lists them).")
    return (f"To run {name} I need {', '.join(f'`{f}`' for f in fields)}: say it (e.g. a path like data/train.jsonl) "
            f"or open the step from the plan panel to fill its form.")


GLOSSARY = {
    "qlora": "QLoRA is LoRA on a base model loaded in 4-bit (nf4): much less memory for the frozen weights, "
             "a little slower per step.",
    "lora": "LoRA trains two small low-rank matrices beside each chosen weight matrix and keeps the base frozen, "
            "so an adapter is a few MB and one base can serve many adapters.",
    "dpo": "DPO (direct preference optimisation) trains on pairs of a chosen and a rejected answer to the same "
           "prompt, pulling the model towards the chosen one without a separate reward model.",
    "sft": "SFT (supervised fine-tuning) trains on prompts with their reference answers; ftpilot puts the loss on "
           "the answers only.",
    "distil": "Distillation trains a smaller student to match a larger teacher's outputs (its token distributions "
              "or its answers).",
    "perplexity": "Perplexity is exp(mean token loss) of reference answers: lower means the model finds them "
                  "more likely.",
    "overfit": "Overfitting: training loss keeps falling while loss on held-out data rises; watch the eval loss.",
    "eval loss": "Eval loss is the mean token loss on held-out rows: it shows whether training generalises.",
    "rag": "RAG (retrieval-augmented generation) puts retrieved documents in the prompt instead of training "
           "knowledge into the weights.",
}


def glossary(text: str) -> str | None:
    low = text.lower()
    for key, answer in GLOSSARY.items():
        if key in low:
            return answer
    return None


def small_talk(text: str) -> str | None:
    low = text.lower().strip(" !.?")
    if any(w in low for w in ("thank", "cheers", "great", "perfect", "nice", "cool")):
        return "Glad it helped."
    if low in ("hi", "hello", "hey", "good morning", "good evening", "hello there", "hi ftpilot") or \
            low.startswith(("hi ", "hello", "hey ", "good morning", "good evening")):
        return "Hello. I help you fine-tune a small model on your data: audit it, train, evaluate, export."
    return None
