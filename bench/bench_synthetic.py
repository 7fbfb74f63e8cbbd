"""Throughput of the synthetic scene generator (render + write every file) on this machine.

    python bench/bench_synthetic.py [--frames-total 1000 --width 224 --height 168 --workers 2]

Prints the render-only rate (one process) and the end-to-end rate of ``generate_dataset``
(scenes, ScanNet-like folders, videos, SynthVSI, SFT) in frames per second.
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


def render_rate(width: int, height: int, frames: int) -> float:
    """Frames per second of the ray caster alone, over several scenes."""
    total, elapsed = 0, 0.0
    for seed in range(4):
        scene = generate_scene(seed, free_check=walkable_check)
        traj = make_trajectory(np.random.default_rng(seed), scene.room, scene.objects, frames // 4)
        packed, k = pack_scene(scene), traj.intrinsics(width, height)
        start = time.perf_counter()
        for pose in traj.cam_to_world:
            render(packed, k, pose, width, height)
        elapsed += time.perf_counter() - start
        total += len(traj.cam_to_world)
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-total", type=int, default=1000)
    parser.add_argument("--frames-per-scene", type=int, default=100)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--height", type=int, default=168)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"render only, 1 process, {args.width}x{args.height}: "
          f"{render_rate(args.width, args.height, 400):.1f} frames/s")
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
