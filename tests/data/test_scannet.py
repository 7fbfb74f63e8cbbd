"""ScanNet .sens reader and export: what a tiny .sens written from the format description holds comes out
unchanged (poses, intrinsics, JPEG bytes, depth in millimetres, frame indices), invalid poses are left out and
counted, truncated files name the file, exports resume, and the loaders read the export (also images-only)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_spa3r.data import io as dio
from modeling_spa3r.data.datasets import MultiViewDataset, SceneFolder, collate_views
from modeling_spa3r.data.image_scene import ImageScene
from modeling_spa3r.data.scannet import SensFile, export_dataset, export_scene

from ..fixtures_real_data import sens_scene, write_sens


@pytest.fixture
def two_frames(tmp_path):
    scene = sens_scene(num_frames=2)
    return scene, write_sens(tmp_path / "scans" / "scene0000_00" / "scene0000_00.sens", scene)


def test_reader_returns_what_was_written(two_frames):
    scene, path = two_frames
    with SensFile(path) as sens:
        header = sens.header
        frames = list(sens.frames())
        depths = [sens.decode_depth(f) for f in frames]
    assert (header.version, header.sensor_name, header.num_frames) == (4, "StructureSensor", 2)
    assert (header.color_compression, header.depth_compression) == ("jpeg", "zlib")
    assert (header.color_width, header.color_height, header.depth_width, header.depth_height) == (40, 30, 20, 15)
    assert header.depth_shift == 1000.0
    np.testing.assert_array_equal(header.intrinsic_color, scene["intrinsic_color"].astype(np.float32))
    np.testing.assert_array_equal(header.intrinsic_depth, scene["intrinsic_depth"].astype(np.float32))
    for frame, depth, written in zip(frames, depths, scene["frames"]):
        np.testing.assert_array_equal(frame.cam_to_world, written["pose"])
        assert frame.color_bytes == written["color"]
        assert (frame.color_timestamp, frame.depth_timestamp) == (written["color_ts"], written["depth_ts"])
        assert depth.dtype == np.uint16
        np.testing.assert_array_equal(depth, written["depth"])
    assert [f.index for f in frames] == [0, 1]


def test_export_writes_the_loader_layout(two_frames, tmp_path):
    scene, path = two_frames
    out = tmp_path / "export" / "scene0000_00"
    summary = export_scene(path, out)
    assert summary["exported"] == 2 and summary["invalid_poses"] == 0 and summary["frames_in_file"] == 2
    assert json.loads((out / "export.json").read_text())["exported"] == 2
    for index, written in enumerate(scene["frames"]):
        assert (out / "color" / f"{index}.jpg").read_bytes() == written["color"]  # as stored, not re-encoded
        depth_png = np.asarray(Image.open(out / "depth" / f"{index}.png"))
        assert depth_png.dtype == np.uint16
        np.testing.assert_array_equal(depth_png, written["depth"])
        np.testing.assert_allclose(dio.read_matrix(out / "pose" / f"{index}.txt"), written["pose"], atol=1e-7)
        np.testing.assert_allclose(dio.read_depth(out / "depth" / f"{index}.png"), written["depth"] / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(dio.read_intrinsics(out / "intrinsic" / "intrinsic_color.txt"),
                               scene["intrinsic_color"][:3, :3], atol=1e-6)
    np.testing.assert_allclose(dio.read_matrix(out / "intrinsic" / "extrinsic_depth.txt", kind="extrinsics"), np.eye(4))
    folder = SceneFolder(out)
    assert folder.color_files == ["0.jpg", "1.jpg"]
    np.testing.assert_allclose(folder.cam_to_world, np.stack([f["pose"] for f in scene["frames"]]), atol=1e-7)


def test_frame_skip_and_invalid_poses_are_counted(tmp_path):
    scene = sens_scene(num_frames=7, invalid=(2, 3))
    path = write_sens(tmp_path / "scene0001_00.sens", scene)
    summary = export_scene(path, tmp_path / "out", frame_skip=2)
    assert summary["exported"] == 3 and summary["invalid_poses"] == 1 and summary["invalid_pose_frames"] == [2]
    assert sorted(p.name for p in (tmp_path / "out" / "color").iterdir()) == ["0.jpg", "4.jpg", "6.jpg"]
    assert (tmp_path / "out" / "color" / "4.jpg").read_bytes() == scene["frames"][4]["color"]
    every = export_scene(path, tmp_path / "all")
    assert every["exported"] == 5 and every["invalid_pose_frames"] == [2, 3]
    assert not (tmp_path / "all" / "pose" / "3.txt").exists()


@pytest.mark.parametrize("keep", [3, 40, 200, -5])
def test_truncated_sens_names_the_file(two_frames, keep):
    _, path = two_frames
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep > 0 else data[:keep])
    with pytest.raises(dio.DataError, match=rf"truncated \.sens file: .* {path}$"):
        with SensFile(path) as sens:
            list(sens.frames())


def test_bad_version_and_missing_file(tmp_path):
    path = write_sens(tmp_path / "x.sens", sens_scene(num_frames=1), version=3)
    with pytest.raises(dio.DataError, match=rf"\.sens version must be 4, got 3: {path}"):
        SensFile(path)
    with pytest.raises(dio.DataError, match="missing .sens file"):
        SensFile(tmp_path / "absent.sens")


def test_export_dataset_resumes_and_reports_failures(tmp_path):
    scans = tmp_path / "scans"
    for number in range(3):
        write_sens(scans / f"scene000{number}_00" / f"scene000{number}_00.sens", sens_scene(num_frames=2))
    out = tmp_path / "export"
    first = export_dataset(scans, out, workers=2, progress=False)
    assert sorted(first) == ["scene0000_00", "scene0001_00", "scene0002_00"]
    assert not any(r.get("skipped") for r in first.values())
    stamp = (out / "scene0001_00" / "export.json").stat().st_mtime_ns
    shutil.rmtree(out / "scene0002_00")
    (out / "scene0002_00.partial" / "color").mkdir(parents=True)  # a killed export leaves a partial folder
    second = export_dataset(scans, out, progress=False)
    assert second["scene0001_00"]["skipped"] and not second["scene0002_00"].get("skipped")
    assert (out / "scene0001_00" / "export.json").stat().st_mtime_ns == stamp
    assert not (out / "scene0002_00.partial").exists() and len(list((out / "scene0002_00" / "color").iterdir())) == 2
    with pytest.raises(dio.DataError, match="already exported with frame_skip=1"):
        export_dataset(scans, out, frame_skip=2, progress=False)
    bad = scans / "scene0009_00" / "scene0009_00.sens"
    bad.parent.mkdir()
    bad.write_bytes((scans / "scene0000_00" / "scene0000_00.sens").read_bytes()[:500])
    with pytest.raises(dio.DataError, match=r"1 of 1 scenes failed .*\n  scene0009_00: truncated"):
        export_dataset(scans, out, progress=False)


def test_loader_reads_export_and_images_only_scenes(tmp_path):
    scans = tmp_path / "scans"
    for number in range(2):
        write_sens(scans / f"scene000{number}_00" / f"scene000{number}_00.sens", sens_scene(num_frames=4))
    export_dataset(scans, tmp_path / "full", progress=False)
    images_only = tmp_path / "images_only"
    for scene in ("scene0000_00", "scene0001_00"):
        shutil.copytree(tmp_path / "full" / scene / "color", images_only / scene / "color")
    full = MultiViewDataset(tmp_path / "full", views=(2, 2), stride=(1, 1), width=28, seed=3)
    plain = MultiViewDataset(images_only, views=(2, 2), stride=(1, 1), width=28, seed=3)
    assert all(isinstance(s, SceneFolder) for s in full.scenes)
    assert all(isinstance(s, ImageScene) for s in plain.scenes)
    a, b = full[0], plain[0]
    assert set(b) == {"pixel_values", "frame_indices", "scene"}
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["frame_indices"], b["frame_indices"])
    batch = collate_views([plain[0], plain[1]])
    assert batch["pixel_values"].shape == (2, 2, 3, 14, 28) and "intrinsics" not in batch
    assert batch["scene"] == ["scene0000_00", "scene0001_00"]


def test_depth_in_other_units_becomes_millimetres_and_depth_can_be_left_out(tmp_path):
    scene = sens_scene(num_frames=1)
    scene["depth_shift"] = 4000.0  # a sensor storing quarter millimetres
    path = write_sens(tmp_path / "x.sens", scene)
    export_scene(path, tmp_path / "out")
    expected = np.round(scene["frames"][0]["depth"] / 4.0).astype(np.uint16)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "depth" / "0.png")), expected)
    summary = export_scene(path, tmp_path / "no_depth", depth=False)
    assert not summary["depth"] and not (tmp_path / "no_depth" / "depth").exists()
    assert (tmp_path / "no_depth" / "color" / "0.jpg").read_bytes() == scene["frames"][0]["color"]
