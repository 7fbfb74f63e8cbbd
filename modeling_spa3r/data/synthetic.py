"""End-to-end synthetic dataset generation: scenes -> rendered ScanNet-like folders -> SynthVSI.

Output layout of :func:`generate_dataset` (``<out>`` is also the VSI-Bench video root)::

    <out>/scenes/<scene_name>/...            one ScanNet-like folder per scene (see ``io``)
    <out>/synthvsi/<scene_name>.mp4          the trajectory video, VSI-Bench path convention
    <out>/synthvsi_<split>.jsonl             SynthVSI questions (VSI-Bench record format)
    <out>/sft/synthvsi_<split>_sft.json      SFT conversations (VSI-590K style) of the train split, and of val /
                                             test when they have questions (held-out loss during SFT)
    <out>/synthvsi_train_pool.jsonl          every candidate question of the train rooms, before the balanced
                                             selection (not debiased; fits the stronger blind priors)
    <out>/dataset.json                       generation settings, splits, scene seeds, question counts per
                                             type, blind-prior scores (train split -> val + test, and train
                                             rooms' question pool -> val + test, see ``priors``)

Scene seeds of the train/val/test splits come from disjoint ranges (``scene_seed``), so no scene
is shared between splits. Everything is byte-identical for the same arguments.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import io as dio
from .answerability import best_prior_per_type, frames_ceiling
from .render import WALL_SIDES, pack_scene, render
from .scenes import SEMANTIC_CLASSES, generate_scene
from .priors import blind_priors
from .synthvsi import build_questions, build_sft, question_pool
from .trajectory import make_trajectory, walkable_check

SPLITS = ("train", "val", "test")
DATASET_NAME = "synthvsi"
#: every candidate question of the train rooms (`synthvsi.question_pool`): a stronger fit for the blind priors
POOL_FILE = f"{DATASET_NAME}_train_pool.jsonl"
_SEED_STRIDE = 1_000_000
CEILING_FRAMES = (4, 8, 16, 32)  # frames per question of `spa3r synth`'s perfect-perceiver table


@dataclass(frozen=True)
class SynthConfig:
    """Rendering settings shared by all scenes of a dataset."""

    width: int = 320
    height: int = 240
    frames: int = 120
    fps: int = 10
    min_objects: int = 4
    max_objects: int = 25
    hfov_min: float = 60.0
    hfov_max: float = 90.0
    extras: bool = True  # also write semantic/ and normal/ maps

    def visibility_min_pixels(self) -> int:
        """Pixels an instance needs in a frame to count as visible (0.2% of the image, at least 16)."""
        return max(16, math.ceil(0.002 * self.width * self.height))


def scene_seed(base_seed: int, split: str, index: int) -> int:
    """Seed of scene ``index`` of ``split``; the three splits use disjoint seed ranges."""
    if not 0 <= index < _SEED_STRIDE:
        raise ValueError(f"scene index {index} out of range [0, {_SEED_STRIDE})")
    return (base_seed * len(SPLITS) + SPLITS.index(split)) * _SEED_STRIDE + index


def scene_name_for(seed: int) -> str:
    return f"synth_{seed:010d}"


def split_counts(num_scenes: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, int]:
    """Scenes per split; val/test get at least one scene each once there are 3 or more scenes."""
    n_val = max(1, round(num_scenes * val_fraction)) if num_scenes >= 3 and val_fraction > 0 else 0
    n_test = max(1, round(num_scenes * test_fraction)) if num_scenes >= 3 and test_fraction > 0 else 0
    return {"train": num_scenes - n_val - n_test, "val": n_val, "test": n_test}


def render_scene_folder(scene_dir: Path, video_path: Path, seed: int, config: SynthConfig) -> dict:
    """Generate, render and write one scene; returns the ``scene.json`` content."""
    scene = generate_scene(seed, config.min_objects, config.max_objects, free_check=walkable_check)
    traj = make_trajectory(np.random.default_rng([seed, 1]), scene.room, scene.objects, config.frames,
                           (config.hfov_min, config.hfov_max))
    w, h = config.width, config.height
    k = traj.intrinsics(w, h)
    packed = pack_scene(scene)
    folders = ["color", "depth", "pose", "intrinsic", "instance"] + (["semantic", "normal"] if config.extras else [])
    for name in folders:
        (scene_dir / name).mkdir(parents=True, exist_ok=True)
    n_ids = len(scene.objects) + 1
    pixels = np.zeros((config.frames, n_ids), dtype=np.int64)  # per frame, per instance id
    wall_pixels = np.zeros((config.frames, len(WALL_SIDES)), dtype=np.int64)  # per frame, per wall
    video = []
    for i in range(config.frames):
        frame = render(packed, k, traj.cam_to_world[i], w, h)
        dio.write_jpeg(scene_dir / "color" / f"{i}.jpg", frame.rgb)
        dio.write_png(scene_dir / "depth" / f"{i}.png", dio.depth_to_png(frame.depth))
        dio.write_png(scene_dir / "instance" / f"{i}.png", frame.instance)
        dio.write_matrix(scene_dir / "pose" / f"{i}.txt", traj.cam_to_world[i])
        if config.extras:
            dio.write_png(scene_dir / "semantic" / f"{i}.png", frame.semantic)
            dio.write_png(scene_dir / "normal" / f"{i}.png", dio.normal_to_png(frame.normal))
        pixels[i] = np.bincount(frame.instance.ravel(), minlength=n_ids)[:n_ids]
        wall_pixels[i] = np.bincount(frame.wall[frame.wall >= 0], minlength=len(WALL_SIDES))
        video.append(frame.rgb)
    dio.write_matrix(scene_dir / "intrinsic" / "intrinsic_color.txt", dio.intrinsics_4x4(k))
    dio.write_matrix(scene_dir / "intrinsic" / "intrinsic_depth.txt", dio.intrinsics_4x4(k))
    video_path.parent.mkdir(parents=True, exist_ok=True)
    dio.write_video(video_path, video, config.fps)
    meta = _scene_json(scene, traj, k, pixels, wall_pixels, config)
    meta["scene_name"] = scene_dir.name
    meta["video"] = f"{DATASET_NAME}/{video_path.name}"
    dio.write_json(scene_dir / "scene.json", meta)
    return meta


def _scene_json(scene, traj, k: np.ndarray, pixels: np.ndarray, wall_pixels: np.ndarray, config: SynthConfig) -> dict:
    """scene.json: room, objects with boxes and visibility, walls with visibility, camera path. An object or wall is
    visible in a frame where it covers at least `visibility_min_pixels` pixels."""
    threshold = config.visibility_min_pixels()
    meta = scene.to_json()
    for obj in meta["objects"]:
        counts = pixels[:, obj["instance_id"]]
        seen = np.nonzero(counts >= threshold)[0]
        obj["first_visible_frame"] = int(seen[0]) if len(seen) else None
        obj["visible_frames"] = int(len(seen))
        obj["visible_in"] = seen.tolist()
        obj["max_pixels"] = int(counts.max())
    meta["walls"] = [{"side": side, "visible_in": np.nonzero(wall_pixels[:, w] >= threshold)[0].tolist()}
                     for w, side in enumerate(WALL_SIDES)]  # fmt: skip
    meta["camera"] = {
        "width": config.width, "height": config.height, "fps": config.fps, "num_frames": config.frames,
        "hfov_deg": round(traj.hfov_deg, 6), "intrinsics": [[round(float(v), 6) for v in row] for row in k],
        "convention": "opencv", "pose": "camera_to_world",
        "cam_to_world": [[[round(float(v), 6) for v in row] for row in pose] for pose in traj.cam_to_world],
    }
    meta["visibility_min_pixels"] = threshold
    meta["semantic_classes"] = list(SEMANTIC_CLASSES)
    meta["depth_scale"] = dio.DEPTH_SCALE
    return meta


def _render_job(job: tuple) -> dict:
    out_dir, name, seed, config = job
    return render_scene_folder(Path(out_dir) / "scenes" / name, Path(out_dir) / DATASET_NAME / f"{name}.mp4", seed, config)


def generate_dataset(out_dir, num_scenes: int, seed: int = 0, config: SynthConfig | None = None,
                     workers: int = 1, val_fraction: float = 0.1, test_fraction: float = 0.1,
                     progress: bool = True) -> dict:
    """Render ``num_scenes`` scenes and write SynthVSI questions and SFT conversations.

    Returns the summary also written to ``<out_dir>/dataset.json``. ``workers`` > 1 renders scenes
    in parallel processes; the output does not depend on it.
    """
    config = config or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = split_counts(num_scenes, val_fraction, test_fraction)
    jobs, split_of = [], {}
    for split in SPLITS:
        for index in range(counts[split]):
            s = scene_seed(seed, split, index)
            name = scene_name_for(s)
            jobs.append((str(out), name, s, config))
            split_of[name] = split
    bar = dict(total=len(jobs), desc="scenes", unit="scene", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            metas = list(tqdm(pool.imap(_render_job, jobs), **bar))
    else:
        metas = [_render_job(job) for job in tqdm(jobs, **bar)]
    summary = {"dataset": DATASET_NAME, "seed": seed, "config": asdict(config)}
    return _write_questions(out, summary, {split: [m for m in metas if split_of[m["scene_name"]] == split]
                                           for split in SPLITS})


def rebuild_questions(out_dir) -> dict:
    """Rewrite the SynthVSI, SFT and ``dataset.json`` files of a generated dataset from its scene folders
    (``scenes/*/scene.json``) with the current question rules, without rendering again. Returns the
    new summary; for an unchanged generator the files are byte-identical to what it wrote."""
    out = Path(out_dir)
    old = dio.read_json(out / "dataset.json")
    metas = {split: [dio.read_json(out / "scenes" / name / "scene.json") for name in old["splits"][split]]
             for split in SPLITS}
    summary = {"dataset": DATASET_NAME, "seed": old["seed"], "config": old["config"]}
    return _write_questions(out, summary, metas)


def _fitted_priors(train: list[dict], held_out: list[dict]):
    """Blind priors fitted on `train` and scored on `held_out`; None when they share no question type."""
    if not train or not held_out:
        return None
    try:
        return blind_priors(train, held_out)
    except ValueError:  # no question type in both (tiny datasets)
        return None


def _write_questions(out: Path, summary: dict, metas: dict[str, list[dict]]) -> dict:
    """Questions, SFT conversations, question counts and blind priors of the scenes of each split."""
    seed = summary["seed"]
    summary.update({"splits": {}, "questions": {}, "question_types": {}})
    next_id, split_records = 0, {}
    for split in SPLITS:
        split_metas = metas[split]
        records = build_questions(split_metas, np.random.default_rng([seed, SPLITS.index(split), 7]), DATASET_NAME,
                                  first_id=next_id)
        next_id += len(records)
        dio.write_jsonl(out / f"{DATASET_NAME}_{split}.jsonl", records)
        summary["splits"][split] = {m["scene_name"]: m["seed"] for m in split_metas}
        summary["questions"][split] = len(records)
        summary["question_types"][split] = dict(sorted(Counter(r["question_type"] for r in records).items()))
        split_records[split] = records
        if split == "train" or records:  # held-out conversations give SFT a held-out loss (`--eval_file`)
            (out / "sft").mkdir(exist_ok=True)
            dio.write_json(out / "sft" / f"{DATASET_NAME}_{split}_sft.json", build_sft(records))
    pool = question_pool(metas["train"], np.random.default_rng([seed, 0, 11]), DATASET_NAME, first_id=next_id)
    dio.write_jsonl(out / POOL_FILE, pool)
    summary["train_pool_questions"] = len(pool)
    held_out = split_records["val"] + split_records["test"]
    for key, fit, train in (("blind_priors", "train", split_records["train"]),
                            ("blind_priors_pool", "train rooms' question pool", pool)):  # fmt: skip
        priors = _fitted_priors(train, held_out)
        if priors is not None:
            summary[key] = {"fit": fit, "scored": "val + test", "per_type": priors.per_type, "tasks": priors.tasks,
                            "text_prior": priors.text_family, "counts": {qt: list(n) for qt, n in priors.counts.items()}}
    if "blind_priors" in summary:
        summary["frames_ceiling"] = _frames_ceilings(out, held_out, summary)
    dio.write_json(out / "dataset.json", summary)
    return summary


def _frames_ceilings(out: Path, held_out: list[dict], summary: dict) -> dict:
    """Val + test scored by a perfect perceiver of 4, 8, 16, 32 frames (no more than the videos have; `answerability`):
    frame count → task key → score; a question the frames cannot answer scores its type's best blind prior (types
    without one, absent from the train split, are left out)."""
    fits = [summary[key]["per_type"] for key in ("blind_priors", "blind_priors_pool") if summary.get(key)]
    fallback = best_prior_per_type(fits)
    scored = [r for r in held_out if r["question_type"] in fallback]
    frames = summary["config"]["frames"]
    return {str(n): frames_ceiling(scored, out / "scenes", n, fallback).tasks for n in CEILING_FRAMES if n <= frames}
