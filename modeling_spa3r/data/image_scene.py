"""A scene given as a list of image files, with optional pinhole cameras and no depth.

Images-only scenes are what the reference pretraining reads (ScanNet ``color/`` frames, ScanNet++ DSLR
images): cameras and targets come from the frozen VGGT teacher. A view is resized and cropped exactly as
:class:`~modeling_spa3r.data.datasets.SceneFolder` does; with cameras it also carries ``intrinsics`` (3, 3)
of the cropped image and ``extrinsics`` (3, 4) world -> camera (OpenCV).
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
    """

    def __init__(self, path, files: list[Path], intrinsics: np.ndarray | None = None,
                 cam_to_world: np.ndarray | None = None):
        self.path = Path(path)
        self.files = [Path(f) for f in files]
        if not self.files:
            raise dio.DataError(self.path, "no frames")
        if (intrinsics is None) != (cam_to_world is None):
            raise ValueError("pass intrinsics and cam_to_world together, or neither")
        if intrinsics is not None and not (len(intrinsics) == len(cam_to_world) == len(self.files)):
            raise ValueError(f"{self.path}: {len(self.files)} frames but {len(intrinsics)} intrinsics and "
                             f"{len(cam_to_world)} poses")
        self.intrinsics, self.cam_to_world = intrinsics, cam_to_world

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
        return view
