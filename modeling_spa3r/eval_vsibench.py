"""Resumable VSI-Bench runner for Spa3-VLM and plain Qwen2.5-VL checkpoints.

Usage (one process, or ``accelerate launch`` for several)::

    python eval/vsibench.py --model PATH --data /data/VSI-Bench --output-dir runs/vsibench
    accelerate launch --num_processes 8 eval/vsibench.py --model PATH --data /data/VSI-Bench --output-dir runs/x

What it does, following ``shared/spec/vsibench.md``:

* loads the questions with ``datasets.load_dataset`` from ``nyu-visionx/VSI-Bench`` (the Hub id or a local copy)
  or any VSI-format ``.jsonl``/``.json``/``.parquet``; videos come from the folder lmms-eval uses
  (``$HF_HOME/vsibench``, zips extracted there) unless extracted next to the questions (``--video-root`` wins);
* samples ``--num-frames`` frames (default 32) at indices ``floor(linspace(0, N-1, k))`` from
  ``<video-root>/<dataset>/<scene_name>.mp4`` (PyAV) or from a folder of frame images of that name;
* builds the official prompt and gives the frames to the model as a list of images (one image
  placeholder per frame, frames before the text), decodes greedily (16 new tokens), batched with
  left padding;
* appends one JSON line per answered question to its predictions file and flushes it at once; a
  restarted run skips every ``id`` already present in any predictions file of the output folder;
* controls for whether a model uses its visual inputs: ``--frames-from other-scene`` gives each question the frames
  of another scene's video (the next one in sorted order) and ``--geometry-from other-scene`` a Spa3-VLM the Spa3R
  views of that video, each while the other input stays its own; answers that do not move show a model that does
  not use that input;
* at the end (rank 0) merges the per-rank files into ``predictions.jsonl``, prints the per-task
  table, and writes ``results.json`` and ``results.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import video, vsibench
from .data import vsibench_data

__all__ = [
    "main",
    "build_parser",
    "run",
    "load_questions",
    "select_questions",
    "sample_frame_indices",
    "load_frames",
    "visual_path",
    "PredictionWriter",
    "read_predictions",
    "summarize",
    "plot_results",
]

DATASET_SOURCES = ("arkitscenes", "scannet", "scannetpp")
REQUIRED_FIELDS = ("id", "question_type", "question", "ground_truth")
RUN_CONFIG_FILE = "run_config.json"
MERGED_PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"
PLOT_FILE = "results.png"
# Settings that change answers: a resumed run must use the same ones as the answers on disk.
# The question set is part of the identity: the data source and a digest of the selected ids and ground truths; so
# are the weights (a model retrained into the same folder must not inherit the old model's answers).
RUN_CONFIG_KEYS = (
    "model", "weights", "num_frames", "prompt_profile", "parser", "max_new_tokens", "data", "debiased", "questions",
    "frames_from", "geometry_from",
)  # fmt: skip
RUN_CONFIG_DEFAULTS = {"frames_from": "own", "geometry_from": "own"}  # keys added later: what earlier runs used
VISUAL_SOURCES = ("own", "other-scene")
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _normalise_row(row: dict, source: Path, index: int) -> dict:
    missing = [field for field in REQUIRED_FIELDS if row.get(field) is None]
    if missing:
        raise ValueError(f"{source}: question {index} (id {row.get('id')!r}) lacks field(s) {', '.join(missing)}")
    question_type = row["question_type"]
    if question_type not in vsibench.QUESTION_TYPES:
        raise ValueError(
            f"{source}: question id {row['id']!r} has unknown question_type {question_type!r}; "
            f"expected one of {', '.join(vsibench.QUESTION_TYPES)}"
        )
    options = row.get("options")
    options = list(options) if options is not None else None
    if question_type in vsibench.NA_QUESTION_TYPES:
        vsibench.parse_ground_truth(row["ground_truth"], question_type, row["id"])
    # Validate options and the ground-truth letter now rather than after hours of inference.
    vsibench.build_prompt(row["question"], question_type, options)
    if question_type in vsibench.MCA_QUESTION_TYPES:
        vsibench.score("", row["ground_truth"], question_type, options, question_id=row["id"])
    if "video" not in row and not (row.get("dataset") and row.get("scene_name")):
        raise ValueError(
            f"{source}: question id {row['id']!r} needs 'dataset' and 'scene_name' (or a 'video' path) "
            "to locate its video"
        )
    return {**row, "options": options}


def load_questions(data: str | os.PathLike, debiased: bool = False) -> list[dict]:
    """Load and validate VSI-format questions with ``datasets.load_dataset``.

    ``data`` is the Hub id ``nyu-visionx/VSI-Bench``, a local copy of it (a folder with its ``README.md``
    configs or its question files) or one ``.parquet``/``.jsonl``/``.json`` file in VSI format (fields ``id``,
    ``question_type``, ``question``, ``ground_truth``, ``options``, ``dataset``, ``scene_name``; optionally
    ``video``: a path relative to the video root); see :mod:`modeling_spa3r.data.vsibench_data`.

    With ``debiased=True`` only VSI-Bench-Debiased questions are kept. Every row is validated up
    front (type, options, ground truth, duplicate ids) so that a long run cannot fail midway.
    """
    table, source = vsibench_data.load_vsibench(data, debiased)
    rows = table.to_list()
    questions, seen = [], set()
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source}: question {index} is not an object: {row!r}")
        question = _normalise_row(row, source, index)
        if question["id"] in seen:
            raise ValueError(f"{source}: duplicate question id {question['id']!r}")
        seen.add(question["id"])
        questions.append(question)
    if not questions:
        raise ValueError(f"{source}: no questions")
    return questions


def select_questions(
    questions: list[dict], question_types: Sequence[str] | None = None, limit: int | None = None
) -> list[dict]:
    """Keep the given question types (``object_rel_direction`` = its three subtypes), then the first ``limit``.

    Raises ``ValueError`` if the selection holds some but not all relative-direction subtypes,
    because the official ``object_rel_direction`` score is the mean of all three.
    """
    if question_types:
        wanted = set()
        for name in question_types:
            if name == "object_rel_direction":
                wanted.update(vsibench.REL_DIRECTION_TYPES)
            elif name in vsibench.QUESTION_TYPES:
                wanted.add(name)
            else:
                raise ValueError(
                    f"--question-types: unknown type {name!r}; expected object_rel_direction or one of "
                    f"{', '.join(vsibench.QUESTION_TYPES)}"
                )
        questions = [q for q in questions if q["question_type"] in wanted]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        questions = questions[:limit]
    if not questions:
        raise ValueError("the selection (--question-types/--limit) contains no questions")
    present = {q["question_type"] for q in questions} & set(vsibench.REL_DIRECTION_TYPES)
    if present and len(present) < len(vsibench.REL_DIRECTION_TYPES):
        missing = sorted(set(vsibench.REL_DIRECTION_TYPES) - present)
        raise ValueError(
            f"the selection contains {', '.join(sorted(present))} but not {', '.join(missing)}; "
            "object_rel_direction is the mean of all three subtypes. Select all of them or none, e.g. "
            "--question-types object_rel_direction or a --question-types list without them"
        )
    return questions


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def visual_path(question: dict, video_root: str | os.PathLike) -> Path:
    """Return the video file (``.mp4``) or frame folder of a question; error naming the path if absent."""
    root = Path(video_root)
    if question.get("video"):
        path = root / question["video"]
        candidates = [path]
    else:
        base = root / str(question["dataset"]) / str(question["scene_name"])
        candidates = [base.with_name(base.name + ".mp4"), base]
    for path in candidates:
        if path.is_file() or path.is_dir():
            return path
    raise FileNotFoundError(f"video of question id {question['id']!r} not found: {candidates[0]}")


def sample_frame_indices(total: int, num_frames: int) -> list[int]:
    """``floor(linspace(0, total - 1, num_frames))``; all frames when ``total < num_frames`` (see `video.py`)."""
    return video.sample_frame_indices(total, num_frames=num_frames)


def other_scene_videos(questions: list[dict], video_root: str | os.PathLike) -> dict:
    """The controls' donors: question id → the video of the next scene (videos sorted by path, cyclic), so no
    question gets its own scene's frames or geometry."""
    video_of = {q["id"]: visual_path(q, video_root) for q in questions}
    following = next_videos(video_of.values(), "--frames-from/--geometry-from other-scene")
    return {question_id: following[path] for question_id, path in video_of.items()}


def next_videos(videos, purpose: str) -> dict:
    """Each video → the next one of the set (sorted by path, cyclic): another scene's video, never its own."""
    videos = sorted(set(videos))
    if len(videos) < 2:
        raise ValueError(
            f"{purpose} needs questions from at least two scenes (videos); got {len(videos)}"
            + (f" ({videos[0]})" if videos else "")
        )
    return {path: videos[(i + 1) % len(videos)] for i, path in enumerate(videos)}


def load_frames(path: str | os.PathLike, num_frames: int) -> list:
    """Sample ``num_frames`` RGB PIL frames uniformly from a video file or a folder of frame images."""
    if not Path(path).exists():
        raise FileNotFoundError(f"video not found: {path}")
    return video.load_video_frames(path, {"num_frames": num_frames})


# ---------------------------------------------------------------------------------------------
# Predictions on disk
# ---------------------------------------------------------------------------------------------


def read_predictions(output_dir: str | os.PathLike) -> dict:
    """Read every ``predictions*.jsonl`` in ``output_dir`` into ``{id: record}``.

    A truncated last line (a run killed while writing) is ignored; a corrupt line elsewhere is an
    error naming the file and line.
    """
    records = {}
    for path in sorted(Path(output_dir).glob("predictions*.jsonl")):
        lines = path.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if number == len(lines):  # unterminated last line
                    continue
                raise ValueError(f"{path}:{number}: corrupt prediction line ({error})") from error
            records[record["id"]] = record
    return records


class PredictionWriter:
    """Append-only JSON-lines writer that flushes and fsyncs every record as soon as it is written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):  # drop a line cut short by a kill
                with open(self.path, "r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def question_set_digest(questions: list[dict]) -> str:
    """sha256 of the selected questions' ids and ground truths (order-independent): `N questions, sha256:...`."""
    import hashlib

    pairs = sorted((str(q["id"]), str(q["ground_truth"])) for q in questions)
    return f"{len(pairs)} questions, sha256:{hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]}"


def check_answered(answered: dict, questions: list[dict], output_dir: Path) -> None:
    """Every answer on disk must belong to a selected question and carry its ground truth."""
    truths = {q["id"]: q["ground_truth"] for q in questions}
    unknown = [qid for qid in answered if qid not in truths]
    if unknown:
        raise ValueError(
            f"{output_dir}: {len(unknown)} prediction(s) have ids that are not in the selected questions "
            f"(e.g. {unknown[:3]}); they come from another question set: use a new --output-dir"
        )
    wrong = [qid for qid, record in answered.items() if str(record.get("ground_truth")) != str(truths[qid])]
    if wrong:
        qid = wrong[0]
        raise ValueError(
            f"{output_dir}: prediction for id {qid!r} has ground_truth {answered[qid].get('ground_truth')!r}, "
            f"the data says {truths[qid]!r} ({len(wrong)} such); use a new --output-dir"
        )


def weights_digest(model: str | os.PathLike) -> str:
    """Identity of the weights `model` names: sha256 over its weight files (names and contents) for a local folder;
    the resolved commit for a Hub id (from the local cache, or the Hub when online)."""
    import hashlib

    path = Path(model)
    if path.is_dir():
        files = sorted({f for pattern in WEIGHT_FILE_PATTERNS for f in path.glob(pattern) if f.is_file()})
        if not files:
            raise ValueError(f"{path}: no weight files ({', '.join(WEIGHT_FILE_PATTERNS)}) in this model folder")
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        return f"{len(files)} files, sha256:{digest.hexdigest()[:16]}"
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(str(model), allow_patterns=["config.json"]))
    except Exception as error:  # offline and not cached, unknown repo, ...
        raise ValueError(f"--model {model}: neither a local folder nor a resolvable Hub model ({error})") from error
    return f"hub commit {snapshot.name}"


def _check_run_config(output_dir: Path, config: dict, is_main: bool) -> None:
    path = output_dir / RUN_CONFIG_FILE
    if not path.exists() and any(output_dir.glob("predictions*.jsonl")):
        raise ValueError(
            f"{output_dir} holds predictions but no {RUN_CONFIG_FILE}: they cannot be matched to these settings and "
            "questions; use a new --output-dir"
        )
    if path.exists():
        previous = json.loads(path.read_text())
        on_disk = {k: previous.get(k, RUN_CONFIG_DEFAULTS.get(k)) for k in RUN_CONFIG_KEYS}
        changed = {k: (on_disk[k], config[k]) for k in RUN_CONFIG_KEYS if on_disk[k] != config[k]}
        if changed:
            details = "; ".join(f"{k}: {old!r} on disk vs {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(
                f"{output_dir} holds answers from a run with different settings ({details}); "
                "use a new --output-dir or the same settings"
            )
    elif is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def load_model_and_processor(path: str, dtype: str = "auto", device=None, attn_implementation: str | None = None):
    """Load a Qwen2.5-VL or Spa3-VLM checkpoint (registered on ``import modeling_spa3r``) for inference."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs).eval()
    if device is not None:
        model.to(device)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def build_messages(num_frames: int, prompt: str) -> list[dict]:
    """One user turn: ``num_frames`` image placeholders (the frames, in order) followed by the prompt."""
    return [{"role": "user", "content": [*({"type": "image"} for _ in range(num_frames)), {"type": "text", "text": prompt}]}]


def generate_answers(
    model, processor, frames: list[list], prompts: list[str], max_new_tokens: int,
    geometry_frames: list[list] | None = None,
) -> list[str]:
    """Greedy-decode one batch (left padding); returns the raw generated texts, special tokens removed.

    `geometry_frames` (the geometry control): per sample, the frames whose Spa3R views replace its own; same count.
    """
    import torch

    texts = [
        processor.apply_chat_template(build_messages(len(f), p), add_generation_prompt=True, tokenize=False)
        for f, p in zip(frames, prompts)
    ]
    processor.tokenizer.padding_side = "left"
    images = [image for sample in frames for image in sample]
    inputs = processor(images=images or None, text=texts, padding=True, return_tensors="pt")
    if geometry_frames is not None:
        for index, (own, other) in enumerate(zip(frames, geometry_frames)):
            if len(own) != len(other):
                raise ValueError(f"sample {index}: {len(other)} geometry frames for {len(own)} frames")
        # the processor builds the Spa3R views exactly as for its own frames (its Qwen outputs are not used)
        views = [image for sample in geometry_frames for image in sample]
        other = processor(images=views, text=texts, padding=True, return_tensors="pt")
        inputs["geometry_pixel_values"] = other["geometry_pixel_values"]
        inputs["geometry_scene_sizes"] = other["geometry_scene_sizes"]
    inputs = inputs.to(model.device)
    floating = {k: v.to(model.dtype) for k, v in inputs.items() if torch.is_tensor(v) and v.is_floating_point()}
    inputs.update(floating)
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0
        )
    generated = output[:, inputs["input_ids"].shape[1] :]
    return processor.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def summarize(records: list[dict]) -> dict:
    """Official aggregate plus per-type question counts of the scored records."""
    counts = {}
    for record in records:
        counts[record["question_type"]] = counts.get(record["question_type"], 0) + 1
    return {
        "results": vsibench.aggregate(records),
        "num_questions": len(records),
        "question_type_counts": {t: counts[t] for t in vsibench.QUESTION_TYPES if t in counts},
    }


def plot_results(results: dict, path: str | os.PathLike, title: str) -> None:
    """Bar chart of overall and the eight task scores (×100)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["Overall", *vsibench.TASK_DISPLAY_NAMES.values()]
    values = [results.get("overall"), *(results.get(k) for k in vsibench.TASK_KEYS)]
    shown = [(n, 100 * v) for n, v in zip(names, values) if v is not None]
    figure, axis = plt.subplots(figsize=(9, 4), dpi=120)
    bars = axis.bar([n for n, _ in shown], [v for _, v in shown], color=["#444444"] + ["#4c72b0"] * (len(shown) - 1))
    axis.bar_label(bars, fmt="%.1f", fontsize=8)
    axis.set_ylim(0, 105)
    axis.set_ylabel("score (×100)")
    axis.set_title(title, fontsize=9)
    axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _merge_predictions(output_dir: Path, selected_ids: list) -> list[dict]:
    """Write ``predictions.jsonl`` with every answered question (selected ones in data order first)."""
    records = read_predictions(output_dir)
    order = {qid: i for i, qid in enumerate(selected_ids)}
    merged = sorted(records.values(), key=lambda r: (order.get(r["id"], len(order)), str(r["id"])))
    tmp = output_dir / (MERGED_PREDICTIONS_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in merged:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, output_dir / MERGED_PREDICTIONS_FILE)
    return [records[qid] for qid in selected_ids if qid in records]


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``eval/vsibench.py`` / ``spa3r eval``."""
    parser = argparse.ArgumentParser(
        prog="spa3r eval",
        description="Evaluate a Spa3-VLM or Qwen2.5-VL checkpoint on VSI-Bench with the official scoring.",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder (AutoModelForImageTextToText + AutoProcessor)")
    parser.add_argument("--data", required=True, help="nyu-visionx/VSI-Bench (Hub id), a local copy of it, or a VSI-format .jsonl/.json/.parquet")
    parser.add_argument("--video-root", help="folder holding arkitscenes/, scannet/, scannetpp/ (default: the data folder if "
                        "the videos are extracted there, else lmms-eval's $HF_HOME/vsibench, where the zips are extracted)")
    parser.add_argument("--output-dir", required=True, help="predictions, results.json and results.png go here")
    parser.add_argument("--num-frames", type=int, default=32, help="frames sampled uniformly per video (paper: 32); 0: "
                        "blind, the question text alone (VSI-Bench's vision-disabled baseline; needs no videos)")
    parser.add_argument("--batch-size", type=int, default=1, help="questions per generate() call")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="official: 16")
    parser.add_argument("--limit", type=int, help="only the first N selected questions")
    parser.add_argument(
        "--question-types",
        help="comma-separated question types to evaluate (object_rel_direction selects its three subtypes)",
    )
    parser.add_argument("--debiased", action="store_true", help="VSI-Bench-Debiased subset (2,362 questions)")
    parser.add_argument("--prompt-profile", default="default", choices=sorted(vsibench.PROMPT_PROFILES))
    parser.add_argument("--parser", default=vsibench.DEFAULT_PARSER, choices=vsibench.PARSERS, help="numerical answer parser")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--attn-implementation", help="e.g. sdpa or flash_attention_2")
    parser.add_argument(
        "--frames-from", default="own", choices=VISUAL_SOURCES,
        help="the frames the model sees: the question's own video, or (a control for vision use) the next scene's",
    )  # fmt: skip
    parser.add_argument(
        "--geometry-from", default="own", choices=VISUAL_SOURCES,
        help="Spa3-VLM's Spa3R views: the question's own video, or (a control for geometry use) the next scene's",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    return parser


def _batches(items: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _prefetched(batches: Iterator[list[dict]], load) -> Iterator[tuple[list[dict], list]]:
    """Yield ``(batch, load(batch))`` while the next batch's frames are decoded in a background thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(load, batch)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()


def _parsed_answer(output: str, question_type: str, parser: str):
    if question_type in vsibench.MCA_QUESTION_TYPES:
        return vsibench.reduce_prediction(output)
    if parser == "lmms-eval-2026":
        value = vsibench.extract_number_2026(output)
    else:
        value = vsibench.parse_number(vsibench.reduce_prediction(output))
    return value if value is None or math.isfinite(value) else repr(value)


def run(args: argparse.Namespace, model=None, processor=None, state=None) -> dict | None:
    """Evaluate, resuming from ``args.output_dir``; returns the summary on the main process, else ``None``.

    ``model``/``processor`` may be passed in already loaded (otherwise ``args.model`` is loaded);
    ``state`` is an ``accelerate.PartialState`` (created if omitted) that gives rank and world size.
    """
    from tqdm.auto import tqdm

    if state is None:
        import torch
        from accelerate import PartialState

        # Without an accelerator, accelerate only detects a multi-process launch in CPU mode (gloo).
        state = PartialState(cpu=not torch.cuda.is_available())
    if args.num_frames < 0 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--num-frames must be >= 0 (0: blind), --batch-size and --max-new-tokens >= 1")
    blind = args.num_frames == 0
    if blind and "other-scene" in (args.frames_from, args.geometry_from):
        raise ValueError("--frames-from/--geometry-from other-scene are controls of what a model sees; with "
                         "--num-frames 0 (blind) it sees nothing")
    output_dir = Path(args.output_dir)
    question_types = [t.strip() for t in args.question_types.split(",") if t.strip()] if args.question_types else None

    questions = select_questions(load_questions(args.data, debiased=args.debiased), question_types, args.limit)
    video_root = None if blind else vsibench_data.resolve_video_root(args.data, args.video_root, questions,
                                                                     state.is_main_process)  # fmt: skip
    config = {
        "model": str(args.model),
        "weights": weights_digest(args.model),
        "num_frames": args.num_frames,
        "prompt_profile": args.prompt_profile,
        "parser": args.parser,
        "max_new_tokens": args.max_new_tokens,
        "decoding": "greedy (do_sample=False, num_beams=1, repetition_penalty=1.0)",
        "data": str(args.data),
        "debiased": args.debiased,
        "questions": question_set_digest(questions),
        "frames_from": args.frames_from,
        "geometry_from": args.geometry_from,
    }
    _check_run_config(output_dir, config, state.is_main_process)
    state.wait_for_everyone()

    answered = read_predictions(output_dir)
    check_answered(answered, questions, output_dir)
    state.wait_for_everyone()  # every rank sees the same answered set before anyone writes
    todo = [q for q in questions if q["id"] not in answered]
    if not blind:  # fail now on a missing video, not hours later
        for question in todo:
            visual_path(question, video_root)
    swapped = {name: getattr(args, f"{name}_from") == "other-scene" for name in ("frames", "geometry")}
    donors = other_scene_videos(questions, video_root) if any(swapped.values()) else None
    shard = todo[state.process_index :: state.num_processes]
    if state.num_processes > 1:
        predictions_file = output_dir / f"predictions.rank{state.process_index}.jsonl"
    else:
        predictions_file = output_dir / MERGED_PREDICTIONS_FILE

    if shard:
        if model is None or processor is None:
            model, processor = load_model_and_processor(args.model, args.dtype, state.device, args.attn_implementation)
        uses_geometry = getattr(processor, "use_geometry", False)
        if swapped["geometry"] and not uses_geometry:
            raise ValueError(
                f"--geometry-from other-scene is a control for a model with geometry inputs; the processor of "
                f"{args.model} gives none (not a Spa3-VLM, or use_geometry is false)"
            )

        def load(batch):
            """Per question: the frames the model sees, and the frames for its Spa3R views when they differ."""
            if blind:
                return [([], None) for _ in batch]
            own = [visual_path(q, video_root) for q in batch]
            if donors is None:
                return [(load_frames(path, args.num_frames), None) for path in own]
            loaded = []
            for question, path in zip(batch, own):
                videos = {name: donors[question["id"]] if swapped[name] else path for name in swapped}
                frames = load_frames(videos["frames"], args.num_frames)
                geometry = None
                if uses_geometry and videos["geometry"] != videos["frames"]:
                    geometry = load_frames(videos["geometry"], len(frames))
                loaded.append((frames, geometry))
            return loaded

        progress = tqdm(
            total=len(shard),
            desc=f"VSI-Bench rank {state.process_index}" if state.num_processes > 1 else "VSI-Bench",
            disable=args.no_progress or not state.is_local_main_process,
        )
        with PredictionWriter(predictions_file) as writer:
            for batch, loaded in _prefetched(_batches(shard, args.batch_size), load):
                # Samples with different frame counts are generated separately (fixed V per sample).
                groups = {}
                for question, (sample, geometry) in zip(batch, loaded):
                    groups.setdefault(len(sample), []).append((question, sample, geometry))
                for group in groups.values():
                    prompts = [
                        vsibench.build_prompt(q["question"], q["question_type"], q["options"], args.prompt_profile)
                        for q, _, _ in group
                    ]
                    geometry = [g for _, _, g in group] if group[0][2] is not None else None
                    outputs = generate_answers(
                        model, processor, [s for _, s, _ in group], prompts, args.max_new_tokens, geometry
                    )
                    for (question, sample, _), prompt, output in zip(group, prompts, outputs):
                        writer.write(
                            {
                                "id": question["id"],
                                "question_type": question["question_type"],
                                "dataset": question.get("dataset"),
                                "scene_name": question.get("scene_name"),
                                "num_frames": len(sample),
                                **{f"{name}_video": str(donors[question["id"]]) for name, on in swapped.items() if on},
                                "prompt": prompt,
                                "output": output,
                                "answer": _parsed_answer(output, question["question_type"], args.parser),
                                "ground_truth": question["ground_truth"],
                                "score": vsibench.score(
                                    output,
                                    question["ground_truth"],
                                    question["question_type"],
                                    question["options"],
                                    args.parser,
                                    question_id=question["id"],
                                ),
                            }
                        )
                    progress.update(len(group))
        progress.close()

    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    records = _merge_predictions(output_dir, [q["id"] for q in questions])
    summary = summarize(records)
    summary["config"] = config
    subset = "VSI-Bench-Debiased" if args.debiased else "VSI-Bench"
    seen = f"{args.num_frames} frames" if args.num_frames else "blind (no frames)"
    title = f"{subset} | {Path(str(args.model)).name} | {seen} | {summary['num_questions']} questions"
    for name in ("frames", "geometry"):
        if getattr(args, f"{name}_from") != "own":
            title += f" | {name} from: {getattr(args, f'{name}_from')} (control)"
    summary["table"] = vsibench.format_table(summary["results"], title=title)
    (output_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    plot_results(summary["results"], output_dir / PLOT_FILE, title)
    print(summary["table"])
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eval/vsibench.py`` and the ``spa3r eval`` subcommand."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    PartialState().destroy_process_group()  # before exit, as in training (a no-op in a single process)
    return 0
