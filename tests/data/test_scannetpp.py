"""ScanNet++ in its released layout: split files select the scenes, DSLR undistorted images are the frames, the
nerfstudio transforms give OpenCV cameras on request, and missing files are errors naming them."""

import numpy as np
import pytest
import torch

from modeling_spa3r.data import io as dio
from modeling_spa3r.data import scannetpp
from modeling_spa3r.data.datasets import CropGeometry, MultiViewDataset
from modeling_spa3r.training.pretrain import DataArguments, build_datasets

from ..fixtures_real_data import write_iphone_stream, write_scannetpp

SPLITS = {"train": ["0a5c013435", "1b2e3f4a5c"], "val": ["9f8e7d6c5b"]}


@pytest.fixture
def release(tmp_path):
    return tmp_path / "scannetpp", write_scannetpp(tmp_path / "scannetpp", SPLITS)


def test_root_reads_the_train_split_images_only(release):
    root, written = release
    scenes = scannetpp.open_root(root)
    assert [s.path.name for s in scenes] == SPLITS["train"]
    for scene in scenes:
        assert [f.name for f in scene.files] == written[scene.path.name]["files"]
        assert scene.intrinsics is None
    dataset = MultiViewDataset(root, views=(2, 2), stride="scannetpp", width=56, samples_per_scene=2)
    sample = dataset[0]
    assert set(sample) == {"pixel_values", "frame_indices", "scene"}
    assert sample["pixel_values"].shape == (2, 3, 28, 56) and sample["scene"] == SPLITS["train"][0]
    assert dataset.stride == (20, 60)


def test_split_file_selects_val_and_poses_give_opencv_cameras(release):
    root, written = release
    (scene,) = scannetpp.open_root(f"{root}/splits/nvs_sem_val.txt?poses=1")
    expected = written["9f8e7d6c5b"]
    assert [f.name for f in scene.files] == expected["files"][:-1]  # the last frame is flagged is_bad
    gl_to_cv = np.diag([1.0, -1.0, -1.0, 1.0])
    for i, name in enumerate(expected["files"][:-1]):
        np.testing.assert_allclose(scene.cam_to_world[i], expected["poses"][name] @ gl_to_cv)
        np.testing.assert_allclose(scene.intrinsics[i], expected["k"])
    view = scene.load_view(1, width=56)
    geo = CropGeometry.for_width(60, 40, 56)
    np.testing.assert_allclose(view["intrinsics"], geo.intrinsics(expected["k"], 60, 40))
    camera_to_world = np.linalg.inv(np.vstack([view["extrinsics"], [0, 0, 0, 1]]))
    np.testing.assert_allclose(camera_to_world[:3, 3], expected["poses"][expected["files"][1]][:3, 3])
    np.testing.assert_allclose(camera_to_world[:3, 2], [0, 0, -1], atol=1e-12)  # OpenCV z = OpenGL -z


def test_pretraining_data_spec_reads_the_native_layout(release):
    root, _ = release
    data = DataArguments(train_data=[f"scannetpp:{root}"], eval_data=[f"scannetpp:{root}/splits/nvs_sem_val.txt"],
                         views=[2, 2], image_width=28)
    train, evaluation = build_datasets(data, mask_ratio=0.5, seed=0)
    assert len(train) == 2 and len(evaluation) == 1
    sample = evaluation[(0, 2)]
    assert sample["scene"] == "9f8e7d6c5b" and sample["view_mask"].shape == (2,)
    assert torch.isfinite(sample["pixel_values"]).all()


def test_missing_split_file_and_scene_folder_name_the_file(release):
    root, _ = release
    (root / "splits" / "nvs_sem_train.txt").unlink()
    with pytest.raises(dio.DataError, match=f"missing ScanNet\\+\\+ split file: {root}/splits/nvs_sem_train.txt"):
        MultiViewDataset(root)
    (root / "splits" / "nvs_sem_train.txt").write_text("0a5c013435\nmissing_scene\n")
    with pytest.raises(dio.DataError, match=f"missing ScanNet\\+\\+ DSLR image folder .*: {root}/data/missing_scene"):
        scannetpp.open_root(root)
    assert [s.path.name for s in scannetpp.open_root(root, on_error="skip")] == ["0a5c013435"]
    (root / "data" / "0a5c013435" / "dslr" / "nerfstudio" / "transforms_undistorted.json").unlink()
    with pytest.raises(dio.DataError, match="missing json file: .*0a5c013435/dslr/nerfstudio/transforms_undistorted.json"):
        scannetpp.open_scenes(root, poses=True)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]"):
        scannetpp.open_root(f"{root}?colour=1")


def test_iphone_stream_with_colmap_cameras_and_depth(release):
    root, _ = release
    scene_dir = root / "data" / "9f8e7d6c5b"
    expected = write_iphone_stream(scene_dir)
    (scene,) = scannetpp.open_root(f"{root}/splits/nvs_sem_val.txt?stream=iphone&poses=1")
    names = sorted(expected["registered"])
    assert [f.name for f in scene.files] == names  # the unregistered last frame is left out
    for i, name in enumerate(names):
        np.testing.assert_allclose(scene.cam_to_world[i], expected["registered"][name], atol=1e-12)
        np.testing.assert_allclose(scene.intrinsics[i], expected["k"])
    view = scene.load_view(2, width=56)  # 56 x 42: no resize, no crop
    np.testing.assert_array_equal(view["depth"], expected["depth"][names[2]] / np.float32(1000))
    np.testing.assert_allclose(view["intrinsics"], expected["k"])
    np.testing.assert_allclose(np.linalg.inv(np.vstack([view["extrinsics"], [0, 0, 0, 1]])),
                               expected["registered"][names[2]], atol=1e-12)
    (images_only,) = scannetpp.open_root(f"{root}/splits/nvs_sem_val.txt?stream=iphone")
    assert len(images_only) == 4 and images_only.intrinsics is None
    (scene_dir / "iphone" / "colmap" / "cameras.txt").unlink()
    with pytest.raises(dio.DataError, match="missing COLMAP model file: .*9f8e7d6c5b/iphone/colmap/cameras.txt"):
        scannetpp.open_root(f"{root}/splits/nvs_sem_val.txt?stream=iphone&poses=1")


def test_other_roots_are_not_scannetpp(tmp_path):
    assert scannetpp.open_root(tmp_path) is None
    assert scannetpp.open_root(tmp_path / "absent") is None
