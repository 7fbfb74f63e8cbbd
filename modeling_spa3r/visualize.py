"""
Feature-field pictures: what Spa3R predicts for held-out views next to what the frozen teachers see.

Feature fields (V, h, w, C) are projected to RGB with ONE principal-component basis fitted on the predicted and the
target fields together, so equal colours mean equal features across both rows. `spa3r visualize` runs a
`Spa3RForPretraining` checkpoint on a scene with chosen target views and draws the geometric (VGGT) and, when the
checkpoint has a semantic teacher, the semantic (DINOv3) fields.
"""

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from .processing_spa3_vlm import FRAME_EXTENSIONS

# ---------------------------------------------------------------------------------------------------------------------
# PCA → RGB
# ---------------------------------------------------------------------------------------------------------------------


def as_grid(field, grid_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(V, h, w, C) or (V, h·w, C) with `grid_hw` → float64 array (V, h, w, C)."""
    array = field.detach().float().cpu().numpy() if isinstance(field, torch.Tensor) else np.asarray(field, dtype=np.float64)
    if array.ndim == 4:
        return array.astype(np.float64)
    if array.ndim != 3:
        raise ValueError(f"a feature field must be (V, h, w, C) or (V, h*w, C), got shape {array.shape}")
    if grid_hw is None:
        raise ValueError(f"a flat feature field {array.shape} needs grid_hw=(h, w)")
    height, width = grid_hw
    if height * width != array.shape[1]:
        raise ValueError(f"grid {height}x{width} does not match the field's {array.shape[1]} tokens")
    return array.reshape(array.shape[0], height, width, array.shape[2]).astype(np.float64)


def shared_pca_rgb(fields: list[np.ndarray], low: float = 1.0, high: float = 99.0, fit_on: list[int] | None = None) -> list[np.ndarray]:
    """
    Project every field (…, C) onto the top-3 principal components of the fields listed in `fit_on` (default: all
    of them) and map each component to [0, 1] with the percentile range of those fields, the same for all. With
    `fit_on=[target]` a prediction is drawn in the target's colours: equal colours mean equal features, and a
    prediction far from the target cannot set the colour scale. Returns RGB arrays (…, 3).
    """
    channels = {field.shape[-1] for field in fields}
    if len(channels) != 1:
        raise ValueError(f"fields to share one PCA must have the same channels, got {sorted(channels)}")
    rows = np.concatenate([field.reshape(-1, field.shape[-1]) for field in fields])
    fit = np.concatenate([fields[i].reshape(-1, fields[i].shape[-1]) for i in (fit_on or range(len(fields)))])
    mean = fit.mean(0)
    _, _, components = np.linalg.svd(fit - mean, full_matrices=False)
    basis = components[:3].T  # (C, ≤3)
    if basis.shape[1] < 3:  # fewer than 3 channels or samples: pad with zero components
        basis = np.pad(basis, ((0, 0), (0, 3 - basis.shape[1])))
    projected = (rows - mean) @ basis
    fitted = (fit - mean) @ basis
    lo, hi = np.percentile(fitted, low, axis=0), np.percentile(fitted, high, axis=0)
    scale = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    out, start = [], 0
    for field in fields:
        count = field.size // field.shape[-1]
        rgb = np.clip((projected[start : start + count] - lo) / scale, 0.0, 1.0)
        out.append(rgb.reshape(*field.shape[:-1], 3))
        start += count
    return out


def cosine_per_view(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of predicted and target features per view → (V,)."""
    dot = (pred * target).sum(-1)
    norms = np.linalg.norm(pred, axis=-1) * np.linalg.norm(target, axis=-1)
    return (dot / np.maximum(norms, 1e-12)).reshape(pred.shape[0], -1).mean(-1)


def mean_field_baseline(target: np.ndarray) -> np.ndarray:
    """The baseline a prediction must beat: the target's mean feature at every patch of every view (V, h, w, C) —
    what a model that ignores the view would best predict. Cosines of non-negative features (class histograms)
    are high even for this constant, so a predicted cosine means something only next to it."""
    return np.broadcast_to(target.reshape(-1, target.shape[-1]).mean(0), target.shape)


# ---------------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------------


def fields_figure(
    fields: dict,
    out_path,
    images=None,
    view_labels: list[str] | None = None,
    grid_hw: tuple[int, int] | None = None,
    title: str | None = None,
    row_titles: dict[str, tuple[str, str]] | None = None,
) -> dict[str, np.ndarray]:
    """
    One PNG: a column per view; a row of input images (if given), then for each field a predicted row and a target
    row, both coloured with one PCA fitted on the target only; each predicted panel shows its cosine to the target
    next to the cosine of the mean-field baseline (:func:`mean_field_baseline`).

    Args:
        fields: name → (pred, target), each (V, h, w, C) or (V, h·w, C) with `grid_hw`.
        images: (V, 3, H, W) in [0, 1] or a list of PIL images, the views themselves.
        view_labels: column titles (default "view i").
        row_titles: name → (predicted row title, target row title) (default "<name> predicted" / "<name> target").
    Returns the per-view mean cosine similarity of every field (`name`) and of its mean-field baseline
    (`name + " mean-field baseline"`).
    """
    if not fields:
        raise ValueError("no feature fields to draw")
    grids = {}
    for name, (pred, target) in fields.items():
        pred, target = as_grid(pred, grid_hw), as_grid(target, grid_hw)
        if pred.shape != target.shape:
            raise ValueError(f"{name}: predicted field {pred.shape} and target {target.shape} differ in shape")
        grids[name] = (pred, target)
    view_counts = {pred.shape[0] for pred, _ in grids.values()}
    if len(view_counts) > 1:
        raise ValueError(f"the fields have different numbers of views: {sorted(view_counts)}")
    num_views = view_counts.pop()
    rows = []  # (title, per-view pictures, per-view caption or None)
    if images is not None:
        pictures = [_picture(image) for image in images]
        if len(pictures) != num_views:
            raise ValueError(f"{len(pictures)} images given for {num_views} views")
        rows.append(("input view", pictures, None))
    cosines = {}
    for name, (pred, target) in grids.items():
        cosines[name] = cosine_per_view(pred, target)
        baseline = cosines[f"{name} mean-field baseline"] = cosine_per_view(mean_field_baseline(target), target)
        pred_title, target_title = (row_titles or {}).get(name, (f"{name} predicted", f"{name} target"))
        pred_rgb, target_rgb = shared_pca_rgb([pred, target], fit_on=[1])
        rows.append((pred_title, pred_rgb, [f"cos {c:.2f} (mean field {b:.2f})" for c, b in zip(cosines[name], baseline)]))
        rows.append((target_title, target_rgb, None))
    _draw(rows, view_labels or [f"view {i}" for i in range(num_views)], out_path, title)
    return cosines


def feature_field_figure(
    pred, target, out_path, titles: tuple[str, str] = ("predicted", "target"), grid_hw=None, images=None, title=None
) -> np.ndarray:
    """
    Predicted vs target feature field of held-out views, each (V, h, w, C) or (V, h·w, C) with `grid_hw`, projected
    to RGB with one PCA fitted on both, drawn as a grid PNG (a column per view; rows: the views if `images` are
    given, then `titles[0]`, `titles[1]`). Returns the per-view mean cosine similarity.
    """
    cosines = fields_figure(
        {"field": (pred, target)},
        out_path,
        images=images,
        grid_hw=grid_hw,
        title=title or "feature fields of held-out views (PCA fitted on the target)",
        row_titles={"field": tuple(titles)},
    )
    return cosines["field"]


def field_figure(field, out_path, images=None, grid_hw=None, row_title: str = "features", title: str | None = None) -> None:
    """
    One feature field (V, h, w, C) or (V, h·w, C) with `grid_hw`, projected to RGB with one PCA over all its views,
    under the views themselves when `images` are given: a column per view.
    """
    field = as_grid(field, grid_hw)
    rows = []
    if images is not None:
        pictures = [_picture(image) for image in images]
        if len(pictures) != field.shape[0]:
            raise ValueError(f"{len(pictures)} images given for {field.shape[0]} views")
        rows.append(("input view", pictures, None))
    rows.append((row_title, shared_pca_rgb([field])[0], None))
    _draw(rows, [f"view {i}" for i in range(field.shape[0])], out_path, title or f"{row_title} (PCA to RGB, shared over views)")


def _draw(rows: list, column_titles: list[str], out_path, title: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_views = len(column_titles)
    figure, axes = plt.subplots(
        len(rows), num_views, figsize=(2.4 * num_views + 0.8, 2.0 * len(rows) + 0.6), squeeze=False
    )
    for row, (row_title, pictures, captions) in enumerate(rows):
        for view in range(num_views):
            axis = axes[row, view]
            axis.imshow(pictures[view], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(column_titles[view], fontsize=9)
            if view == 0:
                axis.set_ylabel(row_title, fontsize=9)
            if captions is not None:
                axis.set_xlabel(captions[view], fontsize=8)
    title = title or "predicted vs target feature fields (PCA fitted on each target)"
    width = 26 * num_views + 6  # characters that fit above the panels at fontsize 10
    figure.suptitle("\n".join(textwrap.fill(line, width=width) for line in title.splitlines()), fontsize=10)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=120)
    plt.close(figure)


def _picture(image) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------------------------------------------------
# spa3r visualize
# ---------------------------------------------------------------------------------------------------------------------


def scene_images(scene, num_views: int) -> list:
    """`num_views` frames sampled uniformly from a scene folder (its `color/` frames, or the images in it)."""
    from .inference import load_images
    from .processing_spa3_vlm import sample_frame_indices

    scene = Path(scene)
    folder = scene / "color" if (scene / "color").is_dir() else scene
    if not folder.is_dir():
        raise ValueError(f"scene folder {scene} does not exist")
    if not any(p.suffix.lower() in FRAME_EXTENSIONS for p in folder.iterdir()):
        raise ValueError(f"scene folder {folder} contains no images ({', '.join(FRAME_EXTENSIONS)})")
    frames = load_images([folder])
    return [frames[i] for i in sample_frame_indices(len(frames), num_frames=num_views)]


def default_targets(num_views: int, mask_ratio: float) -> list[int]:
    """The last views past the `int(V·(1 − mask_ratio))` context views (at least one of each)."""
    num_context = min(max(int(num_views * (1 - mask_ratio)), 1), num_views - 1)
    return list(range(num_context, num_views))


def predict_fields(model, pixel_values: torch.Tensor, targets: list[int], inputs: dict | None = None) -> dict:
    """
    Run a `Spa3RForPretraining` on one scene (1, V, 3, H, W) with `targets` held out. Returns the held-out views'
    fields: {"geo": (pred, target), "sem": (pred, target) when there is a semantic target}, each (T, Np, C),
    plus "grid_hw". `inputs`: batch-side targets and cameras (:func:`rendered_inputs`), required for a checkpoint
    pretrained on rendered targets (`config.pretraining_targets == "rendered"`); without them the targets are the
    frozen teachers'.
    """
    num_views = pixel_values.shape[1]
    if not targets or len(set(targets)) == num_views:
        raise ValueError(f"hold out between 1 and {num_views - 1} of the {num_views} views, got targets {targets}")
    if any(not 0 <= t < num_views for t in targets):
        raise ValueError(f"target views {targets} out of range for {num_views} views")
    kind = getattr(model.config, "pretraining_targets", "teachers")
    if kind == "rendered" and inputs is None:
        raise ValueError(
            "this checkpoint was pretrained on rendered targets (config.pretraining_targets='rendered'): its fields "
            "are normals ‖ depth and class histograms, which only a scene folder with depth/, normal/ and semantic/ "
            "maps provides (spa3r visualize --scene DIR); plain images have no targets to compare against"
        )
    view_mask = torch.zeros(1, num_views, dtype=torch.bool)
    view_mask[0, targets] = True
    patch_size = model.config.vggt_config.patch_size
    grid_hw = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
    extra = {k: v.to(model.device) for k, v in (inputs or {}).items()}
    has_semantic = model.semantic_teacher is not None or "semantic_targets" in extra
    if not has_semantic:  # no teacher to compare against: placeholder targets, the sem field is not drawn
        extra["semantic_targets"] = torch.zeros(1, num_views, grid_hw[0] * grid_hw[1], model.config.semantic_size)
    with torch.inference_mode():
        out = model(pixel_values=pixel_values.to(model.device, model.dtype), view_mask=view_mask.to(model.device),
                    return_loss=False, **extra)
    held_out = out.view_mask[0].nonzero()[:, 0].cpu()
    fields = {"geo": (out.pred_geo[0, held_out], out.target_geo[0, held_out])}
    if has_semantic:
        fields["sem"] = (out.pred_sem[0, held_out], out.target_sem[0, held_out])
    return {"fields": fields, "grid_hw": grid_hw, "held_out": held_out.tolist()}


def rendered_inputs(model, scene, num_views: int, size: int) -> tuple[torch.Tensor, dict]:
    """A synthetic scene folder → (pixel_values (1, V, 3, H, W), inputs): `num_views` views spread along its path,
    resized to width `size`, with the rendered targets and ground-truth cameras the rendered-target pretraining used
    (the collator of `spa3r pretrain --targets rendered --cameras ground_truth`)."""
    from .data import MultiViewDataset
    from .training.pretrain import PretrainingCollator

    sample = MultiViewDataset([Path(scene)], views=(num_views, num_views), width=size, seed=0, sampling="spread")[0]
    sample["view_mask"] = torch.zeros(num_views, dtype=torch.bool)
    collator = PretrainingCollator(model.config.vggt_config.patch_size, "rendered", "ground_truth",
                                   model.config.semantic_size)  # fmt: skip
    batch = collator([sample])
    pixel_values = batch.pop("pixel_values")
    batch.pop("view_mask")
    return pixel_values, batch


def views_with_objects(semantic_targets: torch.Tensor, count: int, first_object_class: int = 4) -> list[int]:
    """The `count` views (never view 0, the reference context view) whose rendered class histograms (1, V, Np, K)
    hold the largest share of object classes (ids ≥ `first_object_class`: SynthVSI's unlabeled, wall, floor,
    ceiling come first), in view order — held-out views worth looking at, not bare walls."""
    share = semantic_targets[0, :, :, first_object_class:].sum(-1).mean(-1)  # (V,)
    ranked = sorted(range(1, share.shape[0]), key=lambda v: (-float(share[v]), v))
    return sorted(ranked[:count])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spa3r visualize",
        description=(
            "Run a Spa3RForPretraining checkpoint on a scene with some views held out and draw, for the held-out views, "
            "the predicted feature fields next to the teachers' (geometric VGGT field; semantic DINOv3 field when the "
            "checkpoint has the teacher), or the rendered fields of a synthetic scene for checkpoints pretrained on them "
            "(config.pretraining_targets), projected to RGB with a PCA fitted on each target."
        ),
    )
    parser.add_argument("checkpoint", help="Spa3RForPretraining checkpoint directory (with its frozen teachers)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scene", help="scene folder (ScanNet-like with color/, or a folder of images)")
    source.add_argument("--images", nargs="+", metavar="PATH", help="the views, in order")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--num-views", type=int, default=4, help="views sampled uniformly from --scene (default 4)")
    parser.add_argument(
        "--targets", type=int, nargs="+", help="indices of the held-out views (default: the last ones, per mask_ratio)"
    )
    parser.add_argument("--size", type=int, help="view width, a multiple of 14 (default: the width the checkpoint was pretrained at, else its image size)")
    parser.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv=None) -> int:
    import modeling_spa3r  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig

    from .inference import load_images, resolve_device, scene_views
    from .modeling_spa3r import Spa3RForPretraining

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_views < 2:
        parser.error(f"--num-views must be at least 2 (context + held-out), got {args.num_views}")
    if args.size is not None and (args.size < 14 or args.size % 14):
        parser.error(f"--size must be a positive multiple of 14 (the patch size), got {args.size}")
    try:
        config = AutoConfig.from_pretrained(args.checkpoint)
        if config.model_type != "spa3r":
            raise ValueError(f"{args.checkpoint} is a {config.model_type!r} checkpoint, not a Spa3R one")
        images = scene_images(args.scene, args.num_views) if args.scene else load_images(args.images)
        if len(images) < 2:
            raise ValueError(f"need at least 2 views (context + held-out), got {len(images)}")
        pixel_values = scene_views(images, args.size or config.view_width)
        targets = args.targets or default_targets(len(images), config.mask_ratio)
        model = Spa3RForPretraining.from_pretrained(args.checkpoint).eval().to(resolve_device(args.device))
        inputs = None
        if getattr(config, "pretraining_targets", "teachers") == "rendered" and args.scene:
            pixel_values, inputs = rendered_inputs(model, args.scene, len(images), pixel_values.shape[-1])
            targets = args.targets or views_with_objects(inputs["semantic_targets"], len(targets))
        result = predict_fields(model, pixel_values, targets, inputs)
    except (ValueError, OSError) as error:
        print(f"spa3r visualize: error: {error}", file=sys.stderr)
        return 2
    held_out = result["held_out"]
    context = [i for i in range(pixel_values.shape[1]) if i not in held_out]
    cosines = fields_figure(
        result["fields"],
        args.out,
        images=pixel_values[0, held_out],
        view_labels=[f"view {i} (held out)" for i in held_out],
        grid_hw=result["grid_hw"],
        title=f"Spa3R feature fields of held-out views (context views {context}); PCA fitted on each target",
    )
    for name, values in cosines.items():
        print(f"{name}: cosine per held-out view " + ", ".join(f"{i}: {c:.3f}" for i, c in zip(held_out, values)))
    print(f"wrote {args.out}")
    return 0
