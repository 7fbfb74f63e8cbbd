"""Builders for the inference / visualisation / app tests: a tiny Spa3RForPretraining checkpoint and scene pictures."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .fixtures_spa3r import tiny_spa3r_config, tiny_vggt_config

VIEW_SIZE = 56  # the tiny Spa3R checkpoint's view width (4 patches of 14)


def build_tiny_spa3r_pretraining(seed: int = 0):
    """A tiny random Spa3RForPretraining with a DINOv3 teacher, made for 56-pixel-wide views."""
    from modeling_spa3r import Spa3RForPretraining

    config = tiny_spa3r_config(vggt_config=tiny_vggt_config(global_qk_norm="rmsnorm", image_size=VIEW_SIZE).to_dict())
    torch.manual_seed(seed)
    return Spa3RForPretraining(config).eval()


def smooth_picture(seed: int, width: int = 64, height: int = 48) -> Image.Image:
    """A picture with large smooth structures (colour gradients + a disc), so feature maps have visible shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    cx, cy, radius = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.1, 0.25)
    disc = ((x - cx) ** 2 + (y - cy) ** 2) < radius**2
    rgb = np.stack([x, y, 1 - x], -1) * rng.uniform(0.5, 1.0, 3)
    rgb[disc] = rng.uniform(0, 1, 3)
    return Image.fromarray((rgb * 255).clip(0, 255).astype(np.uint8))


def write_pictures(folder: Path, count: int, seed: int = 0, **size) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"view_{index}.png"
        smooth_picture(seed + index, **size).save(path)
        paths.append(path)
    return paths
