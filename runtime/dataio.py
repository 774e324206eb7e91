"""Dataset I/O: read any supported file as a stream of records, detect its format, convert to TRL's formats.

The small API other helpers use (training, evaluation, synthesis):

- ``iter_records(path)`` yields ``(index, record)`` in file order, where ``record`` is a ``dict`` or a
  ``RecordError`` (a malformed line, a non-object value, bytes that are not UTF-8). Indices are 0-based and count
  malformed records too, so "row 17" means the same thing in every report. Blank JSONL lines are not records.
  Files are streamed: JSONL line by line (a 50 MB single line is read as one record, never split), CSV by row,
  Parquet by record batch, ``datasets`` save dirs through their memory-mapped Arrow files; ``.jsonl.gz`` and
  ``.json.gz`` are decompressed on the fly. Only a JSON file holding one top-level array is parsed whole
  (refused above ``JSON_ARRAY_MAX_BYTES``: convert it to JSONL). Records nested deeper than ``MAX_DEPTH`` are
  errors, not crashes. ``columns={"prompt": "text", "completion": "category"}`` (roles in ``COLUMN_ROLES``) maps
  a file's own column names onto TRL's fields as the records are read.
- ``record_format(record)`` names one record's layout; ``detect_format(path_or_records)`` the whole file's
  (the most common layout among the first ``sample`` valid records).
- ``to_conversational(record, fmt)`` converts one record to TRL's format for its kind: ``{"messages": [...]}``
  for SFT data (Alpaca, ShareGPT, OpenAI chat, standard prompt/completion are imported), ``{"prompt": [...],
  "chosen": [...], "rejected": [...]}`` for preference data, ``{"text": ...}`` left as is. It raises
  ``BadInput`` for a record that does not fit ``fmt``.
- ``message_text(content)`` flattens OpenAI-style content parts to a string.
- ``describe_layout(fmt, record, columns)`` says in words which layout was recognised (``inspect_dataset``).
- ``load_dataset(path, strict=True, columns=None)`` gives training a ``datasets.Dataset`` in TRL's format (imports converted,
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
``hh_transcript``                ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}`` (Anthropic
                                 HH-RLHF; imported: shared turns are the prompt, final assistant turns chosen/rejected)
``text_label``                   a text column and an answer column (``text``+``label``, ``sentence``+``label``,
                                 ``query``+``intent``, ``question``+``answer``, ``text``+``category``, ...; imported
                                 as user/assistant; see ``PAIR_PROMPTS``, ``PAIR_ANSWERS``)
``unknown``                      none of these
===============================  ==============================================================
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from runtime.errors import BadInput, NotFound

JSON_ARRAY_MAX_BYTES = 512 * 1024 * 1024
MAX_DEPTH = 100  # deeper records are refused as data errors (a 1e6-deep array would overflow Python's stack)
SFT_FORMATS = ("conversational", "openai_chat", "prompt_completion", "prompt_completion_conversational",
               "alpaca", "sharegpt", "text_label")
PREFERENCE_FORMATS = ("preference", "preference_conversational", "openai_preference", "hh_transcript")
FORMATS = (*SFT_FORMATS, "text", *PREFERENCE_FORMATS, "unknown")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system", "tool": "tool",
                  "function_call": "assistant", "observation": "tool", "function": "tool"}
# The roles a `columns` mapping may name, each mapped to a column of the person's file.
COLUMN_ROLES = ("prompt", "completion", "system", "chosen", "rejected")
# (text column, answer column) layouts recognised without a mapping: the first answer column present, with the
# first text column present.
PAIR_PROMPTS = ("text", "sentence", "query", "question", "utterance", "input", "review", "content", "document",
                 "source", "instruction", "prompt")
PAIR_ANSWERS = ("answer", "response", "output", "target", "label", "intent", "category", "class", "sentiment",
                 "labels", "summary")


@dataclass(frozen=True)
class RecordError:
    """A record that could not be read as a JSON object; it still has an index and (for JSONL) a line."""

    index: int
    kind: str        # invalid_json | encoding (unreadable) | not_object | schema (read, but not a usable record)
    message: str
    line: int | None = None
    preview: str = ""


# --- reading ----------------------------------------------------------------------------------------

def is_gzip(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def file_kind(path: Path) -> str:
    """jsonl | json | csv | parquet | hf_dir, from the name (and for .json the first byte); ``.gz`` is looked through."""
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf_dir"
        raise BadInput(f"{path} is a folder but not a saved `datasets` dataset",
                       hint="Point at a .jsonl/.json/.csv/.parquet file or a folder made by Dataset.save_to_disk.")
    name = path.name.lower().removesuffix(".gz")
    suffix = name[name.rfind("."):] if "." in name else ""
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        if is_gzip(path):
            raise BadInput(f"{path.name}: a compressed Parquet file", hint="Decompress it first (Parquet is "
                           "compressed inside already).")
        return "parquet"
    if suffix == ".json":
        with _open_binary(path) as f:
            head = _read(f, 4096, path).lstrip(b"\xef\xbb\xbf \t\r\n")
        return "json" if head.startswith(b"[") else "jsonl"
    return "jsonl"


def _open_binary(path: Path):
    """The file's bytes, decompressed when it is gzip."""
    if is_gzip(path):
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def _read(f, n: int, path: Path) -> bytes:
    try:
        return f.read(n)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise BadInput(f"{path.name} is not a readable gzip file ({e})", hint="Check the download, or decompress "
                       "it yourself and point at the result.") from None


def check_columns(columns: dict[str, str] | None) -> dict[str, str] | None:
    """Validate a person's `columns` mapping (role -> their column name); None or {} means "detect"."""
    if not columns:
        return None
    unknown = sorted(set(columns) - set(COLUMN_ROLES))
    if unknown:
        raise BadInput(f"columns: unknown role(s) {unknown}", hint=f"Roles are {', '.join(COLUMN_ROLES)}; the values "
                       "are column names in your file.", code="bad_columns")
    if not ({"prompt", "completion"} <= set(columns) or {"chosen", "rejected"} <= set(columns)):
        raise BadInput("columns must name prompt and completion (SFT) or chosen and rejected (preference)",
                       hint='e.g. {"prompt": "text", "completion": "category"}', code="bad_columns")
    if {"completion"} & set(columns) and {"chosen", "rejected"} & set(columns):
        raise BadInput("columns names both completion and chosen/rejected: pick SFT or preference",
                       code="bad_columns")
    bad = [r for r, c in columns.items() if not isinstance(c, str) or not c]
    if bad:
        raise BadInput(f"columns: {bad} must name a column", code="bad_columns")
    return dict(columns)


def iter_records(path: str | Path, *, with_offsets: bool = False, columns: dict[str, str] | None = None
                 ) -> Iterator[tuple[int, dict | RecordError]]:
    """Yield (index, record-or-RecordError) in file order, streaming. See the module docstring.

    With ``with_offsets`` (plain JSONL only) each item is (index, record, byte_offset_of_line). With ``columns``
    each record is mapped onto TRL's fields (``apply_columns``); a column missing from the file is a ``BadInput``."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path} does not exist", hint="Check the path; relative paths start at the workspace root.")
    kind = file_kind(path)
    if with_offsets and (kind != "jsonl" or is_gzip(path)):
        raise BadInput("byte offsets exist only for uncompressed JSONL files")
    columns = check_columns(columns)
    if kind == "jsonl":
        items = _iter_jsonl(path, with_offsets)
    elif kind == "json":
        items = _iter_json_array(path)
    elif kind == "csv":
        items = _iter_csv(path)
    elif kind == "parquet":
        items = _iter_parquet(path)
    else:
        items = _iter_hf_dir(path)
    if columns is None:
        yield from items
        return
    head = list(itertools.islice(items, 100))  # check the mapping against the file before any record is used
    _require_columns(path, columns, {k for item in head if isinstance(item[1], dict) for k in item[1]})
    for item in itertools.chain(head, items):
        rec = item[1]
        if isinstance(rec, dict):
            rec = apply_columns(rec, columns, item[0])
        yield (item[0], rec, *item[2:])


def _require_columns(path: Path, columns: dict[str, str], seen: set[str]) -> None:
    missing = [c for c in columns.values() if c not in seen]
    if missing and seen:
        raise BadInput(f"{path.name} has no column {', '.join(map(repr, missing))} (columns mapping)",
                       hint=f"Its fields are {sorted(seen)[:20]}.", code="bad_columns")


def _cell(value: Any) -> Any:
    """A mapped cell: strings and message lists as they are, numbers (label ids) as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def apply_columns(rec: dict, columns: dict[str, str], index: int = 0) -> dict | RecordError:
    """One record in TRL's fields under a `columns` mapping: prompt/completion (with a system message, as message
    lists) or prompt/chosen/rejected. A row lacking a mapped column is a schema error."""
    missing = [c for c in columns.values() if rec.get(c) is None]
    if missing:
        return RecordError(index, "schema", f"row {index}: no value in column {', '.join(map(repr, missing))}")
    out = {role: _cell(rec[col]) for role, col in columns.items() if role != "system"}
    system = columns.get("system")
    if system is not None:
        sys_msg = [{"role": "system", "content": _cell(rec[system])}]
        prompt = out.get("prompt", "")
        out["prompt"] = sys_msg + ([{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt)
        for role in ("completion", "chosen", "rejected"):
            if isinstance(out.get(role), str):
                out[role] = [{"role": "assistant", "content": out[role]}]
    return out


def _too_deep(value: Any) -> bool:
    """Whether a parsed value nests deeper than MAX_DEPTH (iterative: the check itself cannot overflow)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > MAX_DEPTH:
            return True
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values() if isinstance(x, (dict, list)))
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return False


def _loads(text: str) -> Any:
    """json.loads that turns a stack overflow on absurd nesting into a JSONDecodeError-like ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"nested too deeply to read (more than {MAX_DEPTH} levels)") from None


def parse_jsonl_line(raw: bytes, index: int, line_no: int) -> dict | RecordError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RecordError(index, "encoding", f"line {line_no}: not UTF-8 ({e.reason} at byte {e.start})",
                           line_no, raw[:120].decode("utf-8", "replace"))
    try:
        value = _loads(text)
    except json.JSONDecodeError as e:
        return RecordError(index, "invalid_json", f"line {line_no}: {e.msg} at column {e.colno}", line_no, text[:120])
    except ValueError as e:
        return RecordError(index, "schema", f"line {line_no}: {e}", line_no, text[:120])
    if not isinstance(value, dict):
        return RecordError(index, "not_object", f"line {line_no}: a JSON {type(value).__name__}, not an object",
                           line_no, text[:120])
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(value):
        return RecordError(index, "schema", f"line {line_no}: nested deeper than {MAX_DEPTH} levels", line_no,
                           text[:120])
    return value


def _iter_jsonl(path: Path, with_offsets: bool) -> Iterator:
    index, offset = 0, 0
    with _open_binary(path) as f:
        try:
            for line_no, raw in enumerate(f, 1):
                start, offset = offset, offset + len(raw)
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                rec = parse_jsonl_line(raw, index, line_no)
                yield (index, rec, start) if with_offsets else (index, rec)
                index += 1
        except (OSError, EOFError) as e:  # a truncated or corrupt gzip stream
            raise BadInput(f"{path.name} is not a readable gzip file ({e})", hint="Check the download, or "
                           "decompress it yourself and point at the result.") from None


def read_jsonl_at(path: Path, offsets: dict[int, int], columns: dict[str, str] | None = None
                  ) -> dict[int, dict | RecordError]:
    """Read the records at known byte offsets (from ``iter_records(..., with_offsets=True)``)."""
    out = {}
    columns = check_columns(columns)
    with open(path, "rb") as f:
        for index, off in sorted(offsets.items(), key=lambda kv: kv[1]):
            f.seek(off)
            rec = parse_jsonl_line(f.readline().lstrip(b"\xef\xbb\xbf"), index, 0)
            out[index] = apply_columns(rec, columns, index) if columns and isinstance(rec, dict) else rec
    return out


def records_at(path: Path, rows: Iterable[int], columns: dict[str, str] | None = None) -> dict[int, Any]:
    """The records at the given indices, by one streaming pass (any file kind)."""
    wanted = set(rows)
    out: dict[int, Any] = {}
    if not wanted:
        return out
    for item in iter_records(path, columns=columns):
        if item[0] in wanted:
            out[item[0]] = item[1]
            if len(out) == len(wanted):
                break
    return out


def _iter_json_array(path: Path) -> Iterator:
    size = path.stat().st_size
    if size > JSON_ARRAY_MAX_BYTES:
        raise BadInput(f"{path.name} is a {size >> 20} MB JSON array; arrays are read whole",
                       hint="Convert it to JSONL (one object per line), which is streamed.")
    with _open_binary(path) as f:
        raw = _read(f, JSON_ARRAY_MAX_BYTES + 1, path)
    if len(raw) > JSON_ARRAY_MAX_BYTES:
        raise BadInput(f"{path.name} holds more than {JSON_ARRAY_MAX_BYTES >> 20} MB of JSON; arrays are read whole",
                       hint="Convert it to JSONL (one object per line), which is streamed.")
    try:
        data = _loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise BadInput(f"{path.name} is not UTF-8 ({e.reason} at byte {e.start})",
                       hint="Re-encode the file as UTF-8.") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path.name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                       hint="Fix the file, or save it as JSONL so one bad record does not hide the rest.") from None
    except ValueError as e:
        raise BadInput(f"{path.name}: {e}", hint="Save it as JSONL so one bad record does not hide the rest.") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise BadInput(f"{path.name} holds a JSON object, not a list of records",
                           hint="Use a top-level array of records, or JSONL.")
        data = lists[0]
    for index, value in enumerate(data):
        if not isinstance(value, dict):
            yield index, RecordError(index, "not_object", f"item {index}: a JSON {type(value).__name__}, not an object",
                                     None, _preview_json(value))
        elif _too_deep(value):
            yield index, RecordError(index, "schema", f"item {index}: nested deeper than {MAX_DEPTH} levels", None,
                                     _preview_json(value))
        else:
            yield index, value


def _preview_json(value: Any) -> str:
    return "[…]" if _too_deep([value]) else json.dumps(value)[:120]


def _maybe_json_cell(value: str) -> Any:
    s = value.strip()
    if s[:1] in ("[", "{"):
        try:
            parsed = _loads(s)
        except ValueError:  # not JSON (or absurdly nested): the cell is text
            return value
        return value if _too_deep(parsed) else parsed
    return value


def _iter_csv(path: Path) -> Iterator:
    csv.field_size_limit(1 << 30)
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    with _open_binary(path) as fb:
        try:
            text = io.TextIOWrapper(fb, encoding="utf-8-sig", newline="")
            reader = csv.DictReader(text, delimiter=delimiter)
            for index, row in enumerate(reader):
                if None in row:  # more cells than header fields
                    yield index, RecordError(index, "invalid_json", f"CSV row {index + 2}: more cells than columns",
                                             reader.line_num, str(row.get(None))[:120])
                    continue
                if any(v is None for v in row.values()):  # fewer cells: often an unterminated quote
                    cells = [v for v in row.values() if v is not None]
                    hint = " (an unterminated quote runs to the end of the file?)" if any(
                        "\n" in c for c in cells) else ""
                    yield index, RecordError(index, "invalid_json", f"CSV row {index + 2}: {len(cells)} cell(s) for "
                                             f"{len(row)} columns{hint}", reader.line_num, (cells or [""])[-1][:120])
                    continue
                yield index, {k: _maybe_json_cell(v) if isinstance(v, str) else v for k, v in row.items()}
        except UnicodeDecodeError as e:
            raise BadInput(f"{path.name} is not UTF-8 ({e.reason})", hint="Re-encode the file as UTF-8.") from None
        except csv.Error as e:
            raise BadInput(f"{path.name}: unreadable CSV ({e})", hint="Check quoting, or convert to JSONL.") from None
        except (OSError, EOFError) as e:
            raise BadInput(f"{path.name} is not a readable gzip file ({e})") from None


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
    for index, row in enumerate(_load_hf_dir(path)):
        yield index, dict(row)


def _load_hf_dir(path: Path):
    """A `datasets` save dir (its train split); a folder that only looks like one is a clear error."""
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - datasets raises many types for a bogus dataset_info.json
        raise BadInput(f"{path} is not a readable `datasets` save dir ({type(e).__name__}: {str(e)[:200]})",
                       hint="Point at a folder made by Dataset.save_to_disk, or at a data file.") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise BadInput(f"{path} holds splits {list(ds)}, none named train",
                           hint=f"Point at one split's folder, e.g. {path / list(ds)[0]}.")
        ds = ds["train"]
    return ds


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
        if _is_messages(rec["chosen"]) or _is_messages(rec.get("prompt")):
            return "preference_conversational"
        return "hh_transcript" if rec.get("prompt") is None and _is_hh(rec["chosen"]) else "preference"
    if "preferred_output" in rec and "non_preferred_output" in rec:
        return "openai_preference"
    if "prompt" in rec and "completion" in rec:
        return "prompt_completion_conversational" if _is_messages(rec["prompt"]) else "prompt_completion"
    if "conversations" in rec:
        return "sharegpt"
    if "instruction" in rec and "output" in rec:
        return "alpaca"
    if pair_columns(rec):
        return "text_label"
    if "text" in rec:
        return "text"
    return "unknown"


def pair_columns(rec: dict) -> tuple[str, str] | None:
    """(text column, answer column) of a ``text_label`` record, or None."""
    for a in PAIR_ANSWERS:
        v = rec.get(a)
        if isinstance(v, str) or isinstance(v, (int, float)) and not isinstance(v, bool):
            for p in PAIR_PROMPTS:
                if p != a and isinstance(rec.get(p), str):
                    return p, a
    return None


def _is_hh(v: Any) -> bool:
    return isinstance(v, str) and v.lstrip().startswith("Human:") and "\n\nAssistant:" in v


def detect_format(source: str | Path | Iterable[dict | RecordError | tuple], sample: int = 1000, *,
                  columns: dict[str, str] | None = None) -> str:
    """The most common record layout among the first ``sample`` valid records of a path or an iterable."""
    items = iter_records(source, columns=columns) if isinstance(source, (str, Path)) else source
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
        return {"messages": _with_system(rec, msgs)}
    if fmt == "sharegpt":
        conv = rec.get("conversations")
        if not isinstance(conv, list) or not all(isinstance(t, dict) for t in conv):
            raise BadInput("`conversations` must be a list of {from, value} turns")
        msgs = _with_system(rec, [])
        for t in conv:
            who = str(t.get("from", t.get("role", ""))).lower()
            if who not in SHAREGPT_ROLES:
                raise BadInput(f"unknown ShareGPT speaker {who!r}", hint=f"Known: {', '.join(SHAREGPT_ROLES)}")
            msgs.append({"role": SHAREGPT_ROLES[who],
                         "content": _clean_text(message_text(t.get("value", t.get("content"))))})
        return {"messages": msgs}
    if fmt == "text_label":
        cols = pair_columns(rec)
        if cols is None:
            raise BadInput("no text and answer columns (e.g. text+label, question+answer)")
        msgs = [{"role": "user", "content": _require_str(rec, cols[0])},
                {"role": "assistant", "content": _clean_text(str(rec[cols[1]]))}]
        return {"messages": _with_system(rec, msgs)}
    if fmt == "hh_transcript":
        if rec.get("prompt") not in (None, ""):
            raise BadInput("an HH transcript record has no separate prompt")
        return _shared_prompt(_hh_turns(rec.get("chosen"), "chosen"), _hh_turns(rec.get("rejected"), "rejected"))
    if fmt in ("preference", "preference_conversational"):
        prompt = rec.get("prompt")
        chosen, rejected = _msgs(rec.get("chosen"), "chosen"), _msgs(rec.get("rejected"), "rejected")
        if prompt in (None, "", []):
            return _shared_prompt(chosen, rejected)
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


def _with_system(rec: dict, msgs: list[dict]) -> list[dict]:
    """Prepend the record's `system` field (Alpaca, ShareGPT and pair layouts may carry one)."""
    if isinstance(rec.get("system"), str) and rec["system"].strip():
        return [{"role": "system", "content": _clean_text(rec["system"])}] + msgs
    return msgs


def _shared_prompt(chosen: list[dict], rejected: list[dict]) -> dict:
    """TRL's implicit prompt: the leading messages both answers share are the prompt."""
    k = 0
    while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
        k += 1
    return {"prompt": chosen[:k], "chosen": chosen[k:], "rejected": rejected[k:]}


_HH_TURN = re.compile(r"\n\n(?=Human:|Assistant:)")


def _hh_turns(value: Any, field: str) -> list[dict]:
    """An HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages; paragraphs stay in their turn."""
    if not isinstance(value, str):
        raise BadInput(f"`{field}` must be a transcript string, not {type(value).__name__}")
    turns = []
    for part in _HH_TURN.split("\n\n" + _clean_text(value).lstrip("\n")):
        if not part.strip():
            continue
        role = "user" if part.startswith("Human:") else "assistant" if part.startswith("Assistant:") else None
        if role is None:
            raise BadInput(f"`{field}` has text before its first Human: turn")
        turns.append({"role": role, "content": part.split(":", 1)[1].strip()})
    return turns


def describe_layout(fmt: str, rec: dict | None = None, columns: dict[str, str] | None = None
                    ) -> tuple[str, dict[str, str] | None]:
    """Which layout was recognised, in words, and the role -> column mapping it reads (None when fixed)."""
    if columns:
        return ("your columns mapping: " + ", ".join(f"{r} <- {c!r}" for r, c in columns.items()), dict(columns))
    if fmt == "text_label" and rec is not None and (cols := pair_columns(rec)):
        other = sorted(set(rec) - set(cols) - {"system"})
        return (f"text_label: prompt <- {cols[0]!r}, answer <- {cols[1]!r} (imported as user/assistant)"
                + (f"; ignored: {', '.join(other[:10])}" if other else ""), {"prompt": cols[0], "completion": cols[1]})
    return LAYOUTS.get(fmt, LAYOUTS["unknown"]), None


LAYOUTS = {
    "conversational": "TRL conversational: messages with role/content",
    "openai_chat": "OpenAI fine-tuning chat: messages (with weight, tool_calls or tools)",
    "prompt_completion": "TRL standard prompt/completion strings",
    "prompt_completion_conversational": "TRL conversational prompt/completion message lists",
    "alpaca": "Alpaca instruction/input/output (imported as user/assistant)",
    "sharegpt": "ShareGPT conversations with from/value (imported: human -> user, gpt -> assistant)",
    "text": "TRL language modeling: text",
    "preference": "TRL standard preference: prompt/chosen/rejected strings",
    "preference_conversational": "TRL conversational preference: prompt/chosen/rejected message lists",
    "openai_preference": "OpenAI preference: input.messages, preferred_output, non_preferred_output",
    "hh_transcript": "Anthropic HH-RLHF transcripts (\"\\n\\nHuman: ...\\n\\nAssistant: ...\") in chosen/rejected: the shared "
                     "turns are the prompt, the final assistant turns are chosen and rejected",
    "unknown": "not recognised: use messages, prompt/completion, text or prompt/chosen/rejected (or name your "
               "columns with `columns`)",
}


def kind_of(fmt: str) -> str:
    """sft | preference | text | unknown."""
    if fmt in SFT_FORMATS:
        return "sft"
    if fmt in PREFERENCE_FORMATS:
        return "preference"
    return fmt if fmt == "text" else "unknown"


NATIVE_FORMATS = ("conversational", "prompt_completion", "prompt_completion_conversational", "text", "preference",
                  "preference_conversational")


def _dataset_rows(path: str, fmt: str, sha256: str, columns: dict[str, str] | None = None) -> Iterator[dict]:
    # sha256 is unused here: it keys the datasets cache to the file's content, not its name
    for _, rec in iter_records(path, columns=columns):
        if isinstance(rec, RecordError):
            continue
        yield rec if fmt in NATIVE_FORMATS else to_conversational(rec, fmt)


def load_dataset(path: str | Path, *, strict: bool = True, columns: dict[str, str] | None = None):
    """A ``datasets.Dataset`` in TRL's format, streamed from any supported file (Arrow-backed, not held in memory).

    TRL-native layouts pass through unchanged; Alpaca, ShareGPT, HH transcripts, text/label pairs and OpenAI
    layouts are imported to TRL's conversational formats; ``columns`` maps the file's own column names onto TRL's
    fields first. With ``strict`` (the default) a malformed row or a row of another layout is a ``BadInput`` naming
    the first few rows (hint: clean_dataset); otherwise such rows are skipped."""
    from datasets import Dataset

    from runtime.paths import data_subdir, sha256_file

    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    columns = check_columns(columns)
    if file_kind(path) == "hf_dir" and columns is None:
        return _load_hf_dir(path)
    fmt = detect_format(path, columns=columns)
    if fmt == "unknown":
        raise BadInput(f"{path.name}: no known data format",
                       hint="Use messages, prompt/completion, text or prompt/chosen/rejected fields (TRL's formats), "
                            "Alpaca/ShareGPT/HH transcripts, or name your columns with `columns`.")
    bad: list[str] = []
    rows = 0
    for index, rec in iter_records(path, columns=columns):
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
    digest = sha256_file(path) if path.is_file() else "dir"
    return Dataset.from_generator(_dataset_rows, gen_kwargs={"path": str(path), "fmt": fmt, "sha256": digest,
                                                              "columns": columns},
                                  cache_dir=str(data_subdir("hf_datasets_cache")))


def count_records(path: str | Path, columns: dict[str, str] | None = None) -> int:
    return sum(1 for _ in iter_records(path, columns=columns))
