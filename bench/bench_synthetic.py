"""Throughput of the synthetic scene generator (render + write every file) on this machine.

    python bench/bench_synthetic.py [--frames-total 1000 --width 224 --height 168 --workers 2]

Prints the render-only rate (one process) with the share of blank-wall frames, and the end-to-end
rate of ``generate_dataset`` (scenes, ScanNet-like folders, videos, SynthVSI, SFT, blind priors) in
frames per second. Baseline before the SynthVSI rework, run back to back with it on the same shared
2-core machine (wall rates swing 2x with the load there; CPU time is steadier): render only
20.0-26.2 frames/s, end to end 13.3-16.4 frames/s, 30.0 % blank-wall frames, 52-58 s CPU for the whole
script; after: 17.4-39.1 and 11.5-30.5 frames/s, 0.0-0.5 % blank-wall frames, 52-60 s CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.data.render import pack_scene, render  # noqa: E402
from modeling_spa3r.data.scenes import generate_scene  # noqa: E402
from modeling_spa3r.data.synthetic import SynthConfig, generate_dataset  # noqa: E402
from modeling_spa3r.data.trajectory import make_trajectory, walkable_check  # noqa: E402


def render_rate(width: int, height: int, frames: int) -> tuple[float, float]:
    """Frames per second of the ray caster alone over several scenes, and the share of frames in which
    objects cover less than 5 % of the image (blank-wall frames)."""
    total, elapsed, blank = 0, 0.0, 0
    for seed in range(4):
        scene = generate_scene(seed, free_check=walkable_check)
        traj = make_trajectory(np.random.default_rng(seed), scene.room, scene.objects, frames // 4)
        packed, k = pack_scene(scene), traj.intrinsics(width, height)
        start = time.perf_counter()
        frames_out = [render(packed, k, pose, width, height) for pose in traj.cam_to_world]
        elapsed += time.perf_counter() - start
        total += len(traj.cam_to_world)
        blank += sum((f.instance > 0).mean() < 0.05 for f in frames_out)
    return total / elapsed, blank / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-total", type=int, default=1000)
    parser.add_argument("--frames-per-scene", type=int, default=100)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--height", type=int, default=168)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rate, blank = render_rate(args.width, args.height, 400)
    print(f"render only, 1 process, {args.width}x{args.height}: {rate:.1f} frames/s; "
          f"blank-wall frames (objects < 5 % of the image): {100 * blank:.1f} %")
    scenes = math.ceil(args.frames_total / args.frames_per_scene)
    config = SynthConfig(width=args.width, height=args.height, frames=args.frames_per_scene)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = generate_dataset(out, scenes, seed=0, config=config, workers=args.workers, progress=False)
        elapsed = time.perf_counter() - start
    frames = scenes * args.frames_per_scene
    print(f"generate_dataset, {args.workers} workers: {frames} frames ({scenes} scenes, "
          f"{sum(summary['questions'].values())} questions) in {elapsed:.1f} s = {frames / elapsed:.1f} frames/s")


if __name__ == "__main__":
    main()
