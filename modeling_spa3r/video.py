"""Video decoding and frame sampling, for the processor, the VSI-Bench runner, SFT and the tools.

The sampling rule is the one of Spa3-VLM's evaluation wrapper: frames `floor(linspace(0, N − 1, n))` over all N
frames (all of them when N ≤ n); fps-based sampling (the SFT recipe) picks n = round(duration · fps) within
[min_frames, max_frames]. Files are decoded by `transformers.video_utils.load_video` (PyAV backend) with that rule
as its `sample_indices_fn`. PyAV is only needed for video files: images and frame folders work without it.
"""

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from .validation import check_frame

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def natural_key(name: str) -> list:
    """Sort key putting `frame_2` before `frame_10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def sample_frame_indices(
    total: int,
    num_frames: int | None = None,
    fps: float | None = None,
    source_fps: float | None = None,
    min_frames: int = 1,
    max_frames: int | None = None,
) -> list[int]:
    """
    Indices floor(linspace(0, total − 1, n)). Uniform: n = min(num_frames, total). fps-based: n = round(duration · fps)
    clamped to [min_frames, max_frames] and to `total` (needs `source_fps`).
    """
    if total < 1:
        raise ValueError("cannot sample frames from an empty video (0 frames)")
    if fps is not None:
        if not source_fps:
            raise ValueError("fps-based sampling needs the source frame rate (pass video_fps for frame folders/lists)")
        count = max(round(total / source_fps * fps), min_frames)
        if max_frames is not None:
            count = min(count, max_frames)
    elif num_frames is not None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if max_frames is not None and num_frames > max_frames:
            raise ValueError(f"num_frames={num_frames} exceeds the configured maximum max_frames={max_frames}")
        count = num_frames
    else:
        raise ValueError("pass num_frames (uniform sampling) or fps (with min_frames/max_frames)")
    count = min(max(count, 1), total)
    return np.floor(np.linspace(0, total - 1, count)).astype(int).tolist()


def load_video_frames(video, sampling: dict) -> list[Image.Image]:
    """
    Sampled RGB frames of a video file, a folder of frame images (natural order), or a sequence/array of frames.
    `sampling`: `num_frames`, `fps`, `min_frames`, `max_frames` (see `sample_frame_indices`) and, for folders and
    frame lists, `video_fps` (their frame rate, for fps-based sampling).
    """
    policy = {key: sampling.get(key) for key in ("num_frames", "fps", "max_frames")}
    policy["min_frames"] = sampling.get("min_frames") or 1
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            names = sorted((p.name for p in path.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS), key=natural_key)
            if not names:
                raise ValueError(f"frame folder {path} contains no images ({', '.join(FRAME_EXTENSIONS)})")
            indices = sample_frame_indices(len(names), source_fps=sampling.get("video_fps"), **policy)
            return [_open_frame(path / names[i]) for i in indices]
        return _decode_video_file(path, policy)
    if hasattr(video, "ndim") and video.ndim == 4:
        video = list(video)
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError("empty video: no frames given")
        indices = sample_frame_indices(len(video), source_fps=sampling.get("video_fps"), **policy)
        return [to_pil(video[i]) for i in indices]
    raise ValueError(f"unsupported video input {type(video).__name__}: pass a path, a frame folder or a list of frames")


def require_av():
    """The PyAV module, or an ImportError saying what needs it and how to install it."""
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "decoding video files needs PyAV: `pip install av` (images, frame lists and frame folders work without it)"
        ) from error
    return av


def count_frames(path: Path) -> int:
    """Frames of a video file counted by demuxing (for containers whose header count is missing or wrong)."""
    av = require_av()
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def _decode_video_file(path: Path, policy: dict) -> list[Image.Image]:
    from transformers.video_utils import load_video

    av = require_av()
    if not path.is_file():
        raise ValueError(f"video file {path} does not exist")
    counted = None  # set when the container's own frame count cannot be trusted

    def sample_indices_fn(metadata, **_):
        total = counted if counted is not None else metadata.total_num_frames
        return sample_frame_indices(total, source_fps=metadata.fps or None, **policy) if total else []

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"video {path} has no video stream")
            if not container.streams.video[0].frames:
                counted = count_frames(path)
        if counted == 0:
            raise ValueError(f"video {path} is empty (no frames)")
        frames, metadata = load_video(str(path), backend="pyav", sample_indices_fn=sample_indices_fn)
        if len(frames) < len(metadata.frames_indices):  # the header promised more frames than the file decodes
            counted = count_frames(path)
            frames, metadata = load_video(str(path), backend="pyav", sample_indices_fn=sample_indices_fn)
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}") from error
    if len(frames) == 0 or len(frames) != len(metadata.frames_indices):
        raise ValueError(f"video {path} has no decodable frames at {list(metadata.frames_indices)}")
    return [Image.fromarray(frame) for frame in frames]


def _open_frame(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            check_frame(image, f"frame {path}")
            return image.convert("RGB")
    except OSError as error:
        raise ValueError(f"cannot read frame {path}: {error}") from error


def to_pil(frame) -> Image.Image:
    """A PIL image, a (H, W, 3) / (3, H, W) array or tensor (uint8, or floats in [0, 1]) → PIL RGB."""
    check_frame(frame)
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    array = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # (3, H, W) → (H, W, 3)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)  # floats in [0, 1]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


__all__ = ["FRAME_EXTENSIONS", "VIDEO_EXTENSIONS", "load_video_frames", "natural_key", "sample_frame_indices", "to_pil"]
