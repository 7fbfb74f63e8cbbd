"""Command line of the synthetic data tools (`spa3r synth ...` and `python processing/synthetic.py ...`).

    spa3r synth --scenes 20 --out data/synth --seed 0 [--width 320 --height 240 --frames 120]
    spa3r synth contact-sheet data/synth/scenes/<scene_name> --out sheet.png
    spa3r synth contact-sheet data/synth/scenes/<a> data/synth/scenes/<b> ... --out rooms.png

The same arguments give byte-identical outputs (whatever ``--workers`` is).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import vsibench
from ..cli import fraction, non_negative_int, positive_int
from .contact_sheet import write_contact_sheet, write_rooms_sheet
from .priors import format_prior_table
from .synthetic import SynthConfig, generate_dataset
from .synthvsi import QUESTION_TYPES, VSIBENCH_TYPE_COUNTS


def _generate(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="spa3r synth", description="Generate a synthetic multi-view dataset with SynthVSI questions.")
    parser.add_argument("--scenes", type=positive_int, required=True, help="number of scenes over all splits")
    parser.add_argument("--out", type=Path, required=True, help="output directory (also the VSI-Bench video root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=positive_int, default=SynthConfig.width)
    parser.add_argument("--height", type=positive_int, default=SynthConfig.height)
    parser.add_argument("--frames", type=positive_int, default=SynthConfig.frames, help="frames per scene")
    parser.add_argument("--fps", type=positive_int, default=SynthConfig.fps, help="video frame rate")
    parser.add_argument("--min-objects", type=non_negative_int, default=SynthConfig.min_objects)
    parser.add_argument("--max-objects", type=non_negative_int, default=SynthConfig.max_objects)
    parser.add_argument("--val-fraction", type=fraction, default=0.1)
    parser.add_argument("--test-fraction", type=fraction, default=0.1)
    parser.add_argument("--workers", type=positive_int, default=1, help="parallel rendering processes")
    parser.add_argument("--no-extras", action="store_true", help="skip semantic/ and normal/ maps")
    args = parser.parse_args(argv)
    config = SynthConfig(width=args.width, height=args.height, frames=args.frames, fps=args.fps,
                         min_objects=args.min_objects, max_objects=args.max_objects, extras=not args.no_extras)
    summary = generate_dataset(args.out, args.scenes, seed=args.seed, config=config, workers=args.workers,
                               val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    print(json.dumps({"out": str(args.out), "questions": summary["questions"],
                      "scenes": {k: len(v) for k, v in summary["splits"].items()}}))
    print(dataset_report(summary))


def dataset_report(summary: dict) -> str:
    """The question mix per split next to VSI-Bench's, and the blind-prior table (if computed)."""
    total_vsi = sum(VSIBENCH_TYPE_COUNTS.values())
    counts = {qt: sum(summary["question_types"].get(s, {}).get(qt, 0) for s in summary["question_types"])
              for qt in QUESTION_TYPES}
    total = max(1, sum(counts.values()))
    lines = ["| question type | questions | share % | VSI-Bench share % |", "|---|---:|---:|---:|"]
    for qt in QUESTION_TYPES:
        share, reference = 100 * counts[qt] / total, 100 * VSIBENCH_TYPE_COUNTS[qt] / total_vsi
        lines.append(f"| {qt} | {counts[qt]} | {share:.1f} | {reference:.1f} |")
    if "blind_priors" not in summary:
        lines.append("blind priors: not computed (needs questions in train and in val + test)")
    for priors in filter(None, (summary.get("blind_priors"), summary.get("blind_priors_pool"))):
        lines.append(f"blind priors (fit on {priors['fit']}, scored on {priors['scored']}, x100):")
        lines.append(format_prior_table(priors["per_type"], priors["tasks"], priors["text_prior"], priors["counts"]))
    if summary.get("blind_priors_pool"):
        lines.append("The question pool holds every candidate question of the train rooms, not balanced: priors fitted "
                     "on it show what text alone learns from more questions of the same generator. A model trained "
                     "on SynthVSI shows it uses the video only where it beats both tables.")
    if summary.get("frames_ceiling"):
        lines.append("What N uniformly sampled frames per question can answer: a perfect perceiver of them, scored on "
                     "val + test (x100; modeling_spa3r.data.answerability; a question they cannot answer scores the "
                     "best blind prior):")  # fmt: skip
        lines.append("| frames | overall | " + " | ".join(vsibench.TASK_DISPLAY_NAMES[k] for k in vsibench.TASK_KEYS)
                     + " |\n|---:|" + "---:|" * (len(vsibench.TASK_KEYS) + 1))  # fmt: skip
        for frames, tasks in sorted(summary["frames_ceiling"].items(), key=lambda item: int(item[0])):
            cells = [tasks.get(key) for key in ("overall", *vsibench.TASK_KEYS)]
            lines.append(f"| {frames} | " + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def _contact_sheet(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="spa3r synth contact-sheet",
                                     description="Write a contact-sheet PNG of one scene folder, or of several rooms "
                                                 "(one row of frames and a top-down map per room).")
    parser.add_argument("scene", type=Path, nargs="+", help="scene folder(s) (synthetic or ScanNet layout)")
    parser.add_argument("--out", type=Path, required=True, help="PNG path")
    parser.add_argument("--frames", type=positive_int, default=6, help="frames shown (per room)")
    args = parser.parse_args(argv)
    if len(args.scene) == 1:
        print(write_contact_sheet(args.scene[0], args.out, num_frames=args.frames))
    else:
        print(write_rooms_sheet(args.scene, args.out, frames_per_room=args.frames))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "contact-sheet":
        _contact_sheet(argv[1:])
    else:
        _generate(argv)


if __name__ == "__main__":
    main()
