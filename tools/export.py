"""`export_model`: merge a run's LoRA adapter into its base, save safetensors, print the `vllm serve` commands, and
check that what was exported serves the way the run behaved (parity).

Parity serves the export through vLLM (the merged dir in a short-lived server of its own, `serving.scratch`; or
the base + adapter loaded at run time, `serving.ensure_adapter`) and compares its greedy answers on a handful of
held-out prompts with the transformers engine running the run's base + adapter in-process, which is what training
and evaluation measured. Greedy text drifts with numerics (bf16 kernels: 23 of 64 identical for the base model),
so `identical` is reported but the verdict rests on what matters:
- template: the prompt token ids the server used (vLLM's `return_token_ids`) equal the run's chat-template
  rendering, so a changed chat template or special token shows exactly;
- stops: served answers end with EOS before the token cap about as often as the run's answers do;
- adapter: where the adapter changes the in-process answer, the served answer is closer to the adapted answer
  than to the base model's (a missing or wrong adapter fails this);
- score: on rows with reference answers, the served score does not drop below the run's beyond its paired
  bootstrap interval.
The scratch server runs in the reference engine's dtype (fp32 on a CPU), so numerics differ as little as they can.
No torch import at module level.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tools.registry import ToolInput, tool

# When neither eval_path nor the run has held-out rows: short everyday prompts (no score check then).
GENERIC_PROMPTS = ["Name three colors.", "Say hello in one short sentence.", "What is 2 + 3?",
                   "Give one tip for sleeping better.", "What is the capital of France?", "Describe rain in one line.",
                   "Name a fast animal.", "What do bees make?"]


class ExportModelInput(ToolInput):
    adapter_path: str | None = Field(None, description="a PEFT adapter dir (or give job_id)")
    job_id: str | None = Field(None, description="a finished run whose adapter to export")
    out_dir: str | None = Field(None, description="where the merged model goes (default: <run dir>/merged)")
    name: str = Field("ftpilot-adapter", description="the LoRA module name in the vllm serve command")
    overwrite: bool = Field(False, description="replace a non-empty out_dir (needs approval)")
    parity: Literal["merged", "adapter", "off"] = Field(
        "merged", description="serve the export through vLLM and compare with the run in-process: merged (the "
                              "merged dir), adapter (base + adapter as a LoRA), off")
    eval_path: str | None = Field(None, description="held-out rows for the parity check (default: the run's eval "
                                                    "file)")
    parity_prompts: int = Field(8, ge=1, le=64, description="how many held-out prompts parity compares")
    parity_max_tokens: int = Field(48, ge=4, le=512, description="answer token cap for the parity comparison")


class ExportModelOutput(BaseModel):
    merged_dir: str
    adapter_path: str
    base_model: str
    size_mb: float
    serve_adapter: str = Field(description="vllm serve command for the base with the adapter as a LoRA module")
    serve_merged: str = Field(description="vllm serve command for the merged model")
    parity: dict | None = Field(None, description="served vs in-process: verdict (pass | flagged | skipped | "
                                                  "error), message, problems, n, identical, terminated, "
                                                  "first_divergence, ...")
    evaluate_candidate: dict = Field(description="an `evaluate` candidate that scores the served export through "
                                                 "the managed vLLM server")


@tool("export_model", "Merge a LoRA adapter into its base, save safetensors, print the vllm serve commands, and "
      "check that the export serves like the run (parity through vLLM).", cost="cpu_job")
def export_model(args: ExportModelInput) -> ExportModelOutput:
    from runtime.exporting import merge_adapter
    from runtime.outputs import check_output_dir, output_dir

    adapter_dir, base, default_out, run_eval = _adapter_of(args)
    out = check_output_dir(args.out_dir or default_out, inputs=[adapter_dir, base], overwrite=args.overwrite,
                           allowed=default_out, what="out_dir")
    with output_dir(out, overwrite=args.overwrite) as tmp:
        size = merge_adapter(base, str(adapter_dir), tmp)
    parity = None
    if args.parity != "off":
        parity = check_parity(adapter_dir, base, out, mode=args.parity, eval_path=args.eval_path or run_eval,
                              n=args.parity_prompts, max_new_tokens=args.parity_max_tokens)
    candidate = ({"model": str(out), "engine": f"vllm:{out}"} if args.parity != "adapter"
                 else {"model": base, "adapter": str(adapter_dir), "engine": f"vllm:{base}"})
    q = shlex.quote  # names and paths come from people and files: never let them act as shell
    return ExportModelOutput(
        merged_dir=str(out), adapter_path=str(adapter_dir), base_model=base, size_mb=round(size / 2**20, 1),
        serve_adapter=f"vllm serve {q(base)} --enable-lora --lora-modules {q(f'{args.name}={adapter_dir}')}",
        serve_merged=f"vllm serve {q(str(out))}", parity=parity, evaluate_candidate=candidate)


def _adapter_of(args: ExportModelInput) -> tuple[Path, str, Path, str | None]:
    """(adapter dir, its base model, default out dir, the run's eval file or None). The adapter and the base model
    its config names follow the workspace/models rule (`resolve_adapter`): an outside path is `outside_workspace`."""
    from runtime.errors import BadInput
    from runtime.models import resolve_adapter

    if args.job_id:
        from runtime import jobs

        job = jobs.get_job(args.job_id)
        adapter = (job.result or {}).get("adapter_path")
        if not adapter:
            raise BadInput(f"run {args.job_id} has no adapter (status {job.status})",
                           hint="Export a succeeded LoRA/QLoRA/DPO run.")
        adapter_dir, base = resolve_adapter(adapter)
        return adapter_dir, base.path, Path(job.run_dir) / "merged", (job.config or {}).get("eval_path")
    if args.adapter_path:
        adapter_dir, base = resolve_adapter(args.adapter_path)
        return adapter_dir, base.path, adapter_dir.parent / "merged", None
    raise BadInput("give adapter_path or job_id", hint="`ftpilot runs list` shows finished runs.")


# --- parity ---------------------------------------------------------------------------------------------

def check_parity(adapter_dir: Path, base: str, merged: Path, *, mode: str, eval_path: str | None, n: int,
                 max_new_tokens: int) -> dict:
    """Serve the export through vLLM and compare it with the run in-process (see the module docstring)."""
    from runtime import serving
    from runtime.errors import FtpilotError

    t0 = time.perf_counter()
    if not serving.available():
        return {"verdict": "skipped", "mode": mode, "problems": [],
                "message": "no vLLM runtime here (`make vllm` builds one): the export was not checked by serving it"}
    from runtime.engines import ChatRequest, Sampling, get_engine

    msgs, refs, source = _held_out(eval_path, n)
    ref_eng = _reference_engine(base, adapter_dir)
    s = Sampling(max_new_tokens=max_new_tokens)
    try:
        with _server_for(str(merged) if mode == "merged" else base, ref_eng.dtype_name) as ready:
            # the in-process reference runs while the server boots
            adapted = ref_eng.generate([ChatRequest(m, adapter=str(adapter_dir)) for m in msgs], s)
            plain = ref_eng.generate(msgs, s)
            ref_ids = [ref_eng.tokenizer(ref_eng.prompt_text(m), add_special_tokens=False)["input_ids"]
                       for m in msgs]
            reference_s = time.perf_counter() - t0
            st, start_s = ready()
            model = st.model
            if mode == "adapter":
                model = serving.ensure_adapter(serving.adapter_name(str(adapter_dir)), str(adapter_dir))
            eng = get_engine({"backend": "openai", "base_url": st.url, "model": model, "concurrency": len(msgs),
                              "structured": "prompt", "token_ids": True})
            t1 = time.perf_counter()
            try:
                served = eng.generate(msgs, s)
            finally:
                eng.close()
            served_s = time.perf_counter() - t1
    except FtpilotError as e:
        return {"verdict": "error", "mode": mode, "problems": [], "message": f"parity could not run: "
                f"{e.message}", "hint": e.hint, "seconds": round(time.perf_counter() - t0, 1)}
    failed = [c.error for c in served if c.error]
    if failed:
        return {"verdict": "error", "mode": mode, "problems": [], "seconds": round(time.perf_counter() - t0, 1),
                "message": f"{len(failed)} of {len(served)} served requests failed: {failed[0]}"}
    report = compare(msgs, refs, ref_ids, adapted, plain, served, max_new_tokens)
    report.update(mode=mode, prompts_from=source, reference_dtype=ref_eng.dtype_name, served_dtype=st.dtype,
                  reference_s=round(reference_s, 1), server_start_s=round(start_s, 1), served_s=round(served_s, 1),
                  seconds=round(time.perf_counter() - t0, 1))
    if mode == "merged":
        report["config_diff"] = diff = tokenizer_diff(ref_eng.tokenizer, merged, base)
        if diff:
            report["message"] += (f"; the export's {', '.join(diff)} {'differs' if len(diff) == 1 else 'differ'} "
                                  "from the run's (config_diff)")
    return report


def _held_out(eval_path: str | None, n: int) -> tuple[list[list[dict]], list[str] | None, str]:
    if not eval_path:
        prompts = (GENERIC_PROMPTS * (n // len(GENERIC_PROMPTS) + 1))[:n]
        return [[{"role": "user", "content": p}] for p in prompts], None, "built-in prompts (no eval file)"
    from tools._evalcore import build_messages, load_examples

    examples = load_examples(eval_path, limit=n)
    return [build_messages(e) for e in examples], [e.reference for e in examples], str(eval_path)


def _reference_engine(base: str, adapter_dir: Path):
    """The transformers engine on the base, with the tokenizer the run trained with (saved next to its adapter)."""
    from runtime.engines import get_engine

    tok = str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else None
    return get_engine({"backend": "transformers", "model": base, "tokenizer": tok})


@contextlib.contextmanager
def _server_for(model_path: str, dtype: str):
    """A function returning (status, seconds from launch to ready) once the server answers: the managed server
    when it already serves `model_path`, else a scratch one in the reference's dtype, launched now so that it boots
    while the caller works (the managed server, which the app uses, is left as it is)."""
    from runtime import serving

    st = serving.status()
    if st.state == "ready" and st.model_path == model_path:
        yield lambda: (st, 0.0)
        return
    t0 = time.perf_counter()
    with serving.scratch(model_path, dtype=dtype, wait=False):
        yield lambda: (serving.wait_ready(900), time.perf_counter() - t0)


def compare(msgs: list[list[dict]], refs: list[str] | None, ref_ids: list[list[int]], adapted: list, plain: list,
            served: list, max_new_tokens: int) -> dict:
    """The parity report of served completions against the in-process ones (adapted; `plain` = adapters off)."""
    from tools._evalcore import label_set, mean_metric, normalize, paired_delta, rouge_l

    n = len(msgs)
    problems: list[str] = []
    why: list[str] = []
    # template and special tokens: exact
    got_ids = [c.extra.get("prompt_token_ids") for c in served]
    same_prompt = sum(g == r for g, r in zip(got_ids, ref_ids)) if all(g is not None for g in got_ids) else None
    if same_prompt is not None and same_prompt < n:
        problems.append("template_mismatch")
        why.append(f"the server renders {n - same_prompt} of {n} prompts into other tokens than the run's chat "
                   "template (chat template or special tokens differ)")
    # stopping
    term_ref = sum(c.finish_reason == "stop" for c in adapted)
    term_srv = sum(c.finish_reason == "stop" for c in served)
    if term_ref - term_srv > max(1, n // 4):
        problems.append("no_longer_stops")
        why.append(f"served answers end with EOS in {term_srv} of {n} against {term_ref} of {n} in-process "
                   f"(cap {max_new_tokens} tokens)")
    # the adapter's effect
    sensitive = [i for i in range(n) if normalize(adapted[i].text) != normalize(plain[i].text)]
    toward_adapter = sum(rouge_l(served[i].text, adapted[i].text) > rouge_l(served[i].text, plain[i].text)
                         for i in sensitive)
    toward_base = sum(rouge_l(served[i].text, plain[i].text) > rouge_l(served[i].text, adapted[i].text)
                      for i in sensitive)
    if sensitive and toward_adapter < len(sensitive) / 2:
        problems.append("adapter_missing")
        why.append(f"where the adapter changes the answer ({len(sensitive)} prompts) the served answer follows it "
                   f"in {toward_adapter} and the base model in {toward_base}: the adapter is missing or another one")
    # the task score
    score = None
    if refs:
        labels = label_set(refs)
        metric = "exact_match" if labels else "rouge_l"
        per = (lambda p, r: float(normalize(p) == normalize(r))) if labels else rouge_l
        ref_m = mean_metric(metric, [per(c.text, r) for c, r in zip(adapted, refs)])
        srv_m = mean_metric(metric, [per(c.text, r) for c, r in zip(served, refs)])
        d = paired_delta(ref_m, srv_m, b=1000, seed=0)
        score = {"metric": metric, "reference": round(ref_m.agg(slice(None)), 4),
                 "served": round(srv_m.agg(slice(None)), 4), "delta": d["delta"], "ci95": d["ci95"]}
        if d["excludes_zero"] and (d["delta"] or 0) < 0:
            problems.append("score_drop")
            why.append(f"{metric} drops from {score['reference']} in-process to {score['served']} served "
                       f"(delta {d['delta']}, 95% CI {d['ci95']})")
    identical = sum(a.text.strip() == b.text.strip() for a, b in zip(adapted, served))
    diverged = [_divergence(i, msgs[i], adapted[i].text, served[i].text) for i in range(n)
                if adapted[i].text.strip() != served[i].text.strip()][:3]
    summary = (f"prompt tokens equal on {same_prompt if same_prompt is not None else '?'}/{n}, EOS before the cap "
               f"{term_srv}/{n} served vs {term_ref}/{n} in-process, adapter followed on {toward_adapter}/"
               f"{len(sensitive)} prompts it changes" + (f", {score['metric']} {score['served']} vs "
                                                         f"{score['reference']}" if score else "")
               + f"; {identical}/{n} answers identical")
    message = ("served like the run: " + summary if not problems else
               "FLAGGED, the served export does not behave like the run: " + "; ".join(why) + f" ({summary})")
    return {"verdict": "flagged" if problems else "pass", "message": message, "problems": problems, "n": n,
            "identical": identical, "prompt_tokens_match": same_prompt,
            "terminated": {"served": term_srv, "reference": term_ref, "max_new_tokens": max_new_tokens},
            "adapter_check": {"changed_by_adapter": len(sensitive), "toward_adapter": toward_adapter,
                              "toward_base": toward_base},
            "score": score, "first_divergence": diverged}


def _divergence(i: int, msgs: list[dict], reference: str, served: str) -> dict:
    at = next((k for k, (a, b) in enumerate(zip(reference, served)) if a != b), min(len(reference), len(served)))
    return {"prompt_index": i, "prompt": msgs[-1]["content"][:200], "reference": reference[:300],
            "served": served[:300], "at_char": at}


def tokenizer_diff(ref_tok, served_dir: Path, base: str) -> dict:
    """What differs between the run's tokenizer and the exported one (chat template, special tokens, EOS of the
    generation config): the likely cause when prompt tokens or stopping differ."""
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(served_dir)
    diff = {}
    for key in ("chat_template", "eos_token", "bos_token", "pad_token"):
        a, b = getattr(ref_tok, key, None), getattr(tok, key, None)
        if a != b:
            diff[key] = {"run": a if key != "chat_template" else _short(a),
                         "export": b if key != "chat_template" else _short(b)}

    def eos(d: str):
        try:
            return GenerationConfig.from_pretrained(d).eos_token_id
        except OSError:
            return None

    if eos(base) != eos(str(served_dir)):
        diff["generation_eos_token_id"] = {"run": eos(base), "export": eos(str(served_dir))}
    return diff


def _short(text: str | None) -> str | None:
    return None if text is None else (text if len(text) <= 120 else text[:117] + "...")
