"""Multi-view torch datasets over ScanNet-like scene folders (synthetic, ScanNet, ScanNet++).

A sample is V views of one scene, taken at a random stride from a random start frame (or spread over the
whole trajectory, ``sampling="spread"``), resized to a
fixed width (518 by default) keeping the aspect ratio, then centre-cropped to multiples of 14:

* ``pixel_values`` float32 (V, 3, H, W) in [0, 1]
* ``intrinsics`` float32 (V, 3, 3), pixels of the resized + cropped image
* ``extrinsics`` float32 (V, 3, 4), world -> camera (OpenCV)
* ``depth`` float32 (V, H, W), metres, 0 = invalid
* ``normals`` float32 (V, 3, H, W) camera frame, and ``semantic`` int64 (V, H, W) — only when the
  scene folder has ``normal/`` / ``semantic/`` maps (synthetic scenes)
* ``frame_indices`` int64 (V,), ``scene`` str

Geometry convention for the resize: pixel centres sit at integer coordinates, so scaling by s maps
u to (u + 0.5) * s - 0.5; cropping by (left, top) subtracts them from the principal point.

:class:`ViewBudgetBatchSampler` draws one view count per batch and fills the batch with about
``images_per_batch / V`` samples; :func:`collate_views` stacks samples that share V into
(B, V, ...) tensors, centre-cropping to the smallest H and W of the batch if they differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from . import io as dio

logger = logging.getLogger(__name__)

PATCH = 14
#: Random stride ranges (inclusive) between consecutive sampled frames, as in the reference pretraining.
PRESETS = {"scannet": (2, 6), "scannetpp": (20, 60), "synthetic": (2, 6)}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class CropGeometry:
    """Resize (w0, h0) -> (resized_w, resized_h), then crop a (width, height) window at (left, top)."""

    resized_w: int
    resized_h: int
    left: int
    top: int
    width: int
    height: int

    @staticmethod
    def for_width(w0: int, h0: int, target_width: int) -> "CropGeometry":
        resized_h = max(PATCH, round(h0 * target_width / w0))
        width, height = target_width // PATCH * PATCH, resized_h // PATCH * PATCH
        if width == 0:
            raise ValueError(f"target width {target_width} is smaller than one {PATCH}-pixel patch")
        return CropGeometry(target_width, resized_h, (target_width - width) // 2, (resized_h - height) // 2,
                            width, height)

    def intrinsics(self, k: np.ndarray, w0: int, h0: int) -> np.ndarray:
        """(3, 3) intrinsics of the resized and cropped image from those of the (w0, h0) original."""
        sx, sy = self.resized_w / w0, self.resized_h / h0
        out = np.array(k, dtype=np.float64)
        out[0, 0], out[1, 1] = k[0, 0] * sx, k[1, 1] * sy
        out[0, 1] = k[0, 1] * sx
        out[0, 2] = (k[0, 2] + 0.5) * sx - 0.5 - self.left
        out[1, 2] = (k[1, 2] + 0.5) * sy - 0.5 - self.top
        return out

    def apply(self, image: Image.Image, resample: int) -> np.ndarray:
        resized = image.resize((self.resized_w, self.resized_h), resample)
        return np.asarray(resized.crop((self.left, self.top, self.left + self.width, self.top + self.height)))


class SceneFolder:
    """One ScanNet-like scene folder (see ``modeling_spa3r.data.io``) with checked access.

    ``on_error="skip"`` drops frames whose pose file is missing or non-finite (with a logged
    warning) instead of raising :class:`DataError`.
    """

    def __init__(self, path, on_error: str = "raise"):
        self.path = Path(path)
        if not self.path.is_dir():
            raise dio.DataError(self.path, "scene folder does not exist")
        color_dir = self.path / "color"
        files = sorted((p.name for p in color_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES),
                       key=dio.frame_sort_key) if color_dir.is_dir() else []
        if not files:
            raise dio.DataError(self.path, "empty scene folder (no color/*.jpg frames)")
        self.k_color = dio.read_intrinsics(self.path / "intrinsic" / "intrinsic_color.txt")
        self.color_files, poses = [], []
        for name in files:
            pose_path = self.path / "pose" / f"{Path(name).stem}.txt"
            try:
                poses.append(dio.read_pose(pose_path))
            except dio.DataError as err:
                if on_error != "skip":
                    raise
                logger.warning("skipping frame: %s", err)
                continue
            self.color_files.append(name)
        if not self.color_files:
            raise dio.DataError(self.path, "no usable frames (every pose was skipped)")
        self.cam_to_world = np.stack(poses)  # (N, 4, 4)
        self.has_normals = (self.path / "normal").is_dir()
        self.has_semantic = (self.path / "semantic").is_dir()

    def __len__(self) -> int:
        return len(self.color_files)

    def _sibling(self, folder: str, i: int, suffix: str = ".png") -> Path:
        return self.path / folder / f"{Path(self.color_files[i]).stem}{suffix}"

    def load_view(self, i: int, width: int) -> dict[str, np.ndarray]:
        """View ``i`` resized to ``width`` and cropped to multiples of 14 (numpy arrays)."""
        color_path = self.path / "color" / self.color_files[i]
        rgb = Image.fromarray(dio.read_color(color_path))
        w0, h0 = rgb.size
        geo = CropGeometry.for_width(w0, h0, width)
        depth = Image.fromarray(dio.read_depth(self._sibling("depth", i)))
        view = {
            "pixel_values": geo.apply(rgb, Image.BICUBIC).astype(np.float32).transpose(2, 0, 1) / 255.0,
            "depth": geo.apply(depth, Image.NEAREST).astype(np.float32),
            "intrinsics": geo.intrinsics(self.k_color, w0, h0),
            "extrinsics": np.linalg.inv(self.cam_to_world[i])[:3, :4],
        }
        if self.has_normals:
            normal = Image.fromarray(((dio.read_normal(self._sibling("normal", i)) + 1) * 127.5).round().astype(np.uint8))
            view["normals"] = (geo.apply(normal, Image.NEAREST).astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)
        if self.has_semantic:
            semantic = Image.fromarray(dio.read_label(self._sibling("semantic", i), "semantic").astype(np.uint8))
            view["semantic"] = geo.apply(semantic, Image.NEAREST).astype(np.int64)
        return view


def find_scenes(root) -> list[Path]:
    """Scene folders under ``root``: ``root`` itself if it has ``color/``, else its sub-folders with
    ``color/`` (a synthetic dataset's ``scenes/`` folder is searched too)."""
    root = Path(root)
    if not root.is_dir():
        raise dio.DataError(root, "data folder does not exist")
    if (root / "color").is_dir():
        return [root]
    base = root / "scenes" if (root / "scenes").is_dir() else root
    scenes = sorted(p for p in base.iterdir() if (p / "color").is_dir())
    if not scenes:
        raise dio.DataError(root, "no scene folders (sub-folders with color/) found")
    return scenes


#: Readers of other dataset layouts, tried in order on a data root: modules of this package whose
#: ``open_root(root, on_error)`` returns the root's scenes, or None when the root is not in their layout.
SCENE_LAYOUTS = ("scannetpp", "scannet")


def open_scenes(scenes, on_error: str = "raise") -> list:
    """Scenes of a data root (a registered layout of :data:`SCENE_LAYOUTS`, else :func:`find_scenes`) or of a
    list of scene folders or scene objects; each has ``path``, ``len()`` and ``load_view(i, width)``."""
    if isinstance(scenes, (str, Path)):
        for name in SCENE_LAYOUTS:
            found = import_module(f"{__package__}.{name}").open_root(scenes, on_error)
            if found is not None:
                return found
        scenes = find_scenes(scenes)
    return [p if hasattr(p, "load_view") else SceneFolder(p, on_error=on_error) for p in scenes]


def sample_frame_indices(rng: np.random.Generator, num_frames: int, num_views: int,
                         stride: tuple[int, int]) -> np.ndarray:
    """``num_views`` increasing frame indices with one random stride from the inclusive range,
    shrunk when the scene is too short for it."""
    if num_frames < num_views:
        raise ValueError(f"scene has {num_frames} frames, fewer than the {num_views} views requested")
    step = int(rng.integers(stride[0], stride[1] + 1))
    step = min(step, (num_frames - 1) // max(num_views - 1, 1)) if num_views > 1 else step
    step = max(step, 1)
    start = int(rng.integers(0, num_frames - (num_views - 1) * step))
    return start + step * np.arange(num_views)


def sample_spread_indices(rng: np.random.Generator, num_frames: int, num_views: int) -> np.ndarray:
    """``num_views`` distinct frames spread over the whole trajectory: one random frame from each of
    ``num_views`` equal segments, in random order (so any segment can come first, i.e. be the reference view)."""
    if num_frames < num_views:
        raise ValueError(f"scene has {num_frames} frames, fewer than the {num_views} views requested")
    bounds = np.linspace(0, num_frames, num_views + 1)
    low, high = np.ceil(bounds[:-1]).astype(int), np.ceil(bounds[1:]).astype(int)
    frames = low + (rng.random(num_views) * (high - low)).astype(int)
    return frames[rng.permutation(num_views)]


#: How a sample's frames are chosen: consecutive at a random stride, or spread over the whole trajectory.
SAMPLINGS = ("stride", "spread")


class MultiViewDataset(Dataset):
    """Multi-view samples from scene folders.

    Args:
        scenes: a data root (ScanNet-like folders, a ScanNet++ release, ...; see :func:`open_scenes`) or a list
            of scene folders or scene objects.
        views: inclusive (min, max) views per sample when the sampler does not fix V.
        stride: inclusive stride range, or a preset name from :data:`PRESETS` (``sampling="stride"``).
        sampling: "stride" (:func:`sample_frame_indices`) or "spread" (:func:`sample_spread_indices`).
        width: target width before the crop to multiples of 14.
        samples_per_scene: dataset length = scenes x this.
        seed: base seed; samples are a pure function of (seed, epoch, index, V).
        on_error: "raise" (default) or "skip": log and resample other frames (up to ``max_retries``).
    """

    def __init__(self, scenes, views: tuple[int, int] = (4, 12), stride: tuple[int, int] | str = "scannet",
                 width: int = 518, samples_per_scene: int = 1, seed: int = 0, on_error: str = "raise",
                 max_retries: int = 3, sampling: str = "stride"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.sampling = sampling
        self.scenes = open_scenes(scenes, on_error)
        self.views = views
        self.stride = PRESETS[stride] if isinstance(stride, str) else tuple(stride)
        self.width = width
        self.samples_per_scene = samples_per_scene
        self.seed = seed
        self.epoch = 0
        self.on_error = on_error
        self.max_retries = max_retries

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scenes) * self.samples_per_scene

    def __getitem__(self, item) -> dict:
        index, num_views = item if isinstance(item, tuple) else (item, None)
        scene = self.scenes[index % len(self.scenes)]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        num_views = int(num_views or rng.integers(self.views[0], self.views[1] + 1))
        for attempt in range(self.max_retries + 1):
            if self.sampling == "spread":
                frames = sample_spread_indices(rng, len(scene), num_views)
            else:
                frames = sample_frame_indices(rng, len(scene), num_views, self.stride)
            try:
                views = [scene.load_view(int(i), self.width) for i in frames]
            except dio.DataError as err:
                if self.on_error != "skip" or attempt == self.max_retries:
                    raise
                logger.warning("skipping sample of %s: %s", scene.path, err)
                continue
            sample = {key: torch.from_numpy(np.stack([v[key] for v in views])) for key in views[0]}
            for key in ("intrinsics", "extrinsics"):  # absent for images-only scenes (teacher cameras)
                if key in sample:
                    sample[key] = sample[key].float()
            sample["frame_indices"] = torch.from_numpy(frames.astype(np.int64))
            sample["scene"] = scene.path.name
            return sample
        raise AssertionError("unreachable")


class ViewBudgetBatchSampler(Sampler):
    """Batches of ``(index, V)`` pairs: V is drawn per batch from ``views`` (inclusive) and the batch
    holds ``max(1, images_per_batch // V)`` samples, so B x V stays near the image budget."""

    def __init__(self, num_samples: int, views: tuple[int, int] = (4, 12), images_per_batch: int = 24,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if views[0] < 1 or views[1] < views[0]:
            raise ValueError(f"invalid views range {views}")
        self.num_samples, self.views, self.budget = num_samples, views, images_per_batch
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        batches, i = [], 0
        while i < self.num_samples:
            v = int(rng.integers(self.views[0], self.views[1] + 1))
            size = max(1, self.budget // v)
            chunk = order[i:i + size]
            i += size
            if len(chunk) < size and self.drop_last:
                break
            batches.append([(int(j), v) for j in chunk])
        return batches

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


_SPATIAL_CHANNEL_FIRST = ("pixel_values", "normals")  # (V, C, H, W)
_SPATIAL = ("depth", "semantic")  # (V, H, W)


def _crop_sample(sample: dict, height: int, width: int) -> dict:
    """Centre-crop a sample's maps to (height, width) and shift its principal points."""
    h, w = sample["pixel_values"].shape[-2:]
    top, left = (h - height) // 2, (w - width) // 2
    out = dict(sample)
    for key in _SPATIAL_CHANNEL_FIRST + _SPATIAL:
        if key in sample:
            out[key] = sample[key][..., top:top + height, left:left + width]
    if "intrinsics" in sample:
        k = sample["intrinsics"].clone()
        k[:, 0, 2] -= left
        k[:, 1, 2] -= top
        out["intrinsics"] = k
    return out


def collate_views(samples: list[dict]) -> dict:
    """Stack samples with the same view count into (B, V, ...) tensors.

    Different image sizes are aligned by centre-cropping to the smallest height and width (both stay
    multiples of 14); optional maps are kept only when every sample has them.
    """
    counts = {s["pixel_values"].shape[0] for s in samples}
    if len(counts) != 1:
        raise ValueError(f"all samples of a batch must have the same number of views, got {sorted(counts)}")
    height = min(s["pixel_values"].shape[-2] for s in samples)
    width = min(s["pixel_values"].shape[-1] for s in samples)
    samples = [_crop_sample(s, height, width) for s in samples]
    keys = ["pixel_values", "intrinsics", "extrinsics", "depth", "frame_indices", "normals", "semantic"]
    batch = {k: torch.stack([s[k] for s in samples]) for k in keys if all(k in s for s in samples)}
    batch["scene"] = [s["scene"] for s in samples]
    return batch
