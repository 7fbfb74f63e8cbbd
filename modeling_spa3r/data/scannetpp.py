"""ScanNet++ read in its released layout (no export step).

What the reference pretraining reads::

    <root>/splits/nvs_sem_train.txt, nvs_sem_val.txt       one scene id per line
    <root>/data/<scene>/dslr/undistorted_images/*.JPG      undistorted DSLR images (the toolkit's undistortion)

Images only: cameras and targets come from the VGGT teacher. With ``poses=True`` the cameras of the same images
are read from ``<root>/data/<scene>/dslr/nerfstudio/transforms_undistorted.json`` (the toolkit's output next to
the images: pinhole ``fl_x, fl_y, cx, cy`` at ``w x h``, and per frame ``file_path`` and a camera-to-world
``transform_matrix`` in nerfstudio's OpenGL axes, converted here to OpenCV; frames flagged ``is_bad`` are left
out), for ``cameras: ground_truth``.

The iPhone stream (``stream=iphone``, which the authors left out) reads ``iphone/rgb/*.jpg`` as extracted by the
toolkit's ``iphone.prepare_iphone_data``; with poses, the frames registered in the COLMAP text model
``iphone/colmap/{cameras,images}.txt`` (world-to-camera quaternion and translation, OpenCV axes; the toolkit's own
renderer uses it), their pinhole ``fx, fy, cx, cy`` (the small OPENCV distortion terms are not applied) and, when
``iphone/depth/`` exists, the depth maps of the same names (uint16 millimetres at 256x192).

A data root for the loaders (``scannetpp:PATH``) is ``<root>`` (train split) or a split file
(``<root>/splits/nvs_sem_val.txt``), optionally followed by ``?poses=1`` and/or ``?stream=iphone``
(``...?poses=1&stream=iphone``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from . import io as dio
from .image_scene import ImageScene

logger = logging.getLogger(__name__)

SPLITS = {"train": "nvs_sem_train.txt", "val": "nvs_sem_val.txt"}
STREAMS = ("dslr", "iphone")
IMAGE_DIR = Path("dslr") / "undistorted_images"
TRANSFORMS = Path("dslr") / "nerfstudio" / "transforms_undistorted.json"
IPHONE_RGB = Path("iphone") / "rgb"
IPHONE_DEPTH = Path("iphone") / "depth"
IPHONE_COLMAP = Path("iphone") / "colmap"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: nerfstudio / OpenGL camera axes (x right, y up, z back) -> OpenCV (x right, y down, z forward).
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def is_root(path) -> bool:
    """A ScanNet++ release root: ``data/`` and ``splits/`` folders."""
    path = Path(path)
    return (path / "data").is_dir() and (path / "splits").is_dir()


def read_split(path) -> list[str]:
    """Scene ids of a split file (one per line; blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise dio.DataError(path, "missing ScanNet++ split file")
    scenes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not scenes:
        raise dio.DataError(path, "empty ScanNet++ split file")
    return scenes


def _transform_cameras(scene_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """{image name: (4, 4) camera-to-world, OpenCV} of the usable frames and the shared (3, 3) K."""
    path = scene_dir / TRANSFORMS
    transforms = dio.read_json(path)
    try:
        k = np.array([[transforms["fl_x"], 0, transforms["cx"]], [0, transforms["fl_y"], transforms["cy"]],
                      [0, 0, 1]], dtype=np.float64)
        poses = {}
        for frame in transforms["frames"]:
            if frame.get("is_bad", False):
                continue
            pose = np.array(frame["transform_matrix"], dtype=np.float64).reshape(4, 4)
            if np.isfinite(pose).all():
                poses[Path(frame["file_path"]).name] = pose @ _OPENGL_TO_OPENCV
    except (KeyError, TypeError, ValueError) as err:
        raise dio.DataError(path, f"not a nerfstudio transforms file ({type(err).__name__}: {err})") from err
    if transforms.get("camera_model", "PINHOLE") != "PINHOLE":
        raise dio.DataError(path, f"camera_model must be PINHOLE (undistorted images), got {transforms['camera_model']!r}")
    return poses, k


def _colmap_lines(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise dio.DataError(path, "missing COLMAP model file")
    return [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def read_colmap_cameras(path) -> dict[int, np.ndarray]:
    """COLMAP ``cameras.txt`` -> {camera id: (3, 3) pinhole K from the first four parameters fx, fy, cx, cy}."""
    path, cameras = Path(path), {}
    for tokens in _colmap_lines(path):
        try:
            model, params = tokens[1], [float(v) for v in tokens[4:]]
            if model == "SIMPLE_PINHOLE" or model.startswith("SIMPLE_RADIAL"):
                fx = fy = params[0]
                cx, cy = params[1:3]
            else:
                fx, fy, cx, cy = params[:4]
            cameras[int(tokens[0])] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
        except (IndexError, ValueError) as err:
            raise dio.DataError(path, f"unparseable camera line {' '.join(tokens)!r} ({err})") from err
    return cameras


def _quaternion_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    w, x, y, z = np.array([w, x, y, z]) / np.linalg.norm([w, x, y, z])
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def read_colmap_images(path) -> dict[str, tuple[int, np.ndarray]]:
    """COLMAP ``images.txt`` -> {image name: (camera id, (4, 4) camera-to-world, OpenCV axes)}.

    Image lines are ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (world-to-camera); the point lines after
    them (triples) are ignored."""
    path, images = Path(path), {}
    for tokens in _colmap_lines(path):
        if len(tokens) != 10:  # a 2D-point line: x y point3D_id triples
            continue
        try:
            world_to_camera = np.eye(4)
            world_to_camera[:3, :3] = _quaternion_matrix(*map(float, tokens[1:5]))
            world_to_camera[:3, 3] = [float(v) for v in tokens[5:8]]
            images[Path(tokens[9]).name] = (int(tokens[8]), np.linalg.inv(world_to_camera))
        except ValueError as err:
            raise dio.DataError(path, f"unparseable image line {' '.join(tokens)!r} ({err})") from err
    return images


def _frame_files(folder: Path, what: str, toolkit_step: str) -> list[Path]:
    """The image files of a frame folder, sorted by name; a missing or empty folder is named."""
    if not folder.is_dir():
        raise dio.DataError(folder, f"missing ScanNet++ {what} folder (run the toolkit's {toolkit_step})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise dio.DataError(folder, f"no images in the ScanNet++ {what} folder")
    return files


def _iphone_scene(scene_dir: Path, poses: bool) -> ImageScene:
    files = _frame_files(scene_dir / IPHONE_RGB, "iPhone frame", "iphone.prepare_iphone_data")
    if not poses:
        return ImageScene(scene_dir, files)
    cameras = read_colmap_cameras(scene_dir / IPHONE_COLMAP / "cameras.txt")
    registered = read_colmap_images(scene_dir / IPHONE_COLMAP / "images.txt")
    kept = [f for f in files if f.name in registered]
    if not kept:
        raise dio.DataError(scene_dir / IPHONE_COLMAP / "images.txt", "no frame of iphone/rgb is registered")
    missing_camera = sorted({registered[f.name][0] for f in kept} - set(cameras))
    if missing_camera:
        raise dio.DataError(scene_dir / IPHONE_COLMAP / "cameras.txt", f"camera id(s) {missing_camera} not defined")
    depth_dir = scene_dir / IPHONE_DEPTH
    depth = [depth_dir / f"{f.stem}.png" for f in kept] if depth_dir.is_dir() else None
    return ImageScene(scene_dir, kept, np.stack([cameras[registered[f.name][0]] for f in kept]),
                      np.stack([registered[f.name][1] for f in kept]), depth)


def open_scene(scene_dir, poses: bool = False, stream: str = "dslr") -> ImageScene:
    """One ScanNet++ scene's undistorted DSLR images (or iPhone frames), sorted by name, with cameras if ``poses``."""
    scene_dir = Path(scene_dir)
    if stream not in STREAMS:
        raise ValueError(f"ScanNet++ stream must be one of {STREAMS}, got {stream!r}")
    if stream == "iphone":
        return _iphone_scene(scene_dir, poses)
    files = _frame_files(scene_dir / IMAGE_DIR, "DSLR image", "dslr.undistort")
    if not poses:
        return ImageScene(scene_dir, files)
    cameras, k = _transform_cameras(scene_dir)
    kept = [f for f in files if f.name in cameras]
    if len(kept) < len(files):
        logger.info("%s: %d of %d images have no usable pose and are left out", scene_dir.name,
                    len(files) - len(kept), len(files))
    if not kept:
        raise dio.DataError(scene_dir / TRANSFORMS, "no image of the DSLR folder has a usable pose")
    return ImageScene(scene_dir, kept, np.stack([k] * len(kept)), np.stack([cameras[f.name] for f in kept]))


def open_scenes(root, split: str = "train", poses: bool = False, on_error: str = "raise",
                stream: str = "dslr") -> list[ImageScene]:
    """The scenes of a split (``train``/``val``, or a split file path) of a ScanNet++ root; with
    ``on_error="skip"`` unreadable scenes are logged and left out."""
    root = Path(root)
    split_file = Path(split) if split not in SPLITS else root / "splits" / SPLITS[split]
    scenes = []
    for scene in read_split(split_file):
        try:
            scenes.append(open_scene(root / "data" / scene, poses, stream))
        except dio.DataError as err:
            if on_error != "skip":
                raise
            logger.warning("skipping ScanNet++ scene %s: %s", scene, err)
    if not scenes:
        raise dio.DataError(split_file, "no readable scene in this split")
    return scenes


def open_root(spec, on_error: str = "raise") -> list[ImageScene] | None:
    """Loader hook: scenes of ``<root>`` (train split) or ``<root>/splits/<file>.txt``, each optionally followed by
    ``?poses=1&stream=iphone``; None when ``spec`` is not a ScanNet++ root or split file."""
    path_text, _, query = str(spec).partition("?")
    options = {key: values[-1] for key, values in parse_qs(query).items()}
    unknown = sorted(set(options) - {"poses", "stream"})
    path = Path(path_text)
    if path.suffix == ".txt" and path.parent.name == "splits" and is_root(path.parent.parent):
        root, split = path.parent.parent, str(path)
    elif is_root(path):
        root, split = path, "train"
    else:
        return None
    if unknown:
        raise ValueError(f"ScanNet++ data {spec!r}: unknown option(s) {unknown}; options are poses=1 and "
                         f"stream={'|'.join(STREAMS)}")
    poses = options.get("poses", "0").lower() in ("1", "true", "yes")
    return open_scenes(root, split, poses, on_error, options.get("stream", "dslr"))
