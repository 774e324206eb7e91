"""`recommend_strategy`: fine-tune or keep prompting, decided from measurements on the person's own data.

The rules are the fine-tuning guide's (shared/seed/fine-tuning-guide-overview.txt), each applied to a number:
- fine-tune when there are 100+ good labeled examples AND at least one of: a 20%+ quality gap between the best
  prompted baseline and the quality needed, a latency budget under ~100 ms, a high-volume budget-constrained
  workload;
- keep prompting for one-off or high-variance queries, or when few-shot prompting already reaches the target;
- point to retrieval when the gap is missing knowledge (well-formed but wrong open answers), not form;
- preference tuning wants 5,000-50,000 ranked pairs; task-specific LoRA 100-500 examples.
The baseline (zero-shot and k-shot prompting of the chosen model on the eval split) is measured with `evaluate`
and stored; the time/cost estimate comes from `plan_training`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tools.dataset.audit import COLUMNS_FIELD
from tools.registry import ToolInput, tool

MIN_EXAMPLES = 100          # guide: "100+ labeled examples"; 100-500 often suffice with LoRA
GAP_THRESHOLD = 0.20        # guide: "a 20%+ quality gap versus prompting"
LATENCY_MS = 100.0          # guide: "tight latency budgets (<100 ms)"
HIGH_VOLUME = 100_000       # requests/month we call high volume (documented default)
PREF_PAIRS_MIN = 5_000      # guide: "Preference tuning (RLHF) needs 5,000-50,000 ranked pairs"


class RecommendInput(ToolInput):
    task: str = Field(description="what the model should do, in a sentence or two")
    train_path: str = Field(description="labeled examples (SFT formats); the few-shot demonstrations come from here")
    eval_path: str | None = Field(None, description="held-out eval split; default: a seeded sample of 20% of "
                                                    "train_path (max 60 rows, stratified by label) is held out and "
                                                    "not used for demonstrations")
    preference_path: str | None = Field(None, description="ranked pairs, if preference tuning is considered")
    columns: dict[str, str] | None = COLUMNS_FIELD
    model: str = Field("default", description="the model that would be prompted or fine-tuned")
    few_shot: int = Field(3, ge=1, le=16, description="k for the few-shot baseline")
    metric: Literal["auto", "accuracy", "exact_match", "rouge_l", "f1"] = Field(
        "auto", description="quality metric; auto: accuracy for label sets, exact_match for short answers, "
                            "else rouge_l")
    target_quality: float = Field(0.9, gt=0, le=1, description="the quality the task needs on that metric")
    latency_budget_ms: float | None = Field(None, gt=0, description="per-request latency budget in ms")
    monthly_requests: int | None = Field(None, ge=0, description="expected requests per month")
    budget_constrained: bool = Field(False, description="inference cost per request matters (low margin)")
    workload: Literal["steady", "one_off", "high_variance"] = Field(
        "steady", description="steady: the same task over and over; one_off / high_variance favour prompting")
    eval_limit: int = Field(60, ge=10, le=2000, description="eval rows measured, a seeded sample stratified by "
                                                            "label (more: tighter CIs, slower)")
    hourly_cost_usd: float | None = Field(None, ge=0, description="what an hour of this machine costs, for the "
                                                                  "training cost estimate")
    reuse_baseline: bool = Field(True, description="reuse a stored baseline for the same eval file, model and k")


class Reason(BaseModel):
    rule: str
    favours: Literal["fine_tune", "prompt", "retrieval", "more_data", "neutral"]
    value: float | int | str | None
    threshold: float | int | str | None
    detail: str


class RecommendOutput(BaseModel):
    recommendation: Literal["fine_tune", "prompt", "collect_data", "retrieval"]
    summary: str
    reasons: list[Reason]
    missing_data: list[str]
    baseline: dict
    audit: dict | None
    estimate: dict | None
    evaluation_id: int | None = None


def _clean_count(audit: dict) -> tuple[int, dict]:
    """Valid rows minus rows with an error finding or a duplicate: 'good labeled examples'."""
    bad: set[int] = set()
    by_check: dict[str, int] = {}
    for f in audit.get("findings", []):
        if f["severity"] == "error" or f["check"] in ("exact_duplicate", "near_duplicate"):
            bad.update(f.get("rows") or [])
            by_check[f["check"]] = f["count"]
    valid = int(audit.get("summary", {}).get("valid_rows", audit.get("rows", 0)))
    return max(0, valid - len(bad)), by_check


@tool("recommend_strategy", "Fine-tune or prompt? Measures zero/few-shot baselines on your data, applies the "
                            "guide's rules with the number behind each reason, says what data is missing.",
      cost="cpu_job")
def recommend_strategy(args: RecommendInput) -> RecommendOutput:
    from runtime.errors import FtpilotError
    from runtime.paths import data_subdir, resolve_path, sha256_file
    from tools import _evalcore as ec
    from tools.dataset.audit import AuditDatasetInput, audit_dataset

    train_file = resolve_path(args.train_path, must_exist=True)
    train = ec.load_examples(train_file, columns=args.columns)
    notes: list[str] = []
    missing: list[str] = []
    work = data_subdir("recommendations") / f"rec-{sha256_file(train_file)[:10]}"

    # --- the eval split ----------------------------------------------------------------------------
    columns = args.columns
    if args.eval_path:
        eval_file = resolve_path(args.eval_path, must_exist=True)
        shots_file = train_file
    else:
        eval_file, shots_file, n_eval = _hold_out(train, train_file, work)
        columns = None  # the held-out files are written in TRL's messages format
        missing.append(f"a separate eval split: {n_eval} rows of the train file (a seeded sample, stratified by "
                       "label) were held out for this measurement")
    evals = ec.load_examples(eval_file, columns=columns)
    labels = ec.label_set([e.reference for e in evals + train])  # as evaluate decides: all references at hand
    metric = args.metric
    if metric == "auto":
        short = sorted(len(e.reference.split()) for e in evals)[len(evals) // 2] <= 5
        metric = "accuracy" if labels else ("exact_match" if short else "rouge_l")
    if metric in ("accuracy", "f1") and not labels:
        metric = "exact_match"
        notes.append("answers do not form a label set: exact_match used instead of accuracy/f1")

    # --- audit -------------------------------------------------------------------------------------
    clean = len(train)
    try:
        audit = audit_dataset(AuditDatasetInput(path=str(train_file), model=args.model, columns=args.columns,
                                                eval_path=str(eval_file) if args.eval_path else None))
        clean, bad = _clean_count(audit.model_dump())
        audit_out = {"audit_id": audit.audit_id, "rows": audit.rows, "clean_examples": clean,
                     "removed_by_check": bad, "report_path": audit.report_path,
                     "recommendations": audit.recommendations}
    except FtpilotError as e:
        audit_out = {"error": e.to_dict(), "clean_examples": None,
                     "note": f"audit_dataset unavailable; counted {len(train)} readable rows instead"}

    # --- the measured baseline -----------------------------------------------------------------------
    eval_sha = sha256_file(eval_file)
    baseline = _reuse_baseline(eval_sha, args) if args.reuse_baseline else None
    if baseline is None:
        baseline = _measure_baseline(args, eval_file, shots_file, metric, labels, columns)
    else:
        baseline["reused"] = True
    zs, fs = baseline["zero_shot"]["value"], baseline["few_shot_score"]["value"]
    best_prompt = max(zs, fs)
    best_name = "few-shot" if fs >= zs else "zero-shot"
    gap = round(args.target_quality - best_prompt, 4)
    cov = baseline["sample"].get("coverage")
    if cov and cov["covered"] < cov["labels"]:
        missing.append(f"a baseline over every label: the {baseline['n']} rows measured cover {cov['covered']} of "
                       f"{cov['labels']} labels (raise eval_limit to {cov['labels']} or more)")

    # --- the rules -----------------------------------------------------------------------------------
    reasons: list[Reason] = []
    reasons.append(Reason(
        rule="quality gap vs prompting", favours="fine_tune" if gap >= GAP_THRESHOLD else "prompt",
        value=gap, threshold=GAP_THRESHOLD,
        detail=f"best prompted {metric} is {best_prompt:.3f} ({best_name}, {args.few_shot}-shot "
               f"{fs:.3f} {_ci(baseline['few_shot_score'])}, zero-shot {zs:.3f} {_ci(baseline['zero_shot'])}; "
               f"{_measured_on(baseline)}); the target is {args.target_quality:.2f}, so the gap is {gap:+.3f} "
               f"({'at or above' if gap >= GAP_THRESHOLD else 'below'} the guide's 20%)"))
    enough = clean >= MIN_EXAMPLES
    reasons.append(Reason(
        rule="labeled examples", favours="neutral" if enough else "more_data", value=clean, threshold=MIN_EXAMPLES,
        detail=f"{clean} good labeled examples after the audit (guide: fine-tune with 100+; 100-500 often suffice "
               "for a task-specific LoRA)" + ("" if audit_out.get("clean_examples") is not None
                                             else "; audit unavailable, readable rows counted")))
    if args.latency_budget_ms is not None:
        single = _single_request_latency(args, eval_file, shots_file, columns)
        p50_ms = single["few_shot_p50_ms"]
        tight = args.latency_budget_ms < LATENCY_MS
        reasons.append(Reason(
            rule="latency budget", favours="fine_tune" if tight else "neutral", value=args.latency_budget_ms,
            threshold=LATENCY_MS,
            detail=f"budget {args.latency_budget_ms:.0f} ms ({'under' if tight else 'not under'} ~100 ms); the "
                   f"{args.few_shot}-shot prompt is {baseline['prompt_tokens_mean']['few_shot']:.0f} tokens vs "
                   f"{baseline['prompt_tokens_mean']['zero_shot']:.0f} zero-shot; one request at a time on this machine "
                   f"takes p50 {p50_ms:.0f} ms few-shot vs {single['zero_shot_p50_ms']:.0f} ms zero-shot "
                   f"({single['n']} requests each): a fine-tuned small model drops the demonstrations"))
    if args.monthly_requests is not None or args.budget_constrained:
        vol = args.monthly_requests or 0
        extra = baseline["prompt_tokens_mean"]["few_shot"] - baseline["prompt_tokens_mean"]["zero_shot"]
        high = vol >= HIGH_VOLUME and args.budget_constrained or vol >= 10 * HIGH_VOLUME
        reasons.append(Reason(
            rule="volume and cost", favours="fine_tune" if high else "neutral", value=vol, threshold=HIGH_VOLUME,
            detail=f"{vol:,} requests/month, budget-constrained={args.budget_constrained}; few-shot prompting adds "
                   f"{extra:.0f} prompt tokens per request = {extra * vol / 1e6:.1f} M tokens/month that a "
                   "fine-tuned model does not pay"))
    if args.workload != "steady":
        reasons.append(Reason(rule="workload", favours="prompt", value=args.workload, threshold="steady",
                              detail=f"{args.workload.replace('_', '-')} queries: the guide keeps prompting for these "
                                     "(simpler to iterate, no training to redo when the queries change)"))
    knowledge_words = ("fact", "knowledge", "document", "policy", "catalog", "manual", "wiki", "faq", "lookup")
    retrieval = (not labels and gap >= GAP_THRESHOLD and any(w in args.task.lower() for w in knowledge_words))
    if retrieval:
        reasons.append(Reason(rule="knowledge vs form", favours="retrieval", value=best_prompt, threshold=None,
                              detail="open-ended answers that need facts the model lacks: retrieval (put the "
                                     "documents in the prompt) closes a knowledge gap; fine-tuning teaches form"))
    pref = None
    if args.preference_path:
        from runtime.dataio import count_records

        pref = count_records(resolve_path(args.preference_path, must_exist=True))
        reasons.append(Reason(rule="preference pairs", favours="neutral" if pref >= PREF_PAIRS_MIN else "more_data",
                              value=pref, threshold=PREF_PAIRS_MIN,
                              detail=f"{pref} ranked pairs; preference tuning wants 5,000-50,000"))
        if pref < PREF_PAIRS_MIN:
            missing.append(f"{PREF_PAIRS_MIN - pref} more ranked preference pairs before DPO is worth it "
                           f"(have {pref}, the guide says 5,000-50,000)")

    ft_triggers = [r for r in reasons if r.favours == "fine_tune"]
    if args.workload != "steady" and gap < GAP_THRESHOLD:
        rec = "prompt"
    elif retrieval:
        rec = "retrieval"
    elif ft_triggers and args.workload == "steady":
        rec = "fine_tune" if enough else "collect_data"
    else:
        rec = "prompt"
    if not enough:
        missing.append(f"{MIN_EXAMPLES - clean} more good labeled examples (have {clean}, need {MIN_EXAMPLES}+): "
                       "label more, or generate_synthetic from your seeds and audit the result")
    if baseline["n"] < 50:
        missing.append(f"a larger eval split: {baseline['n']} rows give wide confidence intervals (aim for 100+)")

    # --- time/cost estimate --------------------------------------------------------------------------
    estimate = None
    if rec in ("fine_tune", "collect_data"):
        from tools.training import PlanTrainingInput, plan_training

        try:
            plan = plan_training(PlanTrainingInput(model=args.model, train_path=str(train_file), method="lora"))
        except FtpilotError as e:
            estimate = {"error": e.to_dict(), "note": "plan_training unavailable: no time/cost estimate"}
        else:
            mins = plan.expected_minutes
            estimate = {"training_minutes": mins, "plan": plan.model_dump(mode="json"),
                        "hardware": _hardware_line(),
                        "cost_usd": (round(mins / 60 * args.hourly_cost_usd, 4)
                                     if mins is not None and args.hourly_cost_usd is not None else None),
                        "cost_note": "machine time on this hardware" + (
                            f" at ${args.hourly_cost_usd}/h" if args.hourly_cost_usd is not None
                            else "; give hourly_cost_usd for a price")}

    summaries = {
        "fine_tune": f"Fine-tune: prompting reaches {best_prompt:.2f} {metric} against a {args.target_quality:.2f} "
                     f"target (gap {gap:+.2f}), and you have {clean} good examples.",
        "collect_data": f"Fine-tuning would pay off (gap {gap:+.2f}), but {clean} good examples are fewer than "
                        f"{MIN_EXAMPLES}: collect or synthesize more first.",
        "prompt": f"Keep prompting: {best_name} prompting already reaches {best_prompt:.2f} {metric} "
                  f"(target {args.target_quality:.2f}, gap {gap:+.2f})" + (
                      "" if args.workload == "steady" else f", and the workload is {args.workload}") + ".",
        "retrieval": f"Use retrieval first: the gap ({gap:+.2f}) looks like missing knowledge, not form.",
    }
    result = RecommendOutput(recommendation=rec, summary=summaries[rec], reasons=reasons, missing_data=missing,
                             baseline=baseline, audit=audit_out, estimate=estimate)
    from runtime.store import Evaluation, add

    row = add(Evaluation(eval_path=str(eval_file), dataset_sha256=eval_sha, report_path=baseline.get("report_path"),
                         results={"kind": "recommendation", "recommendation": rec, "metric": metric,
                                  "best_prompt_score": best_prompt, "gap": gap, "target": args.target_quality,
                                  "model": args.model, "few_shot": args.few_shot, "baseline": baseline,
                                  "task": args.task, "reasons": [r.model_dump() for r in reasons], "notes": notes}))
    result.evaluation_id = row.id
    return result


def _hold_out(train: list, train_file, work):
    """Without an eval file: a seeded sample of the train rows, stratified by label (20%, 5 to 60 rows), is held
    out for measuring; the rest give the demonstrations. Both are written to the work folder in the data dir."""
    from runtime.errors import BadInput
    from runtime.outputs import write_jsonl
    from tools import _evalcore as ec

    if len(train) < 10:
        raise BadInput(f"{train_file.name} has {len(train)} rows: too few to hold out an eval split",
                       hint="Give an eval_path, or collect more examples (the guide: 100+).")
    n_eval = min(60, max(5, len(train) // 5))
    held = ec.sample_examples(train, n_eval, seed=0, labels=ec.label_set([e.reference for e in train]))
    rows = {e.row for e in held}

    def record(e) -> dict:
        return {"messages": e.prompt + [{"role": "assistant", "content": e.reference}]}

    eval_file = write_jsonl(work / "heldout_eval.jsonl", [record(e) for e in held], overwrite=True)
    shots_file = write_jsonl(work / "heldout_train.jsonl", [record(e) for e in train if e.row not in rows],
                             overwrite=True)
    return eval_file, shots_file, n_eval


def _measure_baseline(args: RecommendInput, eval_file, shots_file, metric: str, labels, columns) -> dict:
    """Zero-shot and k-shot prompting of the model, measured by `evaluate` on a seeded sample of the eval rows
    (stratified by label), so a label-sorted file is not judged by its first labels."""
    from tools.evaluate import Candidate, EvaluateInput, run_evaluation

    k = args.few_shot
    o = run_evaluation(EvaluateInput(
        eval_path=str(eval_file), train_path=str(shots_file), sample=args.eval_limit, columns=columns,
        candidates=[Candidate(model=args.model, name="zero_shot"),
                    Candidate(model=args.model, few_shot=k, name=f"{k}_shot")],
        metrics=sorted({metric, "exact_match"} | ({"accuracy", "f1"} if labels else set()))))
    by = {r["name"]: r for r in o.results}
    z, f = by["zero_shot"], by[f"{k}_shot"]
    return {"metric": metric, "model": args.model, "few_shot": k, "n": o.n, "eval_limit": args.eval_limit,
            "sample": o.sample or {"n": o.n, "of": o.n, "seed": 0, "stratified": False, "coverage": None},
            "decoding": o.decoding, "zero_shot": z["metrics"][metric], "few_shot_score": f["metrics"][metric],
            "few_shot_vs_zero": o.comparisons[0]["metrics"].get(metric) if o.comparisons else None,
            "latency_p50_s": {"zero_shot": z["latency_s"]["p50"], "few_shot": f["latency_s"]["p50"]},
            "prompt_tokens_mean": {"zero_shot": z["prompt_tokens_mean"], "few_shot": f["prompt_tokens_mean"]},
            "report_path": o.report_path, "evaluation_id": o.evaluation_id, "reused": False}


def _measured_on(baseline: dict) -> str:
    """n, how the rows were chosen and the labels they cover, for the reasons."""
    s = baseline["sample"]
    cov = s.get("coverage")
    how = (f"a seeded sample of {s['of']} eval rows" + (", stratified by label" if s["stratified"] else "")
           if s["n"] < s["of"] else "every eval row")
    return f"n={baseline['n']}, {how}" + (f", covering {cov['covered']} of {cov['labels']} labels" if cov else "")


def _single_request_latency(args: RecommendInput, eval_file, shots_file, columns, n: int = 3) -> dict:
    """Unbatched latency, the number a per-request budget is about: n requests one at a time, each way."""
    import time

    import numpy as np

    from runtime.engines import Sampling, get_engine
    from tools import _evalcore as ec
    from tools.evaluate import DEFAULT_ENGINE

    eng = get_engine(f"{DEFAULT_ENGINE}:{args.model}")
    evals = ec.load_examples(eval_file, n, columns=columns)
    shots = ec.select_shots(ec.load_examples(shots_file, columns=columns), args.few_shot)
    budget = ec.answer_token_budget(eng, [e.reference for e in evals])
    out = {"n": len(evals)}
    for key, sh in (("zero_shot", []), ("few_shot", shots)):
        times = []
        for e in evals:
            t0 = time.perf_counter()
            eng.generate([ec.build_messages(e, shots=sh)], Sampling(max_new_tokens=budget))
            times.append((time.perf_counter() - t0) * 1000)
        out[f"{key}_p50_ms"] = round(float(np.median(times)), 1)
    return out


def _hardware_line() -> str:
    from runtime.hardware import probe

    hw = probe()
    gpus = ", ".join(f"{g.name} {g.memory_gb} GB" for g in hw.gpus) or "no GPU"
    return f"{hw.cpu_cores} CPU cores, {hw.ram_gb} GB RAM, {gpus}"


def _ci(m: dict) -> str:
    lo, hi = m.get("ci95") or (None, None)
    return f"[{lo:.2f}, {hi:.2f}]" if lo is not None else ""


def _reuse_baseline(eval_sha: str, args: RecommendInput) -> dict | None:
    from sqlmodel import select

    from runtime.store import Evaluation, session

    with session() as s:
        rows = s.exec(select(Evaluation).where(Evaluation.dataset_sha256 == eval_sha)
                      .order_by(Evaluation.id.desc())).all()
    for r in rows:
        res = r.results or {}
        b = res.get("baseline")
        if (res.get("kind") == "recommendation" and b and b.get("model") == args.model
                and b.get("few_shot") == args.few_shot and b.get("metric") == (res.get("metric"))
                and b.get("eval_limit") == args.eval_limit and b.get("sample")
                and (args.metric in ("auto", res.get("metric")))):
            return dict(b)
    return None
