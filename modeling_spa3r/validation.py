"""Input checks shared by every entry point (model `forward`, processor, loaders, converter, training, app).

Each check raises `ValueError` (or `DataError`, a `ValueError` naming a file) that says which input is wrong, what
was expected and what came. Tensor checks cost one fused reduction and one host sync per call (see
`bench/bench_validation.py` for the measured overhead).
"""

import math
import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataError",
    "PIXEL_RANGE",
    "check_pixel_values",
    "check_view_mask",
    "check_cameras",
    "check_targets",
    "check_pose",
    "check_pinhole",
    "check_frame",
    "check_sampling",
    "check_weight_files",
    "check_file_exists",
    "check_positive",
]


class DataError(ValueError):
    """A bad or missing input file; ``path`` is the file (or folder) at fault.

    ``DataError(message_with_path)`` (one argument) is accepted too: torch's DataLoader re-creates a
    worker's exception from its message alone, and this keeps the type across the process boundary.
    """

    def __init__(self, path, message: str | None = None):
        if message is None:
            self.path = None
            super().__init__(str(path))
        else:
            self.path = Path(path)
            super().__init__(f"{message}: {self.path}")


#: Pixel values outside this range are not [0, 1] images (0–255 or mean/std-normalised ones are far outside).
PIXEL_RANGE = (-0.5, 1.5)
#: Tolerance on R·Rᵀ = I for a rotation (float32 poses are rigid to ~1e-6; a scaled or sheared one is off by far more).
ROTATION_TOLERANCE = 1e-2


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def check_pixel_values(pixel_values, patch_size: int = 1, min_views: int = 1, name: str = "pixel_values") -> None:
    """(B, V, 3, H, W) float32/16 images in [0, 1], H and W positive multiples of `patch_size`, V ≥ `min_views`."""
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (B, V, 3, H, W), got {type(pixel_values).__name__}")
    if pixel_values.ndim != 5:
        raise ValueError(f"{name} must be (B, V, 3, H, W), got shape {_shape(pixel_values)}")
    batch, num_views, channels, height, width = pixel_values.shape
    if channels != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels, got {channels} (shape {_shape(pixel_values)})")
    if height == 0 or width == 0 or batch == 0:
        raise ValueError(f"{name} is empty: shape {_shape(pixel_values)}")
    if height % patch_size or width % patch_size:
        raise ValueError(f"{name}: image height {height} and width {width} must be multiples of the patch size {patch_size}")
    if num_views < min_views:
        raise ValueError(f"{name}: need at least {min_views} views per sample, got {num_views}")
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"{name} has dtype {pixel_values.dtype}: pass floats in [0, 1] (e.g. {name}.float() / 255 for 8-bit images)"
        )
    if pixel_values.dtype == torch.float64:
        raise ValueError(f"{name} is float64: pass float32 (or the model's dtype), e.g. {name}.float()")
    if pixel_values.is_meta:
        return
    low, high = torch.aminmax(pixel_values.detach())  # one pass; NaN propagates into both
    low, high = torch.stack((low, high)).float().tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if low < PIXEL_RANGE[0]:
        raise ValueError(
            f"{name} must be in [0, 1], got values in [{low:.3g}, {high:.3g}]: pass unnormalised images "
            "(the model applies its own mean/std)"
        )
    if high > PIXEL_RANGE[1]:
        raise ValueError(
            f"{name} must be in [0, 1], got values in [{low:.3g}, {high:.3g}]: divide 0–255 images by 255"
        )


def check_view_mask(view_mask, batch: int, num_views: int, require_target: bool = True, name: str = "view_mask") -> None:
    """(B, V) bool, True = target view; every sample has ≥ 1 context view (and a target when `require_target`),
    all samples the same number of context views."""
    if not isinstance(view_mask, torch.Tensor):
        raise ValueError(f"{name} must be a bool tensor of shape ({batch}, {num_views}), got {type(view_mask).__name__}")
    if _shape(view_mask) != (batch, num_views) or view_mask.dtype != torch.bool:
        raise ValueError(
            f"{name} must be a bool tensor of shape ({batch}, {num_views}), got {view_mask.dtype} {_shape(view_mask)}"
        )
    num_context = (~view_mask).sum(dim=1).tolist()
    if min(num_context) == 0:
        raise ValueError(f"{name} has a sample with no context view (False): {view_mask.tolist()}")
    if require_target and max(num_context) == num_views:
        raise ValueError(f"{name} has a sample with no target view (True): {view_mask.tolist()}")
    if len(set(num_context)) > 1:
        raise ValueError(f"{name}: every sample needs the same number of context views, got {num_context}")


def check_cameras(extrinsics, intrinsics, batch: int, num_views: int) -> None:
    """extrinsics (B, V, 3, 4) rigid world→camera, intrinsics (B, V, 3, 3) with positive focal lengths, finite."""
    if (extrinsics is None) != (intrinsics is None):
        raise ValueError("pass both extrinsics and intrinsics (ground-truth cameras) or neither")
    if extrinsics is None:
        return
    if _shape(extrinsics) != (batch, num_views, 3, 4) or _shape(intrinsics) != (batch, num_views, 3, 3):
        raise ValueError(
            f"extrinsics / intrinsics must be ({batch}, {num_views}, 3, 4) / ({batch}, {num_views}, 3, 3), got "
            f"{_shape(extrinsics)} / {_shape(intrinsics)}"
        )
    rotation = extrinsics[..., :3].detach().double()  # (B, V, 3, 3)
    identity = torch.eye(3, dtype=torch.float64, device=rotation.device)
    flags = torch.stack(
        (
            torch.isfinite(extrinsics).all(),
            torch.isfinite(intrinsics).all(),
            (intrinsics[..., 0, 0] > 0).all() & (intrinsics[..., 1, 1] > 0).all(),
            ((rotation @ rotation.transpose(-1, -2) - identity).abs().amax() < ROTATION_TOLERANCE)
            & (torch.linalg.det(rotation) > 0).all(),
        )
    ).tolist()
    problems = [
        "extrinsics contain NaN or infinite values",
        "intrinsics contain NaN or infinite values",
        "intrinsics need positive focal lengths fx = K[0, 0] and fy = K[1, 1], got "
        f"min fx {float(intrinsics[..., 0, 0].min()):.3g}, min fy {float(intrinsics[..., 1, 1].min()):.3g}",
        "extrinsics[..., :3, :3] must be rotations (R·Rᵀ = I, det R = +1): world→camera poses without scale or shear",
    ]
    for ok, problem in zip(flags, problems):
        if not ok:
            raise ValueError(problem)


def check_targets(targets: dict, batch: int, num_views: int, num_patches: int, channels: dict) -> None:
    """Batch targets (B, V, h·w, C) with the channel counts the heads predict, finite. `channels`: name → C."""
    present = {name: target for name, target in targets.items() if target is not None}
    for name, target in present.items():
        if target.ndim != 4 or _shape(target)[:3] != (batch, num_views, num_patches):
            raise ValueError(
                f"{name} must be (B, V, h*w, C) = ({batch}, {num_views}, {num_patches}, C), got {_shape(target)}"
            )
        if target.shape[-1] != channels[name]:
            raise ValueError(f"{name} must have {channels[name]} channels (the model's head), got {target.shape[-1]}")
    if present:
        finite = torch.stack([torch.isfinite(t).all() for t in present.values()]).tolist()
        for name, ok in zip(present, finite):
            if not ok:
                raise ValueError(f"{name} contains NaN or infinite values")


def check_pose(matrix: np.ndarray, path: os.PathLike, kind: str = "pose") -> None:
    """A 4×4 camera-to-world matrix: rigid rotation, last row (0, 0, 0, 1); `DataError` names the file."""
    rotation = matrix[:3, :3]
    if not np.allclose(matrix[3], (0, 0, 0, 1), atol=1e-6):
        raise DataError(path, f"{kind} matrix must end with the row 0 0 0 1, got {matrix[3].tolist()}")
    determinant = float(np.linalg.det(rotation))
    if abs(determinant) < 1e-8:
        raise DataError(path, f"{kind} matrix is singular (det of the rotation part {determinant:.3g})")
    error = float(np.abs(rotation @ rotation.T - np.eye(3)).max())
    if error > ROTATION_TOLERANCE or determinant < 0:
        raise DataError(
            path, f"{kind} matrix is not rigid (R·Rᵀ − I off by {error:.3g}, det R = {determinant:.3g}; expected a rotation)"
        )


def check_pinhole(k: np.ndarray, path: os.PathLike) -> None:
    """A 3×3 pinhole matrix with positive focal lengths; `DataError` names the file."""
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise DataError(path, f"intrinsics need positive focal lengths, got fx={k[0, 0]:.6g}, fy={k[1, 1]:.6g}")


#: PIL modes of 16-bit and float images: `convert("RGB")` clips them to 255 (almost white), so they are refused.
WIDE_IMAGE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def check_frame(frame, name: str = "image") -> None:
    """An 8-bit picture: a PIL image of an 8-bit mode, a uint8 array, or a float array in [0, 1]."""
    if hasattr(frame, "mode") and hasattr(frame, "size"):  # PIL
        if frame.mode in WIDE_IMAGE_MODES:
            raise ValueError(
                f"{name} is a 16-bit or float image (PIL mode {frame.mode!r}); converting it to RGB would clip it "
                "to white: pass an 8-bit image, e.g. Image.fromarray((np.asarray(image) // 257).astype(np.uint8))"
            )
        if 0 in frame.size:
            raise ValueError(f"{name} is empty ({frame.size[0]}x{frame.size[1]} pixels)")
        return
    array = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype == np.uint8:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} has dtype {array.dtype}: pass uint8 (0-255) or floats in [0, 1]")
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if high > PIXEL_RANGE[1] or low < PIXEL_RANGE[0]:
        raise ValueError(
            f"{name} holds floats in [{low:.3g}, {high:.3g}]; float frames must be in [0, 1]: divide 0-255 "
            "values by 255 (or pass uint8)"
        )


def check_sampling(num_frames=None, fps=None, min_frames=1, max_frames=None, **_) -> None:
    """Frame sampling settings: num_frames >= 1, fps > 0, 1 <= min_frames <= max_frames."""
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0 frames per second, got {fps!r}")
    if min_frames is not None and min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames!r}")
    if max_frames is not None and min_frames is not None and max_frames < min_frames:
        raise ValueError(f"max_frames ({max_frames}) must be >= min_frames ({min_frames})")


def check_weight_files(folder: str | os.PathLike) -> None:
    """Cheap integrity checks of a local checkpoint folder that read no tensors: torch files (`*.pt`, `*.pth`,
    `*.bin`: optimizer, scheduler, RNG states) are zip archives whose directory sits at the end of the file, and a
    safetensors file's header must cover the whole file. `DataError` names a truncated or corrupt file."""
    import zipfile

    from safetensors import safe_open

    folder = Path(folder)
    for pattern in ("*.pt", "*.pth", "*.bin"):
        for path in sorted(folder.glob(pattern)):
            if not zipfile.is_zipfile(path):
                raise DataError(path, "truncated or corrupt torch file (not a zip archive)")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
        except Exception as error:  # safetensors raises its own SafetensorError for bad headers
            raise DataError(path, f"truncated or corrupt safetensors file ({str(error).splitlines()[0]})") from error


def check_file_exists(path: str | os.PathLike, what: str = "file") -> Path:
    """`FileNotFoundError("not found: PATH")` unless `path` exists (a file or a folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def check_positive(value, name: str, minimum: float = 1) -> None:
    """`ValueError` unless `value` ≥ `minimum` (frame counts, rates, sizes)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
