"""Deterministic writers and checked readers for ScanNet-like scene folders.

Layout of one scene (the synthetic generator writes it; the loaders read it and real ScanNet
exports alike)::

    <scene>/color/<i>.jpg                  RGB frames
    <scene>/depth/<i>.png                  uint16 depth in millimetres (0 = invalid)
    <scene>/pose/<i>.txt                   4x4 camera-to-world matrix (OpenCV camera axes)
    <scene>/intrinsic/intrinsic_color.txt  4x4 matrix, upper-left 3x3 = K of the colour frames
    <scene>/intrinsic/intrinsic_depth.txt  4x4 matrix for the depth frames (optional)
    <scene>/instance/<i>.png               uint16 instance ids (0 = none), optional
    <scene>/semantic/<i>.png               uint8 class ids, optional (synthetic only)
    <scene>/normal/<i>.png                 uint8 RGB camera-frame normals, (n + 1) / 2 * 255, optional
    <scene>/scene.json                     room, objects, camera path (synthetic only)

Every reader raises :class:`DataError` (a ``ValueError``) whose message names the offending file.
"""

from __future__ import annotations

import io
import json
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..validation import DataError, check_pinhole, check_pose

DEPTH_SCALE = 1000.0  # depth PNG units per metre
JPEG_QUALITY = 95


# ----------------------------------------------------------------------------------------------
# Writers (byte-deterministic)
# ----------------------------------------------------------------------------------------------

def write_jpeg(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """RGB uint8 (H, W, 3) as baseline JPEG without metadata."""
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="JPEG", quality=quality, subsampling=0)


def write_png(path: Path, array: np.ndarray) -> None:
    """uint8 (H, W) / (H, W, 3) or uint16 (H, W) array as PNG without metadata."""
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"write_png expects uint8 or uint16, got {array.dtype} for {path}")
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=1)


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """Metres (H, W) float -> uint16 millimetres; non-finite or out-of-range values become 0."""
    mm = np.where(np.isfinite(depth), np.round(depth * DEPTH_SCALE), 0)
    return np.where((mm > 0) & (mm < 65536), mm, 0).astype(np.uint16)


def normal_to_png(normal: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) in [-1, 1] -> uint8 RGB."""
    return np.round((np.clip(normal, -1, 1) + 1) * 127.5).astype(np.uint8)


def format_matrix(matrix: np.ndarray) -> str:
    """Rows of space-separated fixed-point numbers (ScanNet text matrices)."""
    return "".join(" ".join(f"{v:.8f}" for v in row) + "\n" for row in np.asarray(matrix, dtype=np.float64))


def write_matrix(path: Path, matrix: np.ndarray) -> None:
    Path(path).write_text(format_matrix(matrix))


def intrinsics_4x4(k: np.ndarray) -> np.ndarray:
    """Lift a (3, 3) pinhole matrix to ScanNet's (4, 4) layout."""
    out = np.eye(4)
    out[:3, :3] = k
    return out


def write_json(path: Path, obj) -> None:
    """Sorted-key JSON with a trailing newline."""
    Path(path).write_text(json.dumps(obj, sort_keys=True, indent=1) + "\n")


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One sorted-key JSON object per line."""
    Path(path).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3), H a multiple of 4 and W even -> planar BT.601 limited-range YUV 4:2:0 (H * 3 / 2, W) uint8.

    Done in numpy rather than by libswscale so the encoder input is exactly reproducible."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    h, w = y.shape

    def pool(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).reshape(h // 4, w)

    planes = [y, pool(u), pool(v)]
    return np.concatenate([np.clip(np.round(p), 0, 255).astype(np.uint8) for p in planes], axis=0)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, bits_per_pixel: float = 4.0) -> None:
    """MPEG-4 Part 2 video in an MP4 container (yuv420p, constant bit rate of ``bits_per_pixel`` per
    pixel and frame, single-threaded encoder).

    The bytes depend only on the frames: libx264 was rejected because, measured with PyAV 18 /
    x264 core 165, its output for the same frames changes with what the process encoded before.
    Frames are cropped to a height that is a multiple of 4 and an even width (the planar 4:2:0 array PyAV takes
    stacks each chroma plane as rows of full width).
    """
    import av

    height, width = frames[0].shape[:2]
    height, width = height - height % 4, width - width % 2
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = int(bits_per_pixel * width * height * fps)
        stream.thread_count = 1
        stream.options = {"threads": "1"}
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb[:height, :width]), format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    Path(path).write_bytes(buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# Readers (checked)
# ----------------------------------------------------------------------------------------------

def _open_image(path: Path, kind: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"missing {kind} frame")
    try:
        image = Image.open(path)
        image.load()
    except Exception as err:  # PIL raises many exception types for truncated / invalid files
        raise DataError(path, f"corrupt {kind} image ({type(err).__name__}: {err})") from err
    return image


def read_color(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    return np.asarray(_open_image(path, "color").convert("RGB"))


def read_depth(path: Path, scale: float = DEPTH_SCALE) -> np.ndarray:
    """Depth PNG -> float32 metres (H, W); 0 stays 0 (invalid)."""
    image = _open_image(path, "depth")
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise DataError(
            path, f"depth PNG must be 16-bit (uint16 millimetres), got PIL mode {image.mode!r} "
            "(an 8-bit depth map would be read ~16x too small)",
        )
    depth = np.asarray(image, dtype=np.float32)
    if depth.ndim != 2:
        raise DataError(path, f"depth image must have one channel, got shape {depth.shape}")
    return depth / np.float32(scale)


def read_label(path: Path, kind: str = "instance") -> np.ndarray:
    """Single-channel label PNG as int64 (H, W)."""
    array = np.asarray(_open_image(path, kind))
    if array.ndim != 2:
        raise DataError(path, f"{kind} image must have one channel, got shape {array.shape}")
    return array.astype(np.int64)


def read_normal(path: Path) -> np.ndarray:
    """Normal PNG -> float32 (H, W, 3) in [-1, 1]."""
    rgb = np.asarray(_open_image(path, "normal").convert("RGB"), dtype=np.float32)
    return rgb / 127.5 - 1.0


def read_matrix(path: Path, shape: tuple[int, int] = (4, 4), kind: str = "pose") -> np.ndarray:
    """Whitespace-separated matrix; non-finite entries (ScanNet marks lost tracking with -inf) raise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"missing {kind} file")
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as err:
        raise DataError(path, f"unparseable {kind} file ({err})") from err
    if values.size != shape[0] * shape[1]:
        raise DataError(path, f"{kind} file must hold {shape[0]}x{shape[1]} numbers, got {values.size}")
    if not np.isfinite(values).all():
        raise DataError(path, f"{kind} file contains NaN or infinite values")
    return values.reshape(shape)


def read_intrinsics(path: Path) -> np.ndarray:
    """ScanNet ``intrinsic_*.txt`` (4x4, or a bare 3x3) -> (3, 3)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing intrinsics file")
    size = len(path.read_text().split())
    matrix = read_matrix(path, (4, 4) if size == 16 else (3, 3), kind="intrinsics")
    check_pinhole(matrix[:3, :3], path)
    return matrix[:3, :3]


def read_pose(path: Path) -> np.ndarray:
    """4x4 camera-to-world pose, checked to be rigid (rotation and translation)."""
    matrix = read_matrix(path)
    check_pose(matrix, path)
    return matrix


def frame_sort_key(name: str) -> tuple:
    """Sort frame files by the integer in their stem ("10.jpg" after "9.jpg"), then by name."""
    digits = re.findall(r"\d+", Path(name).stem)
    return (int(digits[-1]) if digits else math.inf, name)


def read_json(path: Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing json file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid json ({err})") from err
