"""Real datasets for `task=tldr` and `task=preference`: load, check, render, tokenize.

A dataset is named by `task.dataset`: a hub id (`load_dataset(name, task.dataset_config)`),
or a local path, read with the same `datasets` machinery:

* a `.jsonl` / `.json` / `.parquet` / `.csv` file: one split, whatever its name in the
  config (slice it to hold rows out: `train_split="train[:90%]"`, `eval_split="train[90%:]"`);
* a folder of such files, split names taken from the file names (`train.jsonl`,
  `validation.jsonl`, ...), as `load_dataset(folder)` infers them;
* a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.

Everything is checked before any model weight is loaded, and every error names
the dataset, the split, the row index and the column, and says what to do:
a missing column, a row that is not valid JSON, a value that is not text.

Prompts are rendered with `task.prompt_template` (str.format over the row's
columns; `{info[post]}` reaches into a nested column) or read from
`task.prompt_column`, optionally wrapped in the policy tokenizer's chat
template, tokenized, and dropped (never truncated) when longer than
`task.max_prompt_tokens`; the number dropped is reported in the task's
metadata. Responses of preference pairs are tokenized without special tokens
and end with the policy's eos, like a finished sample.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rlhf_sweeps.config import ConfigError, is_hub_id, template_fields

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_SPLIT = re.compile(r"^([\w.-]+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


class DataError(ConfigError):
    """A dataset cannot be used as configured; the message says where and what to do.

    A ConfigError, so `launch.py` prints it without a traceback and exits 2.
    """


# ----------------------------------------------------------------------------- loading
def parse_split(spec: str) -> tuple[str, Optional[str], Optional[str]]:
    """'train[:90%]' -> ('train', None, '90%'); 'validation' -> ('validation', None, None)."""
    m = _SPLIT.match(spec.strip())
    if not m:
        raise DataError(f"split {spec!r}: expected a split name, optionally sliced like 'train[:90%]' "
                        "or 'train[1000:2000]'")
    return m.group(1), m.group(2), m.group(3)


def _bound(b: Optional[str], n: int) -> Optional[int]:
    if b is None:
        return None
    return round(n * float(b[:-1]) / 100) if b.endswith("%") else int(b)


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in _FILE_BUILDERS)


def _diagnose_json(files: list[Path]) -> Optional[str]:
    """Name the first row of a JSON / JSONL file that does not parse (1-based line numbers)."""
    for f in files:
        if f.suffix not in (".jsonl", ".json"):
            continue
        text = f.read_text()
        if f.suffix == ".json" and text.lstrip().startswith("["):
            try:
                json.loads(text)
            except json.JSONDecodeError as e:
                return f"{f}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg})"
            continue
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                return (f"{f}: row {i} (line {i + 1}) is not valid JSON ({e.msg}, column {e.colno}); "
                        "fix or delete that line")
            if not isinstance(row, dict):
                return f"{f}: row {i} (line {i + 1}) is {type(row).__name__}, not a JSON object with columns"
    return None


def load_split(task, split_spec: str, max_rows: Optional[int] = None):
    """The rows of `split_spec` of `task.dataset` as a `datasets.Dataset`."""
    import datasets

    source = task.dataset
    name, start, stop = parse_split(split_spec)
    path = Path(source).expanduser()
    where = f"task.dataset={source!r}"
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            obj = datasets.load_from_disk(str(path))
            if isinstance(obj, datasets.DatasetDict):
                if name not in obj:
                    raise DataError(f"{where} has no split {name!r}; its splits are {sorted(obj)}. "
                                    f"Set task.train_split / task.eval_split.")
                ds = obj[name]
            else:
                ds = obj  # a single saved Dataset: every split name refers to it (slice to hold out)
        elif path.is_file():
            if path.suffix not in _FILE_BUILDERS:
                raise DataError(f"{where}: cannot read {path.suffix!r} files; use one of "
                                f"{sorted(_FILE_BUILDERS)} or a save_to_disk folder")
            ds = datasets.load_dataset(_FILE_BUILDERS[path.suffix], data_files={"rows": str(path)}, split="rows")
        elif path.is_dir():
            found = datasets.load_dataset(str(path))
            if name not in found:
                raise DataError(f"{where} has no split {name!r}; its files give splits {sorted(found)}. "
                                "Name files train.jsonl / validation.jsonl, or set task.train_split / "
                                "task.eval_split.")
            ds = found[name]
        elif is_hub_id(source):
            ds = datasets.load_dataset(source, task.dataset_config, split=name)
        else:
            raise DataError(f"{where}: no such file or folder, and not a hub id (org/name)")
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - turn datasets' errors into one actionable message
        if path.exists():
            bad = _diagnose_json(_data_files(path))
            if bad:
                raise DataError(f"{where}: {bad}") from err
            raise DataError(f"{where}: could not read it ({type(err).__name__}: {err}; cause: "
                            f"{err.__cause__!r}). Check that every row has the same columns and types.") from err
        raise DataError(f"{where}: could not load split {name!r} from the hub ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}). Check the name, subset "
                        "(task.dataset_config) and split, or download it elsewhere and pass a local "
                        "path (Dataset.save_to_disk or .jsonl).") from err
    n = len(ds)
    lo, hi = _bound(start, n), _bound(stop, n)
    if lo is not None or hi is not None:
        ds = ds.select(range(n)[slice(lo, hi)])
    if max_rows is not None and len(ds) > max_rows:
        ds = ds.select(range(max_rows))
    if len(ds) == 0:
        raise DataError(f"{where} split {split_spec!r} has no rows")
    return ds


# ----------------------------------------------------------------------------- checks
def require_columns(ds, columns: list[str], where: str, how: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(f"{where} has no column {missing[0]!r} (needed by {how}); its columns are "
                        f"{ds.column_names}. Point {how} at existing columns.")


def _as_text(value: Any, role: str) -> Optional[str]:
    """Plain text, or the last `role` message of a conversation [{role, content}, ...]."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        picked = [m for m in value if m.get("role") == role] or value
        content = picked[-1]["content"]
        return content if isinstance(content, str) else None
    return None


def _bad_value(where: str, i: int, column: str, value: Any, what: str) -> DataError:
    return DataError(f"{where} row {i}: column {column!r} is {value!r:.80}, expected {what}. Fix or drop "
                     f"that row (e.g. Dataset.filter before saving), or use another column.")


# ----------------------------------------------------------------------------- prompts
def render_prompts(ds, task, tokenizer, where: str) -> list[str]:
    """Prompt text of every row: the template or the prompt column, then the chat template."""
    if task.prompt_template is not None:
        fields = template_fields(task.prompt_template)
        require_columns(ds, fields, where, "task.prompt_template")
        columns = {c: ds[c] for c in fields}
        texts = []
        for i in range(len(ds)):
            row = {c: columns[c][i] for c in fields}
            for c, v in row.items():
                if v is None:
                    raise _bad_value(where, i, c, v, "a value (it is empty)")
            try:
                texts.append(task.prompt_template.format(**row))
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
                raise DataError(f"{where} row {i}: task.prompt_template does not apply ({type(err).__name__}: "
                                f"{err}); fix or drop that row, or change the template") from err
        conversations = None
    else:
        require_columns(ds, [task.prompt_column], where, "task.prompt_column")
        values = ds[task.prompt_column]
        texts, conversations = [], []
        for i, v in enumerate(values):
            if isinstance(v, list) and task.chat_template:  # already a conversation
                conversations.append(v)
                texts.append("")
                continue
            if not isinstance(v, str):
                raise _bad_value(where, i, task.prompt_column, v, "text (or, with task.chat_template=true, "
                                 "a list of {role, content} messages)")
            conversations.append(None)
            texts.append(v)
    if not task.chat_template:
        return texts
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("task.chat_template=true, but the policy tokenizer has no chat template; set "
                        "task.chat_template=false (plain prompts) or use a chat checkpoint")
    out = []
    for i, text in enumerate(texts):
        conv = conversations[i] if conversations else None
        messages = conv if conv is not None else [{"role": "user", "content": text}]
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def tokenize_prompts(texts: list[str], tokenizer, chat: bool) -> list[list[int]]:
    # A chat template already wrote any BOS into the text; plain prompts get the
    # tokenizer's own special tokens (none for GPT-NeoX, BOS for Llama-style).
    ids = []
    for s in range(0, len(texts), 1000):
        ids.extend(tokenizer(texts[s : s + 1000], add_special_tokens=not chat)["input_ids"])
    return ids


@dataclass
class PromptSet:
    ids: list[list[int]]  # prompts that fit, in dataset order
    n_rows: int
    n_too_long: int
    rows: list[int] = field(default_factory=list)  # dataset row index of each kept prompt


def load_prompts(task, split: str, tokenizer, max_rows: Optional[int] = None) -> PromptSet:
    ds = load_split(task, split, max_rows)
    where = f"task.dataset={task.dataset!r} [{split}]"
    ids = tokenize_prompts(render_prompts(ds, task, tokenizer, where), tokenizer, task.chat_template)
    return _fit(ids, task.max_prompt_tokens, where)


def _fit(ids: list[list[int]], max_tokens: int, where: str) -> PromptSet:
    keep = [i for i, p in enumerate(ids) if 0 < len(p) <= max_tokens]
    if not keep:
        longest = max(map(len, ids))
        raise DataError(f"{where}: no prompt fits task.max_prompt_tokens={max_tokens} (longest {longest} "
                        "tokens); raise task.max_prompt_tokens or shorten the template")
    return PromptSet([ids[i] for i in keep], len(ids), len(ids) - len(keep), keep)


# ----------------------------------------------------------------------------- pairs
@dataclass
class PairSet:
    rows: list[dict]  # prompt_ids, chosen_ids, rejected_ids
    n_rows: int
    n_dropped: int  # prompt or a response too long


def load_pairs(task, split: str, tokenizer, eos_id: int, max_rows: Optional[int] = None) -> PairSet:
    """Preference pairs as token ids; responses end with `eos_id` like a finished sample."""
    ds = load_split(task, split, max_rows)
    where = f"task.dataset={task.dataset!r} [{split}]"
    require_columns(ds, [task.chosen_column], where, "task.chosen_column")
    require_columns(ds, [task.rejected_column], where, "task.rejected_column")
    prompts = tokenize_prompts(render_prompts(ds, task, tokenizer, where), tokenizer, task.chat_template)
    responses = {}
    for column in (task.chosen_column, task.rejected_column):
        texts = []
        for i, v in enumerate(ds[column]):
            text = _as_text(v, "assistant")
            if text is None:
                raise _bad_value(where, i, column, v, "text (or a list of {role, content} messages)")
            texts.append(text)
        toks = []
        for s in range(0, len(texts), 1000):
            toks.extend(tokenizer(texts[s : s + 1000], add_special_tokens=False)["input_ids"])
        responses[column] = [t + [eos_id] for t in toks]
    max_resp = task.max_response_tokens
    rows = []
    for i, p in enumerate(prompts):
        c, r = responses[task.chosen_column][i], responses[task.rejected_column][i]
        if not (0 < len(p) <= task.max_prompt_tokens):
            continue
        if max_resp is not None and max(len(c), len(r)) > max_resp:
            continue
        rows.append({"prompt_ids": p, "chosen_ids": c, "rejected_ids": r})
    if not rows:
        raise DataError(f"{where}: no pair fits task.max_prompt_tokens={task.max_prompt_tokens} and "
                        f"task.max_response_tokens={max_resp}; raise them")
    return PairSet(rows, len(prompts), len(prompts) - len(rows))


# ----------------------------------------------------------------------------- streams
def epoch_stream(n_items: int, seed: int, step: int, n: int) -> list[int]:
    """Item indices of optimizer step `step`: a pure function of (seed, step).

    Items are visited in a fresh seeded permutation each epoch (every prompt
    once per epoch), so a resumed run sees exactly the uninterrupted run's prompts.
    """
    out = []
    pos = step * n
    while len(out) < n:
        epoch, i = divmod(pos, n_items)
        perm = np.random.default_rng([seed, epoch]).permutation(n_items)
        take = min(n - len(out), n_items - i)
        out.extend(perm[i : i + take].tolist())
        pos += take
    return out


def fixed_subset(n_items: int, n: int, seed: int) -> list[int]:
    """A seeded subset of `n` indices (all of them when n >= n_items), in index order."""
    if n >= n_items:
        return list(range(n_items))
    return sorted(np.random.default_rng(seed).choice(n_items, size=n, replace=False).tolist())


def ids_digest(seqs: list[list[int]]) -> str:
    """Content hash of token-id lists: what a cached stage computed from."""
    return hashlib.sha256(json.dumps(seqs).encode()).hexdigest()[:16]
