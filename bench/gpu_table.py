"""The GPU-training issue's table on a lent GPU, with this code: ftpilot LoRA (with its pre-flight), QLoRA and the
planner's own batch, plain TRL with its defaults, by hand, and by hand + Liger; measured peaks against the plan.

    python3 bench/gpu_table.py OUTDIR [--tiny]      (--tiny: a CPU dry run with a 2-layer model)

Builds the issue's random 0.82B Llama (hidden 2048, intermediate 5632, 16 layers, 32 heads, 8 KV heads, vocab
49,152 tied) with the tokenizer in $GPU_TOK (default ./tok), runs bench/train.py's cases on data shaped like the
issue's (mean ~418 tokens, long tail), 30 steps of batch 8 at max_length 1024, and writes OUTDIR/table.json after
every case. GPU_CASES picks the cases (comma-separated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_model(out: Path, tiny: bool) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(os.environ.get("GPU_TOK", "tok"))
    h, i, n, heads, kv = (64, 128, 2, 4, 2) if tiny else (2048, 5632, 16, 32, 8)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=h, intermediate_size=i, num_hidden_layers=n,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tiny = "--tiny" in sys.argv
    work = Path(tempfile.mkdtemp(prefix="gpu-table-"))
    model = work / "llama-0.82b"
    t = time.time()
    build_model(model, tiny)
    steps, batch, max_length = (3, 2, 128) if tiny else (30, 8, 1024)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FTPILOT_MODELS_DIR": str(work / "models")}
    bench = [sys.executable, str(ROOT / "bench" / "train.py"), "--model", str(model), "--root", str(work),
             "--data", "spread",
             "--steps", str(steps), "--batch", str(batch), "--max-length", str(max_length), "--out",
             str(out / "cases.jsonl"), "--preflight", "--case-timeout", "150", "--cases",
             os.environ.get("GPU_CASES", "ftpilot,trl_hand,trl_defaults,ftpilot_qlora,trl_liger,ftpilot_planned")]
    table = {"setup_s": round(time.time() - t, 1)}
    (out / "table.json").write_text(json.dumps(table, indent=1))
    proc = subprocess.run(bench, env=env, capture_output=True, text=True, timeout=420)
    table["bench_stdout"] = proc.stdout[-6000:]
    table["bench_stderr"] = proc.stderr[-3000:]
    (out / "table.json").write_text(json.dumps(table, indent=1))
    print(proc.stdout[-6000:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
