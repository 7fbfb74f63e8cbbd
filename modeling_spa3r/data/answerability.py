"""What the frames a model sees can answer: a perfect perceiver of each SynthVSI question's sampled frames.

A model sees `num_frames` frames of a question's video, sampled uniformly (`video.sample_frame_indices`). From
`scene.json`'s visibility lists (`visible_in` of each object and wall: the frames where it covers at least
`visibility_min_pixels` pixels), for each question:

* it is *answerable* when everything it needs is visible in at least one sampled frame: every instance of each
  category it names (a category with several instances is measured to its closest one, so all of them are needed),
  and, for room size, every wall;
* the perceiver's score: appearance order, one of the options consistent with the order of first appearance in the
  sampled frames, at random (expected accuracy 1/k of k consistent options; an object no sampled frame shows
  constrains nothing); every other type, full marks where answerable, else the best blind prior's score for that
  type (`fallback`).

The ceiling assumes perfect recognition, depth and reasoning on what is visible, so real models fall well below it;
where it is close to the blind prior, the frames do not hold the answers and no model can be expected to beat the
prior on that task.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import vsibench
from ..video import sample_frame_indices
from .scenes import OBJECT_CLASSES

_CATEGORY = re.compile(r"\b(" + "|".join(sorted(map(re.escape, OBJECT_CLASSES), key=len, reverse=True)) + r")\b")


@dataclass
class FramesCeiling:
    """A perfect perceiver's scores from `num_frames` sampled frames; fractions in [0, 1]."""

    num_frames: int
    answerable: dict[str, float]  # question type → share of its questions answerable from the sampled frames
    per_type: dict[str, float]  # question type → the perceiver's mean score
    tasks: dict[str, float]  # official task keys and "overall" (vsibench.aggregate)


class _SceneVisibility:
    """Which objects and walls of one scene the sampled frames show."""

    def __init__(self, meta: dict, num_frames: int):
        name = meta.get("scene_name")
        if "walls" not in meta or any("visible_in" not in obj for obj in meta["objects"]):
            raise ValueError(f"scene {name!r}: scene.json has no per-frame visibility ('visible_in' of objects and "
                             "'walls'; scenes rendered before the whole-room scans of 2026-12-07 lack it): render the "
                             "rooms again with `spa3r synth`")  # fmt: skip
        frames = sample_frame_indices(meta["camera"]["num_frames"], num_frames=num_frames)
        position = {frame: k for k, frame in enumerate(frames)}
        self.instances: dict[str, list[int | None]] = defaultdict(list)  # category → first sampled frame per instance
        for obj in meta["objects"]:
            seen = [position[f] for f in obj["visible_in"] if f in position]
            self.instances[obj["category"]].append(min(seen) if seen else None)
        self.whole_room = all(any(f in position for f in wall["visible_in"]) for wall in meta["walls"])

    def all_seen(self, category: str) -> bool:
        return all(first is not None for first in self.instances[category])

    def first_seen(self, category: str) -> int | None:
        """Index among the sampled frames of the category's first appearance (None: no sampled frame shows it)."""
        return min((f for f in self.instances[category] if f is not None), default=None)


def _perceive(record: dict, scene: _SceneVisibility, fallback: dict[str, float]) -> tuple[bool, float]:
    """(answerable, the perfect perceiver's score) of one record."""
    question_type = record["question_type"]
    if question_type == "obj_appearance_order":
        first = {c: f for c in _CATEGORY.findall(record["question"]) if (f := scene.first_seen(c)) is not None}
        orders = {o.split(".", 1)[0].strip(): [c.strip() for c in o.split(".", 1)[1].split(",")]
                  for o in record["options"]}  # fmt: skip
        consistent = [letter for letter, order in orders.items()
                      if all(first[a] <= first[b] for i, a in enumerate(order) for b in order[i + 1:]
                             if a in first and b in first)]  # fmt: skip
        right = record["ground_truth"] in consistent
        return consistent == [record["ground_truth"]], (1.0 / len(consistent) if right else 0.0)
    if question_type == "room_size_estimation":
        answerable = scene.whole_room
    else:
        named = _CATEGORY.findall(record["question"] + " " + " ".join(record.get("options") or []))
        answerable = all(scene.all_seen(c) for c in named)
    return answerable, (1.0 if answerable else fallback[question_type])


def best_prior_per_type(fits) -> dict[str, float]:
    """Question type → the best score among blind-prior fits (each a `BlindPriors.per_type`: prior → type → score) of
    the most-frequent and the text prior: `frames_ceiling`'s fallback."""
    best: dict[str, float] = {}
    for per_type in fits:
        for prior in ("frequent", "text"):
            for question_type, score in per_type[prior].items():
                best[question_type] = max(score, best.get(question_type, 0.0))
    return best


def frames_ceiling(records: list[dict], scenes_root: str | Path, num_frames: int,
                   fallback: dict[str, float]) -> FramesCeiling:  # fmt: skip
    """A perfect perceiver of `num_frames` uniformly sampled frames of each record's video (`scenes_root`/<scene>/
    scene.json) on SynthVSI `records`; `fallback`: question type → the best blind prior's score, for questions the
    frames cannot answer."""
    if num_frames < 1:
        raise ValueError(f"frames_ceiling: num_frames must be >= 1, got {num_frames}")
    missing = sorted({r["question_type"] for r in records} - set(fallback))
    if missing:
        raise ValueError(f"frames_ceiling: no fallback (blind prior) score for {', '.join(missing)}")
    scenes: dict[str, _SceneVisibility] = {}
    answerable, per_type, scored = defaultdict(list), defaultdict(list), []
    for record in records:
        name = record["scene_name"]
        if name not in scenes:
            path = Path(scenes_root) / name / "scene.json"
            if not path.is_file():
                raise FileNotFoundError(f"frames_ceiling: {path} not found (question {record['id']})")
            scenes[name] = _SceneVisibility(json.loads(path.read_text()), num_frames)
        ok, score = _perceive(record, scenes[name], fallback)
        answerable[record["question_type"]].append(ok)
        per_type[record["question_type"]].append(score)
        scored.append({"question_type": record["question_type"], "score": score})
    return FramesCeiling(num_frames, {t: float(np.mean(v)) for t, v in answerable.items()},
                         {t: float(np.mean(v)) for t, v in per_type.items()}, vsibench.aggregate(scored))  # fmt: skip
