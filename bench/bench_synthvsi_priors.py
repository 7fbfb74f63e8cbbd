"""Blind-prior baselines of SynthVSI: how much a model can score without looking at the scene.

    python bench/bench_synthvsi_priors.py --data data/synth            # an existing `spa3r synth` output
    python bench/bench_synthvsi_priors.py --scenes 200 --out /tmp/synth  # generate first (small renders)

Prints three tables (x100, VSI-Bench scorer): priors fitted on the train split and scored on val + test,
5-fold cross-fitted priors scored on every question (more questions, less noise), and priors fitted on the
train rooms' question pool (every candidate question before the balanced selection, ``synthvsi_train_pool.jsonl``)
and scored on val + test. Columns: chance, the most frequent answer / mean value, and the best prior fitted from
question texts. Target: every multiple-choice type within 5 points of chance for the text prior of the split.

Train -> val + test, text prior minus chance (points): before the SynthVSI rework (100 scenes, 128x96,
355 eval questions) rel. distance +9.7, direction easy +12.5 / medium +16.7 / hard +18.8, route +28.6,
appearance order +0.0; after (``--scenes 200 --width 96 --height 72``, 1782 eval questions) -0.2,
+0.0 / +0.0 / +0.4, -1.0, +0.2. Cross-fitted multiple-choice scores fall a few points *below* chance
after the rework: answers are balanced exactly over each split, so a fold's majority answer is the
rest's minority (not exploitable across independently balanced splits).

The question pool is not balanced, and priors fitted on it show what text alone learns from more questions
of the same generator (2026-12-07, ``--scenes 200 --width 96 --height 72``, 4664 pool questions, 82 s): every
multiple-choice type within 3 points of chance except appearance order, +7.2 (32.2 on 214 questions, a
pairwise-order prior: beds, desks, tables and chairs tend to be seen before lamps, trash cans and microwaves);
overall 40.8 against the split's 40.4. With the whole-room scans (the camera turns once around during its walk,
same command, 2026-12-07, 5259 pool questions, 83 s to generate): appearance order +1.6 (26.6 on 214 questions),
the camera's turn decouples the first-appearance order from the categories; every multiple-choice type within 3
points of chance; overall 40.7 against the split's 40.2. A model trained on SynthVSI uses the video only where it
beats both.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.data.priors import blind_priors, cross_fitted_priors  # noqa: E402
from modeling_spa3r.data.synthetic import POOL_FILE, SynthConfig, generate_dataset  # noqa: E402


def _records(root: Path, split: str) -> list[dict]:
    path = root / f"synthvsi_{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="existing dataset folder (synthvsi_<split>.jsonl)")
    parser.add_argument("--scenes", type=int, default=200, help="scenes to generate when --data is not given")
    parser.add_argument("--out", type=Path, default=Path("/tmp/synthvsi_priors"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--frames", type=int, default=SynthConfig.frames)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    root = args.data
    if root is None:
        root = args.out
        config = SynthConfig(width=args.width, height=args.height, frames=args.frames, extras=False)
        start = time.perf_counter()
        generate_dataset(root, args.scenes, seed=args.seed, config=config, workers=args.workers,
                         val_fraction=0.25, test_fraction=0.25)
        print(f"generated {args.scenes} scenes in {time.perf_counter() - start:.0f} s")
    train, held_out = _records(root, "train"), _records(root, "val") + _records(root, "test")
    print(f"## train -> val + test ({len(train)} / {len(held_out)} questions, {root})")
    print(blind_priors(train, held_out).table())
    print(f"\n## {args.folds}-fold cross-fitted over all splits ({len(train) + len(held_out)} questions)")
    print(cross_fitted_priors(train + held_out, folds=args.folds).table())
    pool = root / POOL_FILE
    if pool.is_file():
        records = [json.loads(line) for line in pool.read_text().splitlines()]
        print(f"\n## train rooms' question pool -> val + test ({len(records)} / {len(held_out)} questions)")
        print(blind_priors(records, held_out).table())
    else:
        print(f"\n(no {POOL_FILE}: generated before the question pool existed; `spa3r synth` writes it)")


if __name__ == "__main__":
    main()
