"""A scene given as a list of image files, with optional pinhole cameras and depth maps.

Images-only scenes are what the reference pretraining reads (ScanNet ``color/`` frames, ScanNet++ DSLR
images): cameras and targets come from the frozen VGGT teacher. A view is resized and cropped exactly as
:class:`~modeling_spa3r.data.datasets.SceneFolder` does; with cameras it also carries ``intrinsics`` (3, 3)
of the cropped image and ``extrinsics`` (3, 4) world -> camera (OpenCV), with depth files ``depth`` (H, W) metres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import io as dio
from .datasets import CropGeometry


class ImageScene:
    """Frames ``files`` of the scene folder ``path`` (its name is the sample's ``scene``).

    Args:
        intrinsics: (N, 3, 3) pinhole matrices of the files as stored, or None (no cameras).
        cam_to_world: (N, 4, 4) camera-to-world poses, OpenCV axes; given together with ``intrinsics``.
        depth_files: N uint16 millimetre PNGs (any size of the same aspect ratio as the images), or None.
    """

    def __init__(self, path, files: list[Path], intrinsics: np.ndarray | None = None,
                 cam_to_world: np.ndarray | None = None, depth_files: list[Path] | None = None):
        self.path = Path(path)
        self.files = [Path(f) for f in files]
        if not self.files:
            raise dio.DataError(self.path, "no frames")
        if (intrinsics is None) != (cam_to_world is None):
            raise ValueError("pass intrinsics and cam_to_world together, or neither")
        if intrinsics is not None and not (len(intrinsics) == len(cam_to_world) == len(self.files)):
            raise ValueError(f"{self.path}: {len(self.files)} frames but {len(intrinsics)} intrinsics and "
                             f"{len(cam_to_world)} poses")
        if depth_files is not None and len(depth_files) != len(self.files):
            raise ValueError(f"{self.path}: {len(self.files)} frames but {len(depth_files)} depth files")
        self.intrinsics, self.cam_to_world = intrinsics, cam_to_world
        self.depth_files = [Path(f) for f in depth_files] if depth_files is not None else None

    def __len__(self) -> int:
        return len(self.files)

    def load_view(self, i: int, width: int) -> dict[str, np.ndarray]:
        """View ``i`` resized to ``width`` and cropped to multiples of 14 (numpy arrays)."""
        rgb = Image.fromarray(dio.read_color(self.files[i]))
        w0, h0 = rgb.size
        geo = CropGeometry.for_width(w0, h0, width)
        view = {"pixel_values": geo.apply(rgb, Image.BICUBIC).astype(np.float32).transpose(2, 0, 1) / 255.0}
        if self.intrinsics is not None:
            view["intrinsics"] = geo.intrinsics(self.intrinsics[i], w0, h0)
            view["extrinsics"] = np.linalg.inv(self.cam_to_world[i])[:3, :4]
        if self.depth_files is not None:
            depth = Image.fromarray(dio.read_depth(self.depth_files[i]))
            view["depth"] = geo.apply(depth, Image.NEAREST).astype(np.float32)
        return view
