"""Command line of the real-data preparation tools (`spa3r prepare ...` and `python processing/<tool>.py ...`).

    spa3r prepare scannet --scans /data/scannet/scans --out /data/scannet/export [--frame-skip 1 --workers 8]
    spa3r prepare scannetpp --root /data/scannetpp [--stream iphone] [--poses]
    spa3r prepare annotations vsi_590k.jsonl --media-root /data/vsi590k --out data/sft/vsi590k.jsonl [--drop-missing]
    spa3r prepare vsibench --data nyu-visionx/VSI-Bench [--video-root DIR]

Each prints a one-line JSON summary; long steps show progress bars; `scannet` skips scenes already exported.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOOLS = ("scannet", "scannetpp", "annotations", "vsibench")


def _scannet(argv: list[str]) -> dict:
    from .scannet import export_dataset

    parser = argparse.ArgumentParser(prog="spa3r prepare scannet",
                                     description="Export ScanNet .sens files to color/ depth/ pose/ intrinsic/ scene folders.")
    parser.add_argument("--scans", type=Path, required=True, help="ScanNet scans/ folder (<scene>/<scene>.sens) or one .sens")
    parser.add_argument("--out", type=Path, required=True, help="output root: <out>/<scene>/...")
    parser.add_argument("--frame-skip", type=int, default=1, help="export every N-th frame (ScanNet's reader: frame_skip)")
    parser.add_argument("--no-depth", action="store_true", help="leave out depth/ (images + cameras only)")
    parser.add_argument("--workers", type=int, default=1, help="scenes exported in parallel processes")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    results = export_dataset(args.scans, args.out, args.frame_skip, not args.no_depth, args.workers, not args.no_progress)
    return {"out": str(args.out), "scenes": len(results),
            "skipped_finished": sum(bool(r.get("skipped")) for r in results.values()),
            "frames": sum(r["exported"] for r in results.values()),
            "invalid_poses": sum(r["invalid_poses"] for r in results.values())}


def _scannetpp(argv: list[str]) -> dict:
    from . import scannetpp

    parser = argparse.ArgumentParser(prog="spa3r prepare scannetpp",
                                     description="Check a ScanNet++ release folder as the loader reads it (no export).")
    parser.add_argument("--root", type=Path, required=True, help="ScanNet++ root (data/, splits/)")
    parser.add_argument("--splits", nargs="+", default=list(scannetpp.SPLITS), help="splits to check")
    parser.add_argument("--stream", choices=scannetpp.STREAMS, default="dslr", help="DSLR images or iPhone frames")
    parser.add_argument("--poses", action="store_true",
                        help="also read the cameras (DSLR: nerfstudio transforms; iPhone: COLMAP model and depth)")
    parser.add_argument("--workers", type=int, default=8, help="scenes checked in parallel threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    summary = {"root": str(args.root)}
    for split in args.splits:
        scenes = scannetpp.read_split(args.root / "splits" / scannetpp.SPLITS.get(split, f"{split}.txt"))
        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
            opened = list(tqdm(pool.map(lambda s: scannetpp.open_scene(args.root / "data" / s, args.poses, args.stream), scenes),
                               total=len(scenes), desc=f"ScanNet++ {split}", unit="scene", disable=args.no_progress))
        summary[split] = {"scenes": len(opened), "images": sum(len(s) for s in opened)}
    return summary


def _annotations(argv: list[str]) -> dict:
    from .annotations import convert_annotations

    parser = argparse.ArgumentParser(prog="spa3r prepare annotations",
                                     description="VSI-590K / Spa3R-VLM annotations -> a checked SFT JSONL file.")
    parser.add_argument("files", nargs="+", type=Path, help="annotation JSON / JSONL files")
    parser.add_argument("--media-root", type=Path, help="folder the video/image paths are relative to")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL (spa3r sft --train_file)")
    parser.add_argument("--drop-missing", action="store_true",
                        help="leave out records whose media are missing (listed in <out>.missing.jsonl) instead of failing")
    parser.add_argument("--workers", type=int, default=8, help="threads checking media files")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    return convert_annotations(args.files, args.out, args.media_root, "drop" if args.drop_missing else "error",
                               args.workers, not args.no_progress)


def _vsibench(argv: list[str]) -> dict:
    from .io import DataError
    from .vsibench_data import HUB_DATASET, load_vsibench, missing_videos, resolve_video_root

    parser = argparse.ArgumentParser(prog="spa3r prepare vsibench",
                                     description="Load VSI-Bench, put its videos where the evaluation finds them, check them.")
    parser.add_argument("--data", default=HUB_DATASET, help="Hub id, local copy or question file")
    parser.add_argument("--video-root", type=Path, help="default: as lmms-eval ($HF_HOME/vsibench)")
    parser.add_argument("--debiased", action="store_true")
    args = parser.parse_args(argv)
    table, source = load_vsibench(args.data, args.debiased)
    questions = table.to_list()
    root = resolve_video_root(args.data, args.video_root, questions)
    missing = missing_videos(root, questions)
    if missing:
        raise DataError(root, f"{len(missing)} videos missing, e.g. {[str(m) for m in missing[:3]]}")
    return {"source": source, "questions": len(questions), "video_root": str(root)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOOLS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    tool = {"scannet": _scannet, "scannetpp": _scannetpp, "annotations": _annotations, "vsibench": _vsibench}[argv[0]]
    try:
        summary = tool(argv[1:])
    except (FileNotFoundError, ValueError) as error:  # DataError is a ValueError naming the file
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
