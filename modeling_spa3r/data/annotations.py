"""VSI-590K / Spa3R-VLM annotation files -> the conversation files `training/sft.py` reads, every media file checked.

Input: JSON lists or JSONL files of LLaVA-style records, as released in ``nyu-visionx/VSI-590K`` and
``hustvl/Spa3R-VLM``: ``conversations`` (``[{"from": "human"|"gpt"|"system", "value": ...}]`` with ``<video>`` /
``<image>`` placeholders; the ``<|video|>`` / ``<|image|>`` spellings are accepted), and a ``video`` path (a file or
a folder of frames) and/or ``image`` / ``images`` paths (one path or a list), relative to the media root; ``id``
is optional. Other fields are not carried over.

Output: one JSONL file of ``{"id", "conversations", "video", "images"}`` records (``video`` a path or null,
``images`` a list): the same schema on every line, so ``datasets.load_dataset("json", data_files=OUT)`` loads it
and ``spa3r sft --train_file OUT --media_root ROOT`` trains on it. Records with media but no placeholder get one
per medium at the start of the first user turn (counted). Missing media are listed in ``<OUT>.missing.jsonl``;
they are an error unless ``on_missing="drop"``, which leaves those records out (and counts them).
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import io as dio

ROLES = ("human", "gpt", "system", "user", "assistant")
_ALIASES = {"<|video|>": "<video>", "<|image|>": "<image>"}
_PLACEHOLDER = re.compile(r"<video>|<image>")
MISSING_SUFFIX = ".missing.jsonl"


def read_annotation_file(path) -> list[dict]:
    """Records of a JSON list or JSONL file (errors name the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise dio.DataError(path, "missing annotation file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise dio.DataError(path, f"line {number} is not valid JSON ({err})") from err
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise dio.DataError(path, f"invalid JSON ({err})") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise dio.DataError(path, "must hold a list of annotation objects")
    return records


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def normalise_record(record: dict, where: str) -> tuple[dict, bool]:
    """(the output record, whether placeholders were added); ``ValueError`` naming ``where`` if malformed."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: needs a non-empty 'conversations' list")
    out_turns = []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise ValueError(f"{where}: every turn needs 'from' in {ROLES} and a text 'value', got {turn!r}")
        value = turn["value"]
        for alias, placeholder in _ALIASES.items():
            value = value.replace(alias, placeholder)
        out_turns.append({"from": turn["from"], "value": value})
    if not any(t["from"] in ("gpt", "assistant") for t in out_turns):
        raise ValueError(f"{where}: no assistant ('gpt') turn")
    video = _as_list(record.get("video"))
    if len(video) > 1:
        raise ValueError(f"{where}: one 'video' per record, got {len(video)}")
    images = _as_list(record.get("images", record.get("image")))
    found = [m for t in out_turns for m in _PLACEHOLDER.findall(t["value"])]
    added = False
    if not found and (video or images):
        first_user = next(i for i, t in enumerate(out_turns) if t["from"] in ("human", "user"))
        prefix = "<video>\n" * len(video) + "<image>\n" * len(images)
        out_turns[first_user] = {**out_turns[first_user], "value": prefix + out_turns[first_user]["value"]}
        added = True
    elif found.count("<video>") != len(video) or found.count("<image>") != len(images):
        raise ValueError(f"{where}: {found.count('<video>')} <video> and {found.count('<image>')} <image> "
                         f"placeholders for {len(video)} video(s) and {len(images)} image(s)")
    record_id = record.get("id")
    return {"id": str(record_id) if record_id is not None else where, "conversations": out_turns,
            "video": video[0] if video else None, "images": images}, added


def convert_annotations(files, out, media_root=None, on_missing: str = "error", workers: int = 8,
                        progress: bool = True) -> dict:
    """Convert and check annotation ``files`` into the JSONL file ``out``; returns the report.

    Report: ``records``, ``written``, ``missing_media`` (count), ``dropped_records``, ``placeholders_added``,
    ``missing_report`` (the ``.missing.jsonl`` path, or None). Media paths are checked under ``media_root``
    (absolute paths as they are) with ``workers`` threads.
    """
    from tqdm.auto import tqdm

    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    out = Path(out)
    root = Path(media_root) if media_root else None
    records, added = [], 0
    for path in files:
        for index, raw in enumerate(read_annotation_file(path)):
            try:
                record, was_added = normalise_record(raw, f"{Path(path).name}:{index}")
            except ValueError as err:
                raise dio.DataError(path, str(err)) from err
            records.append(record)
            added += was_added

    def missing_media(record: dict) -> list[str]:
        media = ([record["video"]] if record["video"] else []) + record["images"]
        return [m for m in media if not os.path.exists(root / m if root else m)]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = list(tqdm(pool.map(missing_media, records, chunksize=256), total=len(records),
                           desc="checking media", unit="record", disable=not progress))
    missing = [{"id": r["id"], "path": m} for r, found in zip(records, checks) for m in found]
    report_path = out.with_name(out.name + MISSING_SUFFIX)
    if missing:
        dio.write_jsonl(report_path, missing)
    elif report_path.exists():
        report_path.unlink()
    if missing and on_missing == "error":
        shown = "; ".join(f"{m['id']}: {root / m['path'] if root else m['path']}" for m in missing[:3])
        raise dio.DataError(report_path, f"{len(missing)} media file(s) not found (e.g. {shown}); pass "
                                         "on_missing='drop' / --drop-missing to leave those records out; all are "
                                         "listed in this report")
    kept = [r for r, found in zip(records, checks) if not found]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    dio.write_jsonl(partial, kept)
    partial.replace(out)
    return {"records": len(records), "written": len(kept), "missing_media": len(missing),
            "dropped_records": len(records) - len(kept), "placeholders_added": added,
            "missing_report": str(report_path) if missing else None, "out": str(out)}
