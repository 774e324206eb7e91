"""Dataset I/O: read any supported file as a stream of records, detect its format, convert to TRL's formats.

The small API other helpers use (training, evaluation, synthesis):

- ``iter_records(path)`` yields ``(index, record)`` in file order, where ``record`` is a ``dict`` or a
  ``RecordError`` (a malformed line, a non-object value, bytes that are not UTF-8). Indices are 0-based and count
  malformed records too, so "row 17" means the same thing in every report. Blank JSONL lines are not records.
  Files are streamed: JSONL line by line (a 50 MB single line is read as one record, never split), CSV by row,
  Parquet by record batch, ``datasets`` save dirs through their memory-mapped Arrow files. Only a JSON file
  holding one top-level array is parsed whole (refused above ``JSON_ARRAY_MAX_BYTES``: convert it to JSONL).
- ``record_format(record)`` names one record's layout; ``detect_format(path_or_records)`` the whole file's
  (the most common layout among the first ``sample`` valid records).
- ``to_conversational(record, fmt)`` converts one record to TRL's format for its kind: ``{"messages": [...]}``
  for SFT data (Alpaca, ShareGPT, OpenAI chat, standard prompt/completion are imported), ``{"prompt": [...],
  "chosen": [...], "rejected": [...]}`` for preference data, ``{"text": ...}`` left as is. It raises
  ``BadInput`` for a record that does not fit ``fmt``.
- ``message_text(content)`` flattens OpenAI-style content parts to a string.
- ``write_jsonl(path, records)`` writes records atomically (a ``.partial`` file renamed at the end).
- ``load_dataset(path, strict=True)`` gives training a ``datasets.Dataset`` in TRL's format (imports converted,
  malformed rows a ``BadInput`` unless ``strict=False``), streamed into Arrow, cached by the file's sha256.

Formats (the names are stable; they appear in audits and the store):

===============================  ==============================================================
``conversational``               ``{"messages": [{"role", "content"}, ...]}`` (TRL)
``openai_chat``                  the same, with OpenAI extras (``weight``, ``tool_calls``, ``tools``)
``prompt_completion``            ``{"prompt": str, "completion": str}`` (TRL standard)
``prompt_completion_conversational``  ``{"prompt": [msgs], "completion": [msgs]}`` (TRL)
``text``                         ``{"text": str}`` (TRL standard language modeling)
``preference``                   ``{"prompt": str, "chosen": str, "rejected": str}`` (prompt optional)
``preference_conversational``    the same with message lists (TRL)
``openai_preference``            ``{"input": {"messages"}, "preferred_output", "non_preferred_output"}``
``alpaca``                       ``{"instruction", "input", "output"}`` (imported as user/assistant)
``sharegpt``                     ``{"conversations": [{"from", "value"}]}`` (imported: human->user, gpt->assistant)
``unknown``                      none of these
===============================  ==============================================================
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from runtime.errors import BadInput, NotFound

JSON_ARRAY_MAX_BYTES = 512 * 1024 * 1024
SFT_FORMATS = ("conversational", "openai_chat", "prompt_completion", "prompt_completion_conversational",
               "alpaca", "sharegpt")
PREFERENCE_FORMATS = ("preference", "preference_conversational", "openai_preference")
FORMATS = (*SFT_FORMATS, "text", *PREFERENCE_FORMATS, "unknown")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system", "tool": "tool",
                  "function_call": "assistant", "observation": "tool", "function": "tool"}


@dataclass(frozen=True)
class RecordError:
    """A record that could not be read as a JSON object; it still has an index and (for JSONL) a line."""

    index: int
    kind: str        # invalid_json | not_object | encoding
    message: str
    line: int | None = None
    preview: str = ""


# --- reading ----------------------------------------------------------------------------------------

def file_kind(path: Path) -> str:
    """jsonl | json | csv | parquet | hf_dir, from the name (and for .json the first byte)."""
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf_dir"
        raise BadInput(f"{path} is a folder but not a saved `datasets` dataset",
                       hint="Point at a .jsonl/.json/.csv/.parquet file or a folder made by Dataset.save_to_disk.")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() in (".gz",) else path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv" or suffix == ".tsv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".json":
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return "json" if head.startswith(b"[") else "jsonl"
    return "jsonl"


def iter_records(path: str | Path, *, with_offsets: bool = False) -> Iterator[tuple[int, dict | RecordError]]:
    """Yield (index, record-or-RecordError) in file order, streaming. See the module docstring.

    With ``with_offsets`` (JSONL only) each item is (index, record, byte_offset_of_line)."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path} does not exist", hint="Check the path; relative paths start at the workspace root.")
    kind = file_kind(path)
    if with_offsets and kind != "jsonl":
        raise BadInput("byte offsets exist only for JSONL files")
    if kind == "jsonl":
        yield from _iter_jsonl(path, with_offsets)
    elif kind == "json":
        yield from _iter_json_array(path)
    elif kind == "csv":
        yield from _iter_csv(path)
    elif kind == "parquet":
        yield from _iter_parquet(path)
    else:
        yield from _iter_hf_dir(path)


def parse_jsonl_line(raw: bytes, index: int, line_no: int) -> dict | RecordError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RecordError(index, "encoding", f"line {line_no}: not UTF-8 ({e.reason} at byte {e.start})",
                           line_no, raw[:120].decode("utf-8", "replace"))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return RecordError(index, "invalid_json", f"line {line_no}: {e.msg} at column {e.colno}", line_no, text[:120])
    except RecursionError:
        return RecordError(index, "invalid_json", f"line {line_no}: nested too deeply to read", line_no, text[:120])
    if not isinstance(value, dict):
        return RecordError(index, "not_object", f"line {line_no}: a JSON {type(value).__name__}, not an object",
                           line_no, text[:120])
    return value


def _iter_jsonl(path: Path, with_offsets: bool) -> Iterator:
    index, offset = 0, 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            rec = parse_jsonl_line(raw, index, line_no)
            yield (index, rec, start) if with_offsets else (index, rec)
            index += 1


def read_jsonl_at(path: Path, offsets: dict[int, int]) -> dict[int, dict | RecordError]:
    """Read the records at known byte offsets (from ``iter_records(..., with_offsets=True)``)."""
    out = {}
    with open(path, "rb") as f:
        for index, off in sorted(offsets.items(), key=lambda kv: kv[1]):
            f.seek(off)
            out[index] = parse_jsonl_line(f.readline().lstrip(b"\xef\xbb\xbf"), index, 0)
    return out


def _iter_json_array(path: Path) -> Iterator:
    size = path.stat().st_size
    if size > JSON_ARRAY_MAX_BYTES:
        raise BadInput(f"{path.name} is a {size >> 20} MB JSON array; arrays are read whole",
                       hint="Convert it to JSONL (one object per line), which is streamed.")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise BadInput(f"{path.name} is not UTF-8 ({e.reason} at byte {e.start})",
                       hint="Re-encode the file as UTF-8.") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path.name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                       hint="Fix the file, or save it as JSONL so one bad record does not hide the rest.") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise BadInput(f"{path.name} holds a JSON object, not a list of records",
                           hint="Use a top-level array of records, or JSONL.")
        data = lists[0]
    for index, value in enumerate(data):
        if isinstance(value, dict):
            yield index, value
        else:
            yield index, RecordError(index, "not_object", f"item {index}: a JSON {type(value).__name__}, not an object",
                                     None, json.dumps(value)[:120])


def _maybe_json_cell(value: str) -> Any:
    s = value.strip()
    if s[:1] in ("[", "{"):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return value
    return value


def _iter_csv(path: Path) -> Iterator:
    csv.field_size_limit(1 << 30)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, "rb") as fb:
        try:
            text = io.TextIOWrapper(fb, encoding="utf-8-sig", newline="")
            reader = csv.DictReader(text, delimiter=delimiter)
            for index, row in enumerate(reader):
                if None in row:  # more cells than header fields
                    yield index, RecordError(index, "invalid_json", f"CSV row {index + 2}: more cells than columns",
                                             reader.line_num, str(row.get(None))[:120])
                    continue
                yield index, {k: _maybe_json_cell(v) if isinstance(v, str) else v for k, v in row.items()}
        except UnicodeDecodeError as e:
            raise BadInput(f"{path.name} is not UTF-8 ({e.reason})", hint="Re-encode the file as UTF-8.") from None
        except csv.Error as e:
            raise BadInput(f"{path.name}: unreadable CSV ({e})", hint="Check quoting, or convert to JSONL.") from None


def _iter_parquet(path: Path) -> Iterator:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise BadInput(f"{path.name} is not a readable Parquet file ({e})") from None
    index = 0
    for batch in pf.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            yield index, row
            index += 1


def _iter_hf_dir(path: Path) -> Iterator:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise BadInput(f"{path} holds splits {list(ds)}, none named train",
                           hint=f"Point at one split's folder, e.g. {path / list(ds)[0]}.")
        ds = ds["train"]
    for index, row in enumerate(ds):
        yield index, dict(row)


# --- formats -----------------------------------------------------------------------------------------

def _is_messages(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(m, dict) and "role" in m for m in v)


def record_format(rec: dict) -> str:
    """Name one record's layout (see the module docstring); ``unknown`` when none fits."""
    if "messages" in rec:
        msgs = rec["messages"]
        if "tools" in rec or "functions" in rec or (isinstance(msgs, list) and any(
                isinstance(m, dict) and ("weight" in m or "tool_calls" in m or "function_call" in m) for m in msgs)):
            return "openai_chat"
        return "conversational"
    if "chosen" in rec and "rejected" in rec:
        return "preference_conversational" if (_is_messages(rec["chosen"]) or _is_messages(rec.get("prompt"))) \
            else "preference"
    if "preferred_output" in rec and "non_preferred_output" in rec:
        return "openai_preference"
    if "prompt" in rec and "completion" in rec:
        return "prompt_completion_conversational" if _is_messages(rec["prompt"]) else "prompt_completion"
    if "conversations" in rec:
        return "sharegpt"
    if "instruction" in rec and "output" in rec:
        return "alpaca"
    if "text" in rec:
        return "text"
    return "unknown"


def detect_format(source: str | Path | Iterable[dict | RecordError | tuple], sample: int = 1000) -> str:
    """The most common record layout among the first ``sample`` valid records of a path or an iterable."""
    items = iter_records(source) if isinstance(source, (str, Path)) else source
    counts: Counter[str] = Counter()
    for item in items:
        rec = item[1] if isinstance(item, tuple) else item
        if isinstance(rec, dict):
            counts[record_format(rec)] += 1
            if sum(counts.values()) >= sample:
                break
    if not counts:
        return "unknown"
    known = [(n, f) for f, n in counts.items() if f != "unknown"]
    return max(known)[1] if known else "unknown"


def message_text(content: Any) -> str:
    """A message's content as text: strings as is, OpenAI content parts joined, None as ''."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    raise BadInput(f"message content is a {type(content).__name__}, not text")


def _msgs(value: Any, field: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user" if field == "prompt" else "assistant", "content": value}]
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise BadInput(f"`{field}` must be a list of messages or a string, not {type(value).__name__}")
    out = []
    for m in value:
        if not isinstance(m.get("role"), str):
            raise BadInput(f"a message in `{field}` has no role" if "role" not in m else
                           f"a role in `{field}` is a {type(m['role']).__name__}, not a string")
        msg = {"role": m["role"], "content": _clean_text(message_text(m.get("content")))}
        if m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        out.append(msg)
    return out


def _clean_text(s: str) -> str:
    """Lone surrogates (from JSON escapes like \\ud800) cannot be encoded: a schema problem, not a crash."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("text holds a lone UTF-16 surrogate (an invalid \\uXXXX escape)",
                       hint="Fix the escape, or drop the row (clean_dataset drop_invalid).") from None
    return s


def _require_str(rec: dict, key: str, optional: bool = False) -> str:
    v = rec.get(key)
    if v is None and optional:
        return ""
    if not isinstance(v, str):
        raise BadInput(f"`{key}` must be a string, not {type(v).__name__}")
    return _clean_text(v)


def to_conversational(rec: dict, fmt: str | None = None) -> dict:
    """Convert one record to TRL's conversational format for its kind (see the module docstring)."""
    fmt = fmt or record_format(rec)
    if fmt in ("conversational", "openai_chat"):
        if not isinstance(rec.get("messages"), list):
            raise BadInput(f"`messages` must be a list of messages, not {type(rec.get('messages')).__name__}")
        return {"messages": _msgs(rec.get("messages"), "messages")}
    if fmt == "prompt_completion":
        return {"messages": [{"role": "user", "content": _require_str(rec, "prompt")},
                             {"role": "assistant", "content": _require_str(rec, "completion")}]}
    if fmt == "prompt_completion_conversational":
        return {"messages": _msgs(rec.get("prompt"), "prompt") + _msgs(rec.get("completion"), "completion")}
    if fmt == "alpaca":
        instruction, extra = _require_str(rec, "instruction"), _require_str(rec, "input", optional=True)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": _require_str(rec, "output")}]
        if isinstance(rec.get("system"), str) and rec["system"].strip():
            msgs.insert(0, {"role": "system", "content": rec["system"]})
        return {"messages": msgs}
    if fmt == "sharegpt":
        conv = rec.get("conversations")
        if not isinstance(conv, list) or not all(isinstance(t, dict) for t in conv):
            raise BadInput("`conversations` must be a list of {from, value} turns")
        msgs = []
        if isinstance(rec.get("system"), str) and rec["system"].strip():
            msgs.append({"role": "system", "content": rec["system"]})
        for t in conv:
            who = str(t.get("from", t.get("role", ""))).lower()
            if who not in SHAREGPT_ROLES:
                raise BadInput(f"unknown ShareGPT speaker {who!r}", hint=f"Known: {', '.join(SHAREGPT_ROLES)}")
            msgs.append({"role": SHAREGPT_ROLES[who], "content": message_text(t.get("value", t.get("content")))})
        return {"messages": msgs}
    if fmt in ("preference", "preference_conversational"):
        prompt = rec.get("prompt")
        chosen, rejected = _msgs(rec.get("chosen"), "chosen"), _msgs(rec.get("rejected"), "rejected")
        if prompt in (None, "", []):  # TRL's implicit prompt: the shared leading messages are the prompt
            k = 0
            while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
                k += 1
            return {"prompt": chosen[:k], "chosen": chosen[k:], "rejected": rejected[k:]}
        return {"prompt": _msgs(prompt, "prompt"), "chosen": chosen, "rejected": rejected}
    if fmt == "openai_preference":
        inp = rec.get("input")
        if not isinstance(inp, dict):
            raise BadInput("`input` must be an object with `messages`")
        return {"prompt": _msgs(inp.get("messages"), "input.messages"),
                "chosen": _msgs(rec.get("preferred_output"), "preferred_output"),
                "rejected": _msgs(rec.get("non_preferred_output"), "non_preferred_output")}
    if fmt == "text":
        return {"text": _require_str(rec, "text")}
    raise BadInput(f"record fields {sorted(rec)[:8]} match no known format",
                   hint="Use messages, prompt/completion, text, prompt/chosen/rejected, Alpaca or ShareGPT fields.")


def kind_of(fmt: str) -> str:
    """sft | preference | text | unknown."""
    if fmt in SFT_FORMATS:
        return "sft"
    if fmt in PREFERENCE_FORMATS:
        return "preference"
    return fmt if fmt == "text" else "unknown"


# --- writing -----------------------------------------------------------------------------------------

def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write records as JSONL atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


NATIVE_FORMATS = ("conversational", "prompt_completion", "prompt_completion_conversational", "text", "preference",
                  "preference_conversational")


def _dataset_rows(path: str, fmt: str, sha256: str) -> Iterator[dict]:
    # sha256 is unused here: it keys the datasets cache to the file's content, not its name
    for _, rec in iter_records(path):
        if isinstance(rec, RecordError):
            continue
        yield rec if fmt in NATIVE_FORMATS else to_conversational(rec, fmt)


def load_dataset(path: str | Path, *, strict: bool = True):
    """A ``datasets.Dataset`` in TRL's format, streamed from any supported file (Arrow-backed, not held in memory).

    TRL-native layouts pass through unchanged; Alpaca, ShareGPT and OpenAI layouts are imported to the
    conversational format. With ``strict`` (the default) a malformed row or a row of another layout is a
    ``BadInput`` naming the first few rows (hint: clean_dataset); otherwise such rows are skipped."""
    from datasets import Dataset, DatasetDict, load_from_disk

    from runtime.paths import data_subdir, sha256_file

    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    if file_kind(path) == "hf_dir":
        ds = load_from_disk(str(path))
        return ds["train"] if isinstance(ds, DatasetDict) else ds
    fmt = detect_format(path)
    if fmt == "unknown":
        raise BadInput(f"{path.name}: no known data format",
                       hint="Use messages, prompt/completion, text or prompt/chosen/rejected fields (TRL's formats), "
                            "or Alpaca/ShareGPT.")
    bad: list[str] = []
    rows = 0
    for index, rec in iter_records(path):
        rows += 1
        if isinstance(rec, RecordError):
            bad.append(f"row {index}: {rec.message}")
        elif record_format(rec) != fmt and {record_format(rec), fmt} != {"conversational", "openai_chat"}:
            bad.append(f"row {index}: fields {sorted(rec)[:5]} are not {fmt}")
        elif fmt not in NATIVE_FORMATS:
            try:
                to_conversational(rec, fmt)
            except BadInput as e:
                bad.append(f"row {index}: {e.message}")
        if strict and len(bad) >= 5:
            break
    if bad and strict:
        raise BadInput(f"{path.name} has rows that cannot be trained on: " + "; ".join(bad[:5]),
                       hint="Run clean_dataset (it drops them with a manifest), then train on its output.")
    if rows == 0:
        raise BadInput(f"{path.name} holds no records")
    return Dataset.from_generator(_dataset_rows, gen_kwargs={"path": str(path), "fmt": fmt,
                                                              "sha256": sha256_file(path)},
                                  cache_dir=str(data_subdir("hf_datasets_cache")))


def count_records(path: str | Path) -> int:
    return sum(1 for _ in iter_records(path))
