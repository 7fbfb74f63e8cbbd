"""Tiny files in the released formats of ScanNet (.sens), ScanNet++, VSI-590K-style annotations and VSI-Bench.

Every writer follows the published layout (``shared/spec/data-formats.md``, ``shared/spec/vsibench.md``) and
returns what it wrote, so tests compare the readers' output against it.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .fixtures_qwen import VSI_FIXTURE_ROWS, write_video


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def smooth_rgb(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth colour image (compresses well, survives JPEG)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 4 + seed * 40) % 256, (y * 4 + seed * 20) % 256,
                     np.full_like(x, (seed * 70) % 256)], axis=-1).astype(np.uint8)


def sens_scene(num_frames: int = 2, color_size=(40, 30), depth_size=(20, 15), invalid=()) -> dict:
    """Header values and frames of a small ScanNet-like scan; frames in ``invalid`` get a -inf pose."""
    rng = np.random.default_rng(0)
    intrinsic_color = np.array([[35.0, 0, 19.5, 0], [0, 35.5, 14.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    intrinsic_depth = np.array([[17.5, 0, 9.75, 0], [0, 17.75, 7.25, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    frames = []
    for index in range(num_frames):
        pose = np.eye(4)
        pose[:3, 3] = [0.5 * index, 1.25, -0.75 + index]
        pose[:3, :3] = np.array([[np.cos(0.1 * index), -np.sin(0.1 * index), 0],
                                 [np.sin(0.1 * index), np.cos(0.1 * index), 0], [0, 0, 1]])
        if index in invalid:
            pose = np.full((4, 4), -np.inf)
        depth = rng.integers(0, 5000, size=(depth_size[1], depth_size[0])).astype(np.uint16)
        frames.append({"pose": pose.astype(np.float32), "color": jpeg_bytes(smooth_rgb(index, *color_size)),
                       "depth": depth, "color_ts": 1000 * index, "depth_ts": 1000 * index + 7})
    return {"intrinsic_color": intrinsic_color, "extrinsic_color": np.eye(4), "intrinsic_depth": intrinsic_depth,
            "extrinsic_depth": np.eye(4), "color_size": color_size, "depth_size": depth_size,
            "depth_shift": 1000.0, "frames": frames}  # fmt: skip


def write_sens(path: Path, scene: dict, version: int = 4) -> Path:
    """A ``.sens`` file, byte by byte as the ScanNet format description lays it out."""
    name = b"StructureSensor"
    parts = [struct.pack("<I", version), struct.pack("<Q", len(name)), name]
    for key in ("intrinsic_color", "extrinsic_color", "intrinsic_depth", "extrinsic_depth"):
        parts.append(np.asarray(scene[key], dtype="<f4").tobytes())
    parts.append(struct.pack("<2i", 2, 1))  # jpeg colour, zlib depth
    parts.append(struct.pack("<4I", *scene["color_size"], *scene["depth_size"]))
    parts.append(struct.pack("<f", scene["depth_shift"]))
    parts.append(struct.pack("<Q", len(scene["frames"])))
    for frame in scene["frames"]:
        depth = zlib.compress(frame["depth"].astype("<u2").tobytes())
        parts.append(np.asarray(frame["pose"], dtype="<f4").tobytes())
        parts.append(struct.pack("<4Q", frame["color_ts"], frame["depth_ts"], len(frame["color"]), len(depth)))
        parts += [frame["color"], depth]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))
    return path


def write_scannetpp(root: Path, splits: dict[str, list[str]], images: int = 3, size=(60, 40)) -> dict:
    """A ScanNet++ release folder: ``splits/nvs_sem_*.txt``, per scene ``dslr/undistorted_images/DSC*.JPG`` and
    ``dslr/nerfstudio/transforms_undistorted.json`` (pinhole, OpenGL camera-to-world poses, one frame ``is_bad``).
    Returns ``{scene: {"files": [...], "poses": {name: 4x4}, "k": 3x3}}``."""
    written = {}
    (root / "splits").mkdir(parents=True)
    for split, scenes in splits.items():
        (root / "splits" / f"nvs_sem_{split}.txt").write_text("".join(f"{s}\n" for s in scenes))
        for number, scene in enumerate(scenes):
            image_dir = root / "data" / scene / "dslr" / "undistorted_images"
            image_dir.mkdir(parents=True)
            names = [f"DSC{1000 + 7 * i:05d}.JPG" for i in range(images)]
            for i, name in enumerate(names):
                Image.fromarray(smooth_rgb(number * 10 + i, *size)).save(image_dir / name, quality=95)
            poses = {}
            for i, name in enumerate(names):
                pose = np.eye(4)
                pose[:3, 3] = [i, 2.0, 0.5 * number]
                poses[name] = pose
            frames = [{"file_path": n, "transform_matrix": p.tolist(), "is_bad": i == images - 1}
                      for i, (n, p) in enumerate(poses.items())]
            transforms = {"camera_model": "PINHOLE", "fl_x": 50.0, "fl_y": 51.0, "cx": 29.5, "cy": 19.5,
                          "w": size[0], "h": size[1], "frames": frames}
            (image_dir.parent / "nerfstudio").mkdir()
            (image_dir.parent / "nerfstudio" / "transforms_undistorted.json").write_text(json.dumps(transforms))
            written[scene] = {"files": names, "poses": poses, "k": np.array([[50.0, 0, 29.5], [0, 51.0, 19.5], [0, 0, 1]])}
    return written


def write_iphone_stream(scene_dir: Path, frames: int = 4, size=(56, 42)) -> dict:
    """``iphone/rgb/frame_*.jpg``, ``iphone/depth/frame_*.png`` (uint16 mm) and the COLMAP text model
    ``iphone/colmap/{cameras,images}.txt`` (OPENCV camera; every frame but the last registered, as COLMAP leaves
    some out). Returns ``{"k", "registered": {name: camera-to-world}, "depth": {name: mm}}``."""
    iphone = scene_dir / "iphone"
    for folder in ("rgb", "depth", "colmap"):
        (iphone / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    registered, depths = {}, {}
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME"]
    for i in range(frames):
        name = f"frame_{30 * i:06d}.jpg"
        Image.fromarray(smooth_rgb(i, *size)).save(iphone / "rgb" / name, quality=95)
        depths[name] = rng.integers(1, 6000, size=(size[1], size[0])).astype(np.uint16)
        Image.fromarray(depths[name]).save(iphone / "depth" / name.replace(".jpg", ".png"))
        if i == frames - 1:
            continue
        angle = 0.3 * i  # rotation about z: quaternion (cos a/2, 0, 0, sin a/2)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        translation = np.array([0.1 * i, -0.2, 1.5])
        world_to_camera = np.eye(4)
        world_to_camera[:3, :3], world_to_camera[:3, 3] = rotation, translation
        registered[name] = np.linalg.inv(world_to_camera)
        values = [np.cos(angle / 2), 0, 0, np.sin(angle / 2), *translation]
        lines.append(f"{i + 1} {' '.join(repr(float(v)) for v in values)} 1 {name}")
        lines.append("12.5 3.25 -1 40.0 20.0 7" if i % 2 else "")
    (iphone / "colmap" / "images.txt").write_text("\n".join(lines) + "\n")
    (iphone / "colmap" / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n1 OPENCV 56 42 45.5 46.0 27.5 20.5 0.01 -0.02 0.001 0.0\n")
    return {"k": np.array([[45.5, 0, 27.5], [0, 46.0, 20.5], [0, 0, 1]]), "registered": registered, "depth": depths}


def write_annotation_media(root: Path) -> list[dict]:
    """Media under ``root`` and four VSI-590K-style records (video file, frame folder, image list, bare image)."""
    write_video(root / "scannet" / "scene0001_00.mp4", num_frames=4, seed=1)
    (root / "arkitscenes" / "frames_41069025").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(smooth_rgb(i, 32, 24)).save(root / "arkitscenes" / "frames_41069025" / f"{i}.jpg")
    for name in ("a.jpg", "b.jpg"):
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(smooth_rgb(5, 32, 24)).save(root / "images" / name)
    return [
        {"id": "vsi_0", "video": "scannet/scene0001_00.mp4", "data_source": "scannet",
         "conversations": [{"from": "human", "value": "<video>\nHow many chairs are in this room?"},
                           {"from": "gpt", "value": "4"}]},
        {"id": 17, "video": "arkitscenes/frames_41069025",
         "conversations": [{"from": "human", "value": "<|video|>\nWhat is the size of this room?"},
                           {"from": "gpt", "value": "12.5"}]},
        {"id": "vsi_2", "images": ["images/a.jpg", "images/b.jpg"],
         "conversations": [{"from": "human", "value": "<image><image>\nWhich is closer to the camera?"},
                           {"from": "gpt", "value": "A"}]},
        {"image": "images/b.jpg",
         "conversations": [{"from": "human", "value": "Is the door open?"}, {"from": "gpt", "value": "Yes"}]},
    ]  # fmt: skip


VSI_README = """---
configs:
- config_name: full
  default: true
  data_files:
  - split: test
    path: test.parquet
- config_name: debiased
  data_files:
  - split: test
    path: test_debiased.parquet
---
# VSI-Bench (test fixture)
"""
PRUNED_IDS = (3, 6, 9)


def write_vsibench_release(root: Path, num_frames: int = 6) -> Path:
    """A local copy of ``nyu-visionx/VSI-Bench`` as released: README configs, ``test.parquet`` (with ``pruned``),
    ``test_debiased.parquet`` and one ``<dataset>.zip`` per source holding ``<dataset>/<scene>.mp4``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(VSI_README)
    rows = [{**row, "pruned": row["id"] in PRUNED_IDS} for row in VSI_FIXTURE_ROWS]
    pq.write_table(pa.Table.from_pylist(rows), root / "test.parquet")
    pq.write_table(pa.Table.from_pylist([r for r in VSI_FIXTURE_ROWS if r["id"] not in PRUNED_IDS]),
                   root / "test_debiased.parquet")
    scenes = sorted({(row["dataset"], row["scene_name"]) for row in VSI_FIXTURE_ROWS})
    with tempfile.TemporaryDirectory() as staging:
        for seed, (dataset, scene) in enumerate(scenes):
            video = write_video(Path(staging) / dataset / f"{scene}.mp4", num_frames=num_frames, seed=seed)
            with zipfile.ZipFile(root / f"{dataset}.zip", "a") as bundle:
                bundle.write(video, f"{dataset}/{scene}.mp4")
    return root
