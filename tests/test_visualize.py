"""Feature-field figures: one PCA (fitted on the target) for predicted and target fields, the mean-field baseline,
the PNG grid, `spa3r visualize` on teacher-target and rendered-target checkpoints."""

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_spa3r.modeling_spa3r import Spa3RForPretraining
from modeling_spa3r.processing_spa3_vlm import geometry_view
from modeling_spa3r.visualize import (
    as_grid,
    cosine_per_view,
    default_targets,
    feature_field_figure,
    fields_figure,
    main,
    mean_field_baseline,
    predict_fields,
    rendered_inputs,
    shared_pca_rgb,
    views_with_objects,
)


def _fields(seed=0, views=2, h=3, w=4, channels=16):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randn(views, h * w, channels, generator=generator)
    return target + 0.1 * torch.randn(target.shape, generator=generator), target


def test_shared_pca_colours_equal_features_equally():
    pred, target = _fields()
    same_pred, same_target = shared_pca_rgb([as_grid(target, (3, 4)), as_grid(target, (3, 4))])
    np.testing.assert_array_equal(same_pred, same_target)
    # one basis for both: an offset prediction is coloured differently (two separate PCAs would hide the offset)
    shifted, target_rgb = shared_pca_rgb([as_grid(target + 5.0, (3, 4)), as_grid(target, (3, 4))])
    (separate_shifted,), (separate_target,) = shared_pca_rgb([as_grid(target + 5.0, (3, 4))]), shared_pca_rgb([as_grid(target, (3, 4))])
    assert np.abs(shifted - target_rgb).mean() > 0.2
    np.testing.assert_allclose(separate_shifted, separate_target, atol=1e-6)
    assert shifted.shape == (2, 3, 4, 3) and shifted.min() >= 0 and shifted.max() <= 1


def test_feature_field_figure_png(tmp_path):
    pred, target = _fields(views=3)
    out = tmp_path / "field.png"
    cosines = feature_field_figure(pred, target, out, titles=("Spa3R", "VGGT"), grid_hw=(3, 4))
    np.testing.assert_allclose(cosines, cosine_per_view(as_grid(pred, (3, 4)), as_grid(target, (3, 4))))
    assert (cosines > 0.98).all()
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 200  # 3 columns, 2 rows
    # (V, h, w, C) input gives the same picture as (V, h*w, C) + grid
    feature_field_figure(pred.view(3, 3, 4, 16), target.view(3, 3, 4, 16), tmp_path / "grid.png", titles=("Spa3R", "VGGT"))
    assert (tmp_path / "grid.png").read_bytes() == out.read_bytes()
    with pytest.raises(ValueError, match="needs grid_hw"):
        feature_field_figure(pred, target, tmp_path / "x.png")
    with pytest.raises(ValueError, match="differ in shape"):
        feature_field_figure(pred[:2], target, tmp_path / "x.png", grid_hw=(3, 4))


def test_default_targets():
    assert default_targets(4, 0.5) == [2, 3]
    assert default_targets(2, 0.9) == [1]  # at least one context view
    assert default_targets(5, 0.0) == [4]  # at least one target view


def test_visualize_command(spa3r_pretraining_dir, scene_pictures, tmp_path, capsys):
    out = tmp_path / "fields.png"
    argv = [str(spa3r_pretraining_dir), "--scene", str(scene_pictures[0].parent), "--out", str(out), "--targets", "1", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # the printed cosines are those of the model's own outputs for the held-out views
    views = torch.stack([geometry_view(Image.open(p), 56) for p in scene_pictures])[None]
    model = Spa3RForPretraining.from_pretrained(spa3r_pretraining_dir).eval()
    with torch.no_grad():
        outputs = model(pixel_values=views, view_mask=torch.tensor([[False, True, False, True]]), return_loss=False)
    for name in ("geo", "sem"):
        pred, target = getattr(outputs, f"pred_{name}")[0, [1, 3]], getattr(outputs, f"target_{name}")[0, [1, 3]]
        values = cosine_per_view(pred.numpy().astype(np.float64), target.numpy().astype(np.float64))
        assert f"{name}: cosine per held-out view 1: {values[0]:.3f}, 3: {values[1]:.3f}" in printed
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[1] > png.size[0]  # 2 columns, 5 rows (views, geo ×2, sem ×2)


def test_visualize_errors(spa3r_pretraining_dir, spa3_vlm_dir, scene_pictures, tmp_path, capsys):
    images = ["--images", *map(str, scene_pictures), "--out", str(tmp_path / "x.png")]
    assert main([str(spa3r_pretraining_dir), *images, "--targets", "0", "1", "2", "3"]) == 2
    assert "hold out between 1 and 3 of the 4 views" in capsys.readouterr().err
    assert main([str(spa3r_pretraining_dir), *images, "--targets", "7"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main([str(spa3_vlm_dir), *images]) == 2
    assert "not a Spa3R one" in capsys.readouterr().err
    assert main([str(spa3r_pretraining_dir), "--scene", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "contains no images" in capsys.readouterr().err


def test_pca_fitted_on_the_target_only():
    pred, target = (as_grid(f, (3, 4)) for f in _fields())
    alone = shared_pca_rgb([target])[0]
    for prediction in (pred, 100.0 * pred, pred + 5.0):  # the prediction never moves the target's colours
        pred_rgb, target_rgb = shared_pca_rgb([prediction, target], fit_on=[1])
        np.testing.assert_array_equal(target_rgb, alone)
    pred_rgb, _ = shared_pca_rgb([target.copy(), target], fit_on=[1])
    np.testing.assert_array_equal(pred_rgb, alone)  # equal features, equal colours


def test_mean_field_baseline_cosine():
    target = np.zeros((2, 1, 2, 2))
    target[0, 0, 0], target[0, 0, 1], target[1, 0, 0], target[1, 0, 1] = (1, 0), (0, 1), (1, 0), (1, 0)
    baseline = mean_field_baseline(target)  # mean feature (0.75, 0.25) everywhere
    np.testing.assert_allclose(baseline[1, 0, 1], [0.75, 0.25])
    norm = np.hypot(0.75, 0.25)
    np.testing.assert_allclose(cosine_per_view(baseline, target), [(0.75 + 0.25) / 2 / norm, 0.75 / norm])


def test_figure_reports_the_baseline_next_to_each_cosine(tmp_path):
    pred, target = _fields(views=2)
    cosines = fields_figure({"geo": (pred, target)}, tmp_path / "f.png", grid_hw=(3, 4))
    assert set(cosines) == {"geo", "geo mean-field baseline"}
    grid = as_grid(target, (3, 4))
    np.testing.assert_allclose(cosines["geo mean-field baseline"], cosine_per_view(mean_field_baseline(grid), grid))
    assert (cosines["geo"] > cosines["geo mean-field baseline"] + 0.5).all()  # random targets: the mean says nothing


@pytest.fixture(scope="module")
def rendered_checkpoint(tmp_path_factory):
    """A tiny Spa3R pretrained (here: initialised) for rendered targets, as `spa3r pretrain --targets rendered` saves."""
    from pathlib import Path

    from modeling_spa3r import Spa3RConfig

    root = Path(__file__).resolve().parents[1]
    config = Spa3RConfig.from_json_file(root / "configuration" / "models" / "spa3r-synthetic-tiny.json")
    config.pretraining_targets = "rendered"
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("rendered_spa3r")
    Spa3RForPretraining(config).save_pretrained(directory)
    return directory


def test_visualize_rendered_target_checkpoint(rendered_checkpoint, training_synth_root, tmp_path, capsys):
    scene = sorted((training_synth_root / "scenes").iterdir())[0]
    out = tmp_path / "rendered.png"
    assert main([str(rendered_checkpoint), "--scene", str(scene), "--num-views", "4", "--size", "56", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "geo: cosine per held-out view" in printed and "geo mean-field baseline: cosine" in printed
    assert "sem: cosine per held-out view" in printed  # rendered class histograms are the semantic target
    with Image.open(out) as png:
        assert png.format == "PNG"
    # held-out views are the object-richest ones (never the reference view 0)
    model = Spa3RForPretraining.from_pretrained(rendered_checkpoint)
    pixel_values, inputs = rendered_inputs(model, scene, 4, 56)
    assert pixel_values.shape[:3] == (1, 4, 3) and inputs["geometry_targets"].shape[-1] == 4
    chosen = views_with_objects(inputs["semantic_targets"], 2)
    share = inputs["semantic_targets"][0, :, :, 4:].sum(-1).mean(-1)
    assert 0 not in chosen and min(share[chosen]) >= max(share[[v for v in range(1, 4) if v not in chosen]])
    # plain images have no rendered targets: a clear error, not a shape mismatch
    with pytest.raises(ValueError, match="pretrained on rendered targets"):
        predict_fields(model, pixel_values, [2, 3])


def test_views_with_objects():
    semantic = torch.zeros(1, 5, 2, 6)
    semantic[0, :, :, 1] = 1.0  # all wall ...
    semantic[0, [0, 2, 4], :, 1], semantic[0, [0, 2, 4], :, 5] = 0.5, 0.5  # ... except objects in views 0, 2, 4
    semantic[0, 4, :, 5] = 0.4
    assert views_with_objects(semantic, 2) == [2, 4]
    assert views_with_objects(semantic, 1) == [2]
