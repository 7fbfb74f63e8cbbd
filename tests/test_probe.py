"""Room-level linear probes (modeling_spa3r/probe.py): properties from scene.json, the ridge probe, view spreading,
and `spa3r probe` on a tiny checkpoint and rooms."""

import json

import numpy as np
import pytest
import torch

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining
from modeling_spa3r.cli import main as cli_main
from modeling_spa3r.probe import (
    PROPERTIES, ROOM_PROPERTIES, RidgeProbe, r2_scores, random_init_encoder, room_layout, room_properties, spread_frames,
)

from .fixtures_training import REPO


@pytest.fixture(scope="module")
def probe_rooms(tmp_path_factory):
    """Twelve small synthetic rooms (56×42, 8 frames each)."""
    from modeling_spa3r.data import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("probe_rooms")
    config = SynthConfig(width=56, height=42, frames=8, fps=4, max_objects=6)
    generate_dataset(root, 12, seed=5, config=config, progress=False, val_fraction=0.0, test_fraction=0.0)
    return root


@pytest.fixture(scope="module")
def probe_checkpoint(tmp_path_factory):
    config = Spa3RConfig.from_json_file(str(REPO / "configuration" / "models" / "spa3r-synthetic-tiny.json"))
    config.vggt_config.image_size = 56  # the view width the probe uses by default
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("probe_checkpoint")
    Spa3RForPretraining(config).save_pretrained(directory)
    return directory


def test_room_properties_from_scene_json():
    scene = {
        "room": {"width": 3.0, "depth": 5.0, "height": 2.7},
        "objects": [
            {"category": "chair", "center": [0.0, 0.0, 0.5]},
            {"category": "chair", "center": [3.0, 4.0, 0.5]},
            {"category": "table", "center": [0.0, 4.0, 0.5]},
        ],
    }
    assert room_properties(scene) == {
        "floor_area": 15.0,
        "room_length": 5.0,
        "room_width": 3.0,
        "object_count": 3.0,
        "num_categories": 2.0,
        "mean_object_distance": pytest.approx((5.0 + 4.0 + 3.0) / 3),
    }
    with pytest.raises(ValueError, match="scene.json lacks room width/depth"):
        room_properties({"room": {"width": 3.0}, "objects": []})


def _camera(position, yaw, pitch=0.0):
    """OpenCV camera-to-world pose (z up world) at `position` looking along yaw (from +x towards +y), tilted down by
    `pitch` (radians)."""
    forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = position
    return pose.tolist()


def test_room_layout_in_the_first_views_frame():
    objects = [{"category": "chair", "center": [3.0, 2.0, 0.5]}, {"category": "table", "center": [1.0, 5.0, 0.5]}]
    poses = [_camera([1.0, 2.0, 1.5], 0.0), _camera([1.0, 2.0, 1.5], np.pi / 2, pitch=0.5), _camera([2.0, 3.0, 1.5], 0.0, pitch=np.pi / 2)]
    scene = {"room": {"width": 4.0, "depth": 6.0}, "objects": objects,
             "camera": {"cam_to_world": poses, "convention": "opencv", "pose": "camera_to_world"}}  # fmt: skip
    # looking along +x from (1, 2): the wall x=4 ahead, x=0 behind, y=0 right, y=6 left; objects' mean (2, 3.5)
    expected = {"wall_ahead": 3.0, "wall_behind": 1.0, "wall_right": 2.0, "wall_left": 4.0, "objects_ahead": 1.0, "objects_right": -1.5}
    assert room_layout(scene, 0) == pytest.approx(expected)
    # turned to +y and tilted down: only the horizontal viewing direction counts
    turned = {"wall_ahead": 4.0, "wall_behind": 2.0, "wall_right": 3.0, "wall_left": 1.0, "objects_ahead": 1.5, "objects_right": 1.0}
    assert room_layout(scene, 1) == pytest.approx(turned)
    with pytest.raises(ValueError, match="camera 2 looks straight up or down"):
        room_layout(scene, 2)
    with pytest.raises(ValueError, match=r"camera.cam_to_world\[3\]"):
        room_layout(scene, 3)
    with pytest.raises(ValueError, match="reads OpenCV camera-to-world poses"):
        room_layout({**scene, "camera": {**scene["camera"], "convention": "opengl"}}, 0)


def test_ridge_probe_recovers_a_linear_map_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 30))
    weights = rng.normal(size=(30, 2))
    y = np.concatenate((x @ weights + 5.0, rng.normal(size=(120, 1))), axis=1)  # two linear targets, one pure noise
    probe = RidgeProbe().fit(x[:80], y[:80])
    r2 = r2_scores(probe.predict(x[80:]), y[80:])
    assert r2[0] > 0.99 and r2[1] > 0.99 and r2[2] < 0.1, r2
    assert probe.chosen[0] < probe.chosen[2]  # cross-validation regularises the noise target harder
    np.testing.assert_allclose(r2_scores(y[80:], y[80:]), 1.0)
    np.testing.assert_allclose(r2_scores(np.full_like(y[80:], 0) + y[80:].mean(0), y[80:]), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="need ≥ 4 rooms"):
        RidgeProbe().fit(x[:3], y[:3])


def test_spread_frames_are_even_and_disjoint():
    assert spread_frames(32, 4) == [4, 12, 20, 28]
    a, b = spread_frames(32, 4, 0.25), spread_frames(32, 4, 0.75)
    assert a == [2, 10, 18, 26] and b == [6, 14, 22, 30] and not set(a) & set(b)
    with pytest.raises(ValueError, match="fewer than the 5 views"):
        spread_frames(4, 5)


def test_random_init_encoder_is_the_pretraining_start(probe_checkpoint):
    config = Spa3RConfig.from_pretrained(probe_checkpoint)
    first, again, other = (random_init_encoder(config, seed) for seed in (0, 0, 1))
    weight = "encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])
    saved = Spa3RForPretraining.from_pretrained(probe_checkpoint).spa3r.state_dict()[weight]
    assert torch.equal(first.state_dict()[weight], saved)  # the checkpoint was built after manual_seed(0)


def test_spa3r_probe_command(probe_checkpoint, probe_rooms, tmp_path, capsys):
    out = tmp_path / "probe.json"
    rooms = probe_rooms / "scenes"
    assert cli_main(["probe", str(probe_checkpoint), "--rooms", str(rooms), "--views", "2", "--random_seeds", "0", "1",
                     "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "held-out R² on 12 rooms (5-fold cross-fitting), 2 views" in printed and "| floor_area |" in printed
    assert "| wall_ahead |" in printed and "**mean R², layout in the first view's frame**" in printed
    result = json.loads(out.read_text())
    encoders = [f"random encoder, trained backbone (seed {seed})" for seed in (0, 1)]  # a from-scratch backbone
    assert set(result["results"]) == {"checkpoint", "random init (seed 0)", "random init (seed 1)", "thumbnails", *encoders}
    assert list(result["results"]["checkpoint"]["r2"]) == list(PROPERTIES)
    # the checkpoint is the seed-0 initialisation: same latents, same probe scores, also with its own backbone
    r2 = {name: row["r2"] for name, row in result["results"].items()}
    assert r2["checkpoint"] == r2["random init (seed 0)"] == r2[encoders[0]]
    assert r2[encoders[1]] != r2["random init (seed 1)"]  # the seed-1 encoder on the checkpoint's aggregator
    assert "ckpt > best random encoder + std" in printed
    for row in result["summary"].values():  # the random encoders are reported, not part of the target
        assert row["beats_random"] == (row["checkpoint"] > row["random_best"] + row["random_std"])
        assert row["beats_random_encoder"] == (row["checkpoint"] > row["random_encoder_best"] + row["random_encoder_std"])
    # view disagreement only for the room properties: the layout moves with the first view
    assert all(list(r["disagreement"]) == list(ROOM_PROPERTIES) for r in result["results"].values())
    scenes = sorted(rooms.iterdir())
    (tmp_path / "bare").mkdir()
    for scene in scenes[:3]:  # rooms without scene.json cannot be probed
        (tmp_path / "bare" / scene.name).mkdir()
        (tmp_path / "bare" / scene.name / "color").symlink_to(scene / "color")
    assert cli_main(["probe", str(probe_checkpoint), "--rooms", str(tmp_path / "bare")]) == 2
    assert "has a scene.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def rendered_slot_checkpoint(tmp_path_factory):
    """A tiny rendered-target pretraining checkpoint with view slots, its view width recorded as `spa3r pretrain` does."""
    config = Spa3RConfig.from_json_file(str(REPO / "configuration" / "models" / "spa3r-synthetic-tiny.json"))
    config.view_slot_embeddings, config.pretraining_targets, config.pretraining_image_width = 4, "rendered", 56
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("slot_checkpoint")
    Spa3RForPretraining(config).save_pretrained(directory)
    return directory


def test_probe_of_a_view_slot_model_adds_the_no_slot_baseline_and_latent_usage(rendered_slot_checkpoint, probe_rooms,
                                                                             tmp_path, capsys):  # fmt: skip
    out = tmp_path / "probe.json"
    assert cli_main(["probe", str(rendered_slot_checkpoint), "--rooms", str(probe_rooms / "scenes"), "--views", "2",
                     "--random_seeds", "0", "--latent_usage", "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "random init, no view slots (1 seeds)" in printed
    assert "latent usage on 12 held-out rooms (6 spread views, first 3 context)" in printed
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"checkpoint", "random init (seed 0)", "random init, no view slots (seed 0)", "thumbnails",
                                      "random encoder, trained backbone (seed 0)"}  # fmt: skip
    for prop, row in result["summary"].items():  # beating the baseline means beating both random-init rows
        assert row["beats_random"] == (row["checkpoint"] > row["random_best"] + row["random_std"]
                                       and row["checkpoint"] > row["random_no_slots_best"] + row["random_no_slots_std"]), prop  # fmt: skip
    usage = result["latent_usage"]
    assert set(usage["own"]) == {"context", "target"} and all(value > 0 for value in usage["own"].values())
    assert usage["gain"]["target"] == pytest.approx(1 - usage["own"]["target"] / usage["mean"]["target"])


def test_latent_usage_of_one_room_is_zero_and_teacher_checkpoints_are_refused(rendered_slot_checkpoint, probe_checkpoint,
                                                                            probe_rooms):  # fmt: skip
    from modeling_spa3r.probe import find_rooms, latent_usage

    one_room = find_rooms(probe_rooms / "scenes")[:1]  # its own latent is the mean latent and the "other" room's
    usage = latent_usage(rendered_slot_checkpoint, one_room, num_views=4, num_context=2, progress=False)
    assert usage.own == usage.mean == usage.other and usage.gain("target") == 0.0
    with pytest.raises(ValueError, match="needs a checkpoint pretrained against rendered targets"):
        latent_usage(probe_checkpoint, one_room, progress=False)
    with pytest.raises(ValueError, match="num_context must be in"):
        latent_usage(rendered_slot_checkpoint, one_room, num_views=4, num_context=4, progress=False)


def test_room_size_scores_are_the_vlm_score_of_the_probes_answers():
    """An oracle feature answers every question exactly (MRA 1); a constant feature answers the train mean."""
    from modeling_spa3r.probe import room_size_scores
    from modeling_spa3r.vsibench import mean_relative_accuracy

    rng = np.random.default_rng(0)
    train_area, test_area = rng.uniform(10, 60, 40), rng.uniform(10, 60, 9)
    oracle = room_size_scores(train_area[:, None], train_area, test_area[:, None], test_area)
    assert oracle == pytest.approx(np.ones(9))
    constant = room_size_scores(np.ones((40, 3)), train_area, np.ones((9, 3)), test_area)
    assert constant == pytest.approx([mean_relative_accuracy(train_area.mean(), t) for t in test_area])


def test_readout_room_size_scores_every_baseline_on_the_questions(rendered_slot_checkpoint, probe_rooms):
    from modeling_spa3r.probe import find_rooms, readout_room_size

    rooms = find_rooms(probe_rooms / "scenes")
    questions = []
    for room in rooms[8:]:
        meta = json.loads((room / "scene.json").read_text())
        questions.append({"scene_name": room.name, "ground_truth": f"{meta['room']['width'] * meta['room']['depth']:.1f}"})
    readout = readout_room_size(rendered_slot_checkpoint, rooms[:8], questions, probe_rooms / "scenes", num_views=2,
                                random_seeds=(0, 1), progress=False)  # fmt: skip
    assert (readout.n, readout.num_train) == (4, 8)
    assert set(readout.groups()) == {"random init", "random init, no view slots", "random encoder, trained backbone"}
    assert all(len(scores) == 2 for scores in readout.groups().values())
    assert all(0.0 <= score <= 1.0 for score in readout.scores.values())
    low, high = readout.interval
    assert low <= readout.scores["checkpoint"] <= high
    assert readout.lines()[0].startswith(f"checkpoint: {100 * readout.scores['checkpoint']:.1f} [")
    assert json.loads(json.dumps(readout.to_json()))["n"] == 4
    with pytest.raises(ValueError, match="no room-size questions"):
        readout_room_size(rendered_slot_checkpoint, rooms[:8], [], probe_rooms / "scenes", progress=False)
