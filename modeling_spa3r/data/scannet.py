"""ScanNet: a reader of the released ``.sens`` files and their export to the loaders' scene-folder layout.

``.sens`` (little-endian, read front to back; see ``shared/spec/data-formats.md``): version uint32 = 4, the
sensor name (uint64 length + bytes), colour intrinsics, colour extrinsics, depth intrinsics, depth extrinsics
(4 x 16 float32, row-major 4x4), colour and depth compression (int32 each), colour width/height and depth
width/height (uint32 each), depth shift (float32, units per metre), the frame count (uint64), then per frame a
camera-to-world pose (16 float32), colour and depth timestamps, colour and depth byte counts (uint64 each) and
the colour and depth bytes.

:func:`export_scene` writes what ScanNet's own reader writes (``color/<i>.jpg`` as stored, ``depth/<i>.png``
uint16 millimetres, ``pose/<i>.txt`` camera-to-world, ``intrinsic/{intrinsic,extrinsic}_{color,depth}.txt``,
``<i>`` the frame index in the file), every ``frame_skip``-th frame, leaving out frames whose pose is not finite
(ScanNet marks lost tracking with ``-inf``) and counting them. :func:`export_dataset` runs it over a ``scans/``
folder with parallel workers, skipping scenes already exported.

:func:`open_root` lets the loaders read ScanNet exports whose scene folders hold only ``color/`` (images-only
pretraining: cameras from the VGGT teacher, as the authors do).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import io as dio
from .datasets import SceneFolder, find_scenes
from .image_scene import ImageScene

SENS_VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw", 1: "zlib", 2: "occi"}
#: File written last into an exported scene folder: its presence marks the scene as finished.
EXPORT_SUMMARY = "export.json"
_FRAME_HEADER = struct.Struct("<16f4Q")  # pose, colour ts, depth ts, colour bytes, depth bytes


@dataclass(frozen=True)
class SensHeader:
    """Everything before the first frame of a ``.sens`` file."""

    version: int
    sensor_name: str
    intrinsic_color: np.ndarray  # (4, 4)
    extrinsic_color: np.ndarray  # (4, 4)
    intrinsic_depth: np.ndarray  # (4, 4)
    extrinsic_depth: np.ndarray  # (4, 4)
    color_compression: str
    depth_compression: str
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float  # depth units per metre
    num_frames: int


@dataclass(frozen=True)
class SensFrame:
    """One frame: its index in the file, camera-to-world pose (4, 4), timestamps and compressed bytes."""

    index: int
    cam_to_world: np.ndarray
    color_timestamp: int
    depth_timestamp: int
    color_bytes: bytes
    depth_bytes: bytes


class SensFile:
    """Sequential reader of one ``.sens`` file; every error is a :class:`~.io.DataError` naming the file.

    >>> with SensFile("scene0000_00.sens") as sens:           # doctest: +SKIP
    ...     for frame in sens.frames(frame_skip=10): ...
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise dio.DataError(self.path, "missing .sens file")
        self._file = open(self.path, "rb")
        self._size = os.fstat(self._file.fileno()).st_size
        try:
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "SensFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _check_available(self, count: int, what: str) -> None:
        start = self._file.tell()
        if start + count > self._size:
            raise dio.DataError(self.path, f"truncated .sens file: {what} needs bytes {start}..{start + count} "
                                           f"but the file has {self._size}")

    def _read(self, count: int, what: str) -> bytes:
        self._check_available(count, what)
        return self._file.read(count)

    def _unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self._read(struct.calcsize(fmt), what))

    def _read_header(self) -> SensHeader:
        (version,) = self._unpack("<I", "version")
        if version != SENS_VERSION:
            raise dio.DataError(self.path, f".sens version must be {SENS_VERSION}, got {version}")
        (name_length,) = self._unpack("<Q", "sensor name length")
        name = self._read(name_length, "sensor name").decode("utf-8", errors="replace")
        matrices = np.array(self._unpack("<64f", "calibration"), dtype=np.float64).reshape(4, 4, 4)
        color_code, depth_code = self._unpack("<2i", "compression types")
        if color_code not in COLOR_COMPRESSION or depth_code not in DEPTH_COMPRESSION:
            raise dio.DataError(self.path, f"unknown compression codes colour {color_code}, depth {depth_code}")
        color_w, color_h, depth_w, depth_h = self._unpack("<4I", "image sizes")
        (depth_shift,) = self._unpack("<f", "depth shift")
        (num_frames,) = self._unpack("<Q", "frame count")
        if not depth_shift > 0:
            raise dio.DataError(self.path, f"depth shift must be > 0, got {depth_shift}")
        return SensHeader(version, name, *matrices, COLOR_COMPRESSION[color_code], DEPTH_COMPRESSION[depth_code],
                          color_w, color_h, depth_w, depth_h, float(depth_shift), num_frames)

    def frames(self, frame_skip: int = 1) -> Iterator[SensFrame]:
        """Frames 0, ``frame_skip``, 2 x ``frame_skip``, ... (the others are skipped without decoding)."""
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        for index in range(self.header.num_frames):
            what = f"frame {index} of {self.header.num_frames}"
            values = _FRAME_HEADER.unpack(self._read(_FRAME_HEADER.size, what))
            color_size, depth_size = values[18], values[19]
            if index % frame_skip:
                self._check_available(color_size + depth_size, what)
                self._file.seek(color_size + depth_size, os.SEEK_CUR)
                continue
            color, depth = self._read(color_size, what), self._read(depth_size, what)
            pose = np.array(values[:16], dtype=np.float64).reshape(4, 4)
            yield SensFrame(index, pose, values[16], values[17], color, depth)

    def decode_depth(self, frame: SensFrame) -> np.ndarray:
        """Depth of a frame as uint16 millimetres (H, W); 0 = invalid."""
        header = self.header
        if header.depth_compression == "zlib":
            try:
                raw = zlib.decompress(frame.depth_bytes)
            except zlib.error as err:
                raise dio.DataError(self.path, f"frame {frame.index}: corrupt zlib depth ({err})") from err
        elif header.depth_compression == "raw":
            raw = frame.depth_bytes
        else:
            raise dio.DataError(self.path, f"depth compression {header.depth_compression!r} is not supported "
                                           "(only zlib and raw uint16)")
        expected = header.depth_width * header.depth_height
        if len(raw) != 2 * expected:
            raise dio.DataError(self.path, f"frame {frame.index}: depth holds {len(raw) // 2} values, expected "
                                           f"{header.depth_width}x{header.depth_height} = {expected}")
        depth = np.frombuffer(raw, dtype="<u2").reshape(header.depth_height, header.depth_width)
        if header.depth_shift != dio.DEPTH_SCALE:
            depth = np.clip(np.round(depth * (dio.DEPTH_SCALE / header.depth_shift)), 0, 65535)
        return depth.astype(np.uint16)

    def color_file(self, frame: SensFrame) -> tuple[str, bytes]:
        """(suffix, file bytes) of a frame's colour image: JPEG/PNG bytes as stored, raw RGB as a PNG."""
        header = self.header
        if header.color_compression == "jpeg":
            return ".jpg", frame.color_bytes
        if header.color_compression == "png":
            return ".png", frame.color_bytes
        if header.color_compression == "raw":
            expected = header.color_width * header.color_height * 3
            if len(frame.color_bytes) != expected:
                raise dio.DataError(self.path, f"frame {frame.index}: raw colour has {len(frame.color_bytes)} "
                                               f"bytes, expected {expected}")
            rgb = np.frombuffer(frame.color_bytes, np.uint8).reshape(header.color_height, header.color_width, 3)
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
            return ".png", buffer.getvalue()
        raise dio.DataError(self.path, f"colour compression {header.color_compression!r} is not supported")


def export_scene(sens_path, out_dir, frame_skip: int = 1, depth: bool = True) -> dict:
    """Export one ``.sens`` file to the scene folder ``out_dir`` (see the module docstring); returns its summary.

    The folder is written as ``<out_dir>.partial`` and renamed when complete, with ``export.json`` (source,
    ``frame_skip``, frame counts, the indices of frames left out for invalid poses) written last.
    """
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    folders = ("color", "pose", "intrinsic") + (("depth",) if depth else ())
    for folder in folders:
        (partial / folder).mkdir(parents=True)
    exported, invalid = 0, []
    with SensFile(sens_path) as sens:
        header = sens.header
        for name in ("intrinsic_color", "extrinsic_color", "intrinsic_depth", "extrinsic_depth"):
            dio.write_matrix(partial / "intrinsic" / f"{name}.txt", getattr(header, name))
        for frame in sens.frames(frame_skip):
            if not np.isfinite(frame.cam_to_world).all():
                invalid.append(frame.index)
                continue
            suffix, color = sens.color_file(frame)
            (partial / "color" / f"{frame.index}{suffix}").write_bytes(color)
            if depth:
                dio.write_png(partial / "depth" / f"{frame.index}.png", sens.decode_depth(frame))
            dio.write_matrix(partial / "pose" / f"{frame.index}.txt", frame.cam_to_world)
            exported += 1
    if not exported:
        shutil.rmtree(partial)
        raise dio.DataError(sens_path, f"no frame with a valid pose (of {len(invalid)} selected)")
    summary = {
        "source": str(Path(sens_path).resolve()), "frame_skip": frame_skip, "frames_in_file": header.num_frames,
        "exported": exported, "invalid_poses": len(invalid), "invalid_pose_frames": invalid, "depth": depth,
        "color_size": [header.color_width, header.color_height], "depth_size": [header.depth_width, header.depth_height],
    }  # fmt: skip
    dio.write_json(partial / EXPORT_SUMMARY, summary)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    return summary


def find_sens_files(scans) -> list[Path]:
    """``.sens`` files of a ScanNet ``scans/`` folder (``<scene>/<scene>.sens``), or the one file given."""
    scans = Path(scans)
    if scans.is_file():
        return [scans]
    if not scans.is_dir():
        raise dio.DataError(scans, "ScanNet scans folder does not exist")
    files = sorted(scans.glob("*/*.sens")) or sorted(scans.glob("*.sens"))
    if not files:
        raise dio.DataError(scans, "no .sens files (expected <scene>/<scene>.sens)")
    return files


def _finished(out_dir: Path, frame_skip: int, depth: bool) -> dict | None:
    marker = out_dir / EXPORT_SUMMARY
    if not marker.is_file():
        return None
    summary = dio.read_json(marker)
    if summary.get("frame_skip") != frame_skip or summary.get("depth") != depth:
        raise dio.DataError(out_dir, f"already exported with frame_skip={summary.get('frame_skip')}, "
                                     f"depth={summary.get('depth')} (asked {frame_skip}, {depth}); remove it or "
                                     "export to another folder")
    return summary


def export_dataset(scans, out, frame_skip: int = 1, depth: bool = True, workers: int = 1,
                   progress: bool = True) -> dict[str, dict]:
    """Export every ``.sens`` of ``scans`` to ``<out>/<scene>/``; finished scenes are skipped.

    Returns ``{scene: summary}`` (``"skipped": True`` for scenes found finished). Scenes that fail are
    reported together in one :class:`~.io.DataError` after the others are done.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for sens in find_sens_files(scans):
        done = _finished(out / sens.stem, frame_skip, depth)
        if done is not None:
            results[sens.stem] = {**done, "skipped": True}
        else:
            todo.append(sens)
    errors = {}
    bar = tqdm(total=len(todo), desc="ScanNet .sens export", unit="scene", disable=not progress)
    if workers <= 1:
        for sens in todo:
            try:
                results[sens.stem] = export_scene(sens, out / sens.stem, frame_skip, depth)
            except dio.DataError as err:
                errors[sens.stem] = str(err)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(export_scene, sens, out / sens.stem, frame_skip, depth): sens for sens in todo}
            for future in as_completed(futures):
                try:
                    results[futures[future].stem] = future.result()
                except dio.DataError as err:
                    errors[futures[future].stem] = str(err)
                bar.update()
    bar.close()
    if errors:
        details = "\n".join(f"  {scene}: {message}" for scene, message in sorted(errors.items()))
        raise dio.DataError(f"{len(errors)} of {len(todo)} scenes failed (the others are exported):\n{details}")
    return dict(sorted(results.items()))


def is_images_only(folder: Path) -> bool:
    """A scene folder with ``color/`` and none of ``pose/``, ``intrinsic/``, ``depth/``."""
    return (folder / "color").is_dir() and not any((folder / d).exists() for d in ("pose", "intrinsic", "depth"))


def images_only_scene(folder) -> ImageScene:
    """An images-only scene folder (``color/*.jpg|png``, sorted by frame number) as an :class:`ImageScene`."""
    folder = Path(folder)
    files = sorted((p for p in (folder / "color").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                   key=lambda p: dio.frame_sort_key(p.name))
    return ImageScene(folder, files)


def open_root(root, on_error: str = "raise") -> list | None:
    """Scenes of a ScanNet export root of which some folders hold only ``color/`` (those become images-only
    :class:`ImageScene` s, the others :class:`SceneFolder` s); None for any other root."""
    root = Path(root)
    if not root.is_dir():
        return None
    try:
        folders = find_scenes(root)
    except dio.DataError:
        return None
    if not any(is_images_only(f) for f in folders):
        return None
    return [images_only_scene(f) if is_images_only(f) else SceneFolder(f, on_error=on_error) for f in folders]
