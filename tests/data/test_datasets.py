"""Multi-view loaders on synthetic scenes and a ScanNet-layout fixture; bad-input errors."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from modeling_spa3r.data import io as dio
from modeling_spa3r.data.datasets import (CropGeometry, MultiViewDataset, SceneFolder, ViewBudgetBatchSampler,
                                          collate_views)


def _check_contract(batch, b, v):
    pv = batch["pixel_values"]
    assert pv.dtype == torch.float32 and pv.shape[:3] == (b, v, 3)
    h, w = pv.shape[-2:]
    assert h % 14 == 0 and w % 14 == 0
    assert 0.0 <= pv.min() and pv.max() <= 1.0
    assert batch["intrinsics"].shape == (b, v, 3, 3) and batch["intrinsics"].dtype == torch.float32
    assert batch["extrinsics"].shape == (b, v, 3, 4) and batch["extrinsics"].dtype == torch.float32
    assert batch["depth"].shape == (b, v, h, w) and batch["depth"].dtype == torch.float32
    rot = batch["extrinsics"][..., :3].double()
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(rot), atol=1e-5)


def _outside_room(batch, root, s, view):
    """Metres by which each back-projected pixel of (sample s, view) lies outside its room box, and its depth."""
    meta = dio.read_json(root / "scenes" / batch["scene"][s] / "scene.json")
    bounds = np.array([meta["room"]["width"], meta["room"]["depth"], meta["room"]["height"]])
    k = batch["intrinsics"][s, view].double().numpy()
    ext = batch["extrinsics"][s, view].double().numpy()
    depth = batch["depth"][s, view].double().numpy()
    u, vv = np.meshgrid(np.arange(depth.shape[1]), np.arange(depth.shape[0]))
    cam = np.stack([(u - k[0, 2]) / k[0, 0] * depth, (vv - k[1, 2]) / k[1, 1] * depth, depth], -1)
    world = (cam.reshape(-1, 3) - ext[:, 3]) @ ext[:, :3]  # inverse of x_c = R x_w + t
    frame = int(batch["frame_indices"][s, view])
    pose = dio.read_matrix(root / "scenes" / batch["scene"][s] / "pose" / f"{frame}.txt")
    assert np.allclose(np.linalg.inv(pose)[:3], ext, atol=1e-5)
    return np.maximum(-world, world - bounds).max(1), depth.reshape(-1)


def test_synthetic_batches_meet_contract_and_geometry(synth_root):
    ds = MultiViewDataset(synth_root, views=(2, 4), stride="synthetic", width=518, samples_per_scene=3)
    sampler = ViewBudgetBatchSampler(len(ds), views=(2, 4), images_per_batch=8, seed=1)
    batch = next(iter(DataLoader(ds, batch_sampler=sampler, collate_fn=collate_views)))
    b, v = batch["pixel_values"].shape[:2]
    _check_contract(batch, b, v)
    assert batch["pixel_values"].shape[-2:] == (378, 518)  # 128x96 -> 518x388 -> crop 518x378
    assert batch["normals"].shape == (b, v, 3, 378, 518) and batch["semantic"].dtype == torch.int64
    for s in range(b):
        for view in range(v):
            outside, depth = _outside_room(batch, synth_root, s, view)
            # nearest-neighbour depth upsampling moves a point by at most ~one source pixel at its depth
            fx_source = batch["intrinsics"][s, view, 0, 0].item() * 128 / 518
            assert (outside < 0.01 + 1.5 * depth / fx_source).all()


def test_cropped_views_reproject_exactly(synth_root):
    """Without resampling (width = source width) only the crop acts: every pixel lands on the room box."""
    ds = MultiViewDataset(synth_root, views=(3, 3), width=128)
    batch = collate_views([ds[0], ds[2]])
    assert batch["pixel_values"].shape[-2:] == (84, 126)
    for s in range(2):
        for view in range(3):
            outside, _ = _outside_room(batch, synth_root, s, view)
            assert (outside < 0.01).all()


def test_crop_geometry_intrinsics_exact():
    geo = CropGeometry.for_width(640, 480, 518)
    assert (geo.resized_w, geo.resized_h, geo.width, geo.height, geo.left, geo.top) == (518, 388, 518, 378, 0, 5)
    k = geo.intrinsics(np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]]), 640, 480)
    s = 518 / 640
    assert k[0, 0] == pytest.approx(500 * s) and k[1, 1] == pytest.approx(500 * 388 / 480)
    assert k[0, 2] == pytest.approx(320 * s - 0.5) and k[1, 2] == pytest.approx(240 * 388 / 480 - 0.5 - 5)


def _scannet_scene(root, name="scene0000_00", frames=12, nan_pose=None):
    """A ScanNet SensReader-style export: 64x48 colour, 32x24 depth (different resolutions)."""
    scene = root / name
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(frames):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(scene / "color" / f"{i}.jpg")
        Image.fromarray(np.full((24, 32), 1500 + i, dtype=np.uint16)).save(scene / "depth" / f"{i}.png")
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i, 0.0, 1.5]
        if i == nan_pose:
            pose[0, 0] = np.nan
        np.savetxt(scene / "pose" / f"{i}.txt", pose)
    k = np.array([[58.0, 0, 31.5, 0], [0, 58.0, 23.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(scene / "intrinsic" / "intrinsic_color.txt", k)
    return scene


def test_scannet_layout_fixture_loads(tmp_path):
    _scannet_scene(tmp_path, "scene0000_00")
    _scannet_scene(tmp_path, "scene0001_00")
    ds = MultiViewDataset(tmp_path, views=(3, 3), stride="scannet", width=140)
    assert [s.path.name for s in ds.scenes] == ["scene0000_00", "scene0001_00"]
    batch = collate_views([ds[0], ds[1]])
    _check_contract(batch, 2, 3)
    assert batch["pixel_values"].shape[-2:] == (98, 140)  # 64x48 -> 140x105 -> crop 140x98
    assert "normals" not in batch and "semantic" not in batch
    frames = batch["frame_indices"][0]
    assert torch.all(torch.diff(frames) >= 2) and torch.all(torch.diff(frames) <= 6)
    # depth resized from 32x24 (nearest) keeps the per-frame constant value in metres
    assert torch.allclose(batch["depth"][0, :, 0, 0], (1500 + frames).float() / 1000)
    assert batch["extrinsics"][0, 0, 0, 3].item() == pytest.approx(-0.1 * frames[0].item(), abs=1e-6)
    k = batch["intrinsics"][0, 0]
    assert k[0, 0].item() == pytest.approx(58 * 140 / 64) and k[1, 2].item() == pytest.approx(24 * 105 / 48 - 0.5 - 3)


def test_batch_sampler_respects_budget_and_covers_every_sample():
    sampler = ViewBudgetBatchSampler(50, views=(4, 12), images_per_batch=24, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i, _ in b) == list(range(50))
    counts = set()
    for b in batches:
        (v,) = {vv for _, vv in b}
        assert 4 <= v <= 12 and len(b) * v <= 24
        if b is not batches[-1]:
            assert len(b) == 24 // v
        counts.add(v)
    assert len(counts) > 1 and len(sampler) == len(batches)
    assert batches == list(sampler)
    sampler.set_epoch(1)
    assert batches != list(sampler)


def test_collate_aligns_sizes_and_rejects_mixed_view_counts():
    def sample(h, w, v=2):
        return {"pixel_values": torch.rand(v, 3, h, w), "depth": torch.rand(v, h, w),
                "intrinsics": torch.tensor([[10.0, 0, w / 2], [0, 10.0, h / 2], [0, 0, 1]]).expand(v, 3, 3).clone(),
                "extrinsics": torch.zeros(v, 3, 4), "frame_indices": torch.arange(v), "scene": "s"}
    a, b = sample(28, 42), sample(56, 28)
    batch = collate_views([a, b])
    assert batch["pixel_values"].shape == (2, 2, 3, 28, 28)
    assert torch.equal(batch["pixel_values"][1], b["pixel_values"][:, :, 14:42, :])
    assert batch["intrinsics"][0, 0, 0, 2].item() == 21 - 7 and batch["intrinsics"][1, 0, 1, 2].item() == 28 - 14
    with pytest.raises(ValueError, match="same number of views"):
        collate_views([sample(28, 28, 2), sample(28, 28, 3)])


def test_missing_frame_corrupt_image_empty_folder_and_nan_pose_name_the_file(tmp_path):
    scene = _scannet_scene(tmp_path / "a")
    (scene / "depth" / "4.png").unlink()
    with pytest.raises(dio.DataError, match=r"missing depth frame: .*depth/4\.png"):
        SceneFolder(scene).load_view(4, 56)
    (scene / "color" / "5.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(dio.DataError, match=r"corrupt color image .*color/5\.jpg"):
        SceneFolder(scene).load_view(5, 56)
    empty = tmp_path / "empty"
    (empty / "color").mkdir(parents=True)
    with pytest.raises(dio.DataError, match=r"empty scene folder .*empty"):
        SceneFolder(empty)
    bad = _scannet_scene(tmp_path / "b", nan_pose=3)
    with pytest.raises(dio.DataError, match=r"NaN or infinite values: .*pose/3\.txt"):
        MultiViewDataset([bad])


def test_skip_mode_logs_and_drops_bad_frames(tmp_path, caplog):
    bad = _scannet_scene(tmp_path, nan_pose=3)
    (bad / "depth" / "7.png").unlink()
    with caplog.at_level(logging.WARNING):
        ds = MultiViewDataset([bad], views=(11, 11), stride=(1, 1), width=56, on_error="skip", max_retries=1)
        assert len(ds.scenes[0]) == 11 and "3.jpg" not in ds.scenes[0].color_files
        with pytest.raises(dio.DataError, match=r"depth/7\.png"):
            ds[0]  # every 11-frame window includes frame 7: skipping gives up after the retries
    assert any("pose/3.txt" in r.getMessage() for r in caplog.records)
    assert any("depth/7.png" in r.getMessage() for r in caplog.records)


def test_worker_errors_name_the_file(tmp_path):
    scene = _scannet_scene(tmp_path)
    for i in range(12):
        (scene / "depth" / f"{i}.png").unlink()
    loader = DataLoader(MultiViewDataset([scene], views=(2, 2), width=56), batch_size=1, num_workers=1,
                        collate_fn=collate_views)
    with pytest.raises(dio.DataError, match=r"missing depth frame: .*depth/\d+\.png"):
        next(iter(loader))
