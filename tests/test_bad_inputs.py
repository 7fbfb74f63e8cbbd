"""What users get wrong, surface by surface: every bad input gives an error of the documented type whose message
names the input (field, file or option) and says what was expected — never a bare torch/numpy message, never a
silent wrong result. Each case: (what is done, exception type, words the message must contain)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_spa3r import Spa3RForPretraining, Spa3RModel
from modeling_spa3r.data.datasets import SceneFolder
from modeling_spa3r.data.io import write_matrix
from modeling_spa3r.modeling_vggt import VGGTModel
from modeling_spa3r.validation import DataError

from .fixtures_spa3r import tiny_spa3r_config, tiny_vggt_config

REPO = Path(__file__).resolve().parents[1]
GOOD = torch.rand(2, 4, 3, 28, 42, generator=torch.Generator().manual_seed(0))  # (B, V, 3, H, W) in [0, 1]
MASK = torch.tensor([[False, True, False, True], [False, False, True, True]])


def assert_raises(action, error_type, words):
    with pytest.raises(error_type) as caught:
        action()
    message = str(caught.value)
    missing = [word for word in words if word not in message]
    assert not missing, f"{missing} not in: {message}"
    return message


# ---------------------------------------------------------------------------------------------------------------------
# Models: Spa3RModel, VGGTModel, Spa3RForPretraining forward
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {
        "spa3r": Spa3RModel(tiny_spa3r_config()).eval(),
        "vggt": VGGTModel(tiny_vggt_config()).eval(),
        "pretraining": Spa3RForPretraining(tiny_spa3r_config()).eval(),
    }


PIXEL_CASES = {
    "uint8": ((GOOD * 255).to(torch.uint8), ["pixel_values", "torch.uint8", "/ 255"]),
    "float-0-255": (GOOD * 255, ["pixel_values", "[0, 1]", "divide 0–255 images by 255"]),
    "float64": (GOOD.double(), ["pixel_values", "float64", ".float()"]),
    "normalised": ((GOOD - 0.5) / 0.2, ["pixel_values", "[0, 1]", "unnormalised"]),
    "nan": (GOOD.masked_fill(GOOD > 0.99, float("nan")), ["pixel_values", "NaN"]),
    "inf": (GOOD.masked_fill(GOOD > 0.99, float("inf")), ["pixel_values", "infinite"]),
    "zero-size": (torch.zeros(2, 4, 3, 0, 0), ["pixel_values", "empty", "(2, 4, 3, 0, 0)"]),
    "grey": (GOOD[:, :, :1], ["pixel_values", "3 (RGB) channels", "got 1"]),
    "channels-last": (GOOD.permute(0, 1, 3, 4, 2), ["pixel_values", "3 (RGB) channels"]),
    "not-multiple-of-14": (GOOD[..., :27, :], ["height 27", "multiples of the patch size 14"]),
    "numpy": (GOOD.numpy(), ["pixel_values", "torch.Tensor", "ndarray"]),
    "3d": (GOOD[0, 0], ["pixel_values", "(B, V, 3, H, W)"]),
}


@pytest.mark.parametrize("model_name", ["spa3r", "vggt", "pretraining"])
@pytest.mark.parametrize("case", ["uint8", "float-0-255", "float64", "zero-size"])
def test_every_model_refuses_bad_pixels(models, model_name, case):
    pixels, words = PIXEL_CASES[case]
    kwargs = {"view_mask": MASK} if model_name == "pretraining" else {}
    assert_raises(lambda: models[model_name](pixels, **kwargs), ValueError, words)


@pytest.mark.parametrize("case", ["normalised", "nan", "inf", "grey", "channels-last", "not-multiple-of-14", "numpy", "3d"])
def test_spa3r_model_refuses_bad_pixels(models, case):
    pixels, words = PIXEL_CASES[case]
    assert_raises(lambda: models["spa3r"](pixels), ValueError, words)


def test_pretraining_needs_two_views(models):
    assert_raises(lambda: models["pretraining"](GOOD[:, :1]), ValueError, ["at least 2 views", "got 1"])


VIEW_MASK_CASES = {
    "wrong-shape": (torch.zeros(2, 3, dtype=torch.bool), ["view_mask", "(2, 4)", "(2, 3)"]),
    "int-dtype": (MASK.long(), ["view_mask", "bool", "torch.int64"]),
    "no-context": (torch.ones(2, 4, dtype=torch.bool), ["view_mask", "no context view"]),
    "uneven-context": (torch.tensor([[False, True, True, True], [False, False, True, True]]), ["same number of context views", "[1, 2]"]),
    "list": ([[False, True, False, True]] * 2, ["view_mask", "list"]),
}


@pytest.mark.parametrize("case", sorted(VIEW_MASK_CASES))
def test_vggt_view_mask(models, case):
    mask, words = VIEW_MASK_CASES[case]
    assert_raises(lambda: models["vggt"](GOOD, view_mask=mask), ValueError, words)


def test_pretraining_view_mask_needs_a_target(models):
    mask = torch.zeros(2, 4, dtype=torch.bool)
    assert_raises(lambda: models["pretraining"](GOOD, view_mask=mask), ValueError, ["view_mask", "no target view"])


def _cameras():
    extrinsics = torch.eye(3, 4).repeat(2, 4, 1, 1)
    extrinsics[..., 2, 3] = torch.arange(4.0)
    intrinsics = torch.tensor([[30.0, 0, 21], [0, 30.0, 14], [0, 0, 1]]).repeat(2, 4, 1, 1)
    return extrinsics, intrinsics


def _bad_cameras(change):
    extrinsics, intrinsics = _cameras()
    change(extrinsics, intrinsics)
    return {"extrinsics": extrinsics, "intrinsics": intrinsics}


PRETRAINING_CASES = {
    "zero-intrinsics": (_bad_cameras(lambda e, k: k.zero_()), ["intrinsics", "positive focal lengths", "min fx 0"]),
    "negative-focal": (_bad_cameras(lambda e, k: k[..., 1, 1].fill_(-30)), ["intrinsics", "positive focal", "min fy -30"]),
    "nan-extrinsics": (_bad_cameras(lambda e, k: e[0, 1, 0, 3].fill_(float("nan"))), ["extrinsics", "NaN"]),
    "nan-intrinsics": (_bad_cameras(lambda e, k: k[1, 0, 0, 2].fill_(float("nan"))), ["intrinsics", "NaN"]),
    "scaled-rotation": (_bad_cameras(lambda e, k: e[..., :3].mul_(2.0)), ["extrinsics", "rotations", "R·Rᵀ = I"]),
    "reflection": (_bad_cameras(lambda e, k: e[..., 0, 0].fill_(-1.0)), ["extrinsics", "det R = +1"]),
    "only-extrinsics": ({"extrinsics": _cameras()[0]}, ["both extrinsics and intrinsics"]),
    "4x4-extrinsics": ({"extrinsics": torch.eye(4).repeat(2, 4, 1, 1), "intrinsics": _cameras()[1]}, ["(2, 4, 3, 4)", "(2, 4, 4, 4)"]),
    "nan-depth": ({"depth_targets": torch.full((2, 4, 6, 1), float("nan"))}, ["depth_targets", "NaN"]),
    "3-channel-depth": ({"depth_targets": torch.rand(2, 4, 6, 3)}, ["depth_targets", "1 channels", "got 3"]),
    "semantic-channels": ({"semantic_targets": torch.rand(2, 4, 6, 5)}, ["semantic_targets", "32 channels", "got 5"]),
    "geometry-channels": ({"geometry_targets": torch.rand(2, 4, 6, 4)}, ["geometry_targets", "64 channels", "got 4"]),
    "target-patches": ({"geometry_targets": torch.rand(2, 4, 5, 64)}, ["geometry_targets", "(2, 4, 6, C)", "(2, 4, 5, 64)"]),
    "inf-geometry": ({"geometry_targets": torch.full((2, 4, 6, 64), float("inf"))}, ["geometry_targets", "infinite"]),
}


@pytest.mark.parametrize("case", sorted(PRETRAINING_CASES))
def test_pretraining_batch_inputs(models, case):
    kwargs, words = PRETRAINING_CASES[case]
    assert_raises(lambda: models["pretraining"](GOOD, view_mask=MASK, **kwargs), ValueError, words)


def test_pretraining_accepts_good_cameras_and_targets(models):
    """The documented behaviour for valid inputs: a finite loss (the checks above do not reject real data)."""
    extrinsics, intrinsics = _cameras()
    with torch.no_grad():
        out = models["pretraining"](GOOD, view_mask=MASK, extrinsics=extrinsics, intrinsics=intrinsics,
                                    depth_targets=torch.rand(2, 4, 6, 1), geometry_targets=torch.rand(2, 4, 6, 64))  # fmt: skip
    assert torch.isfinite(out.loss)


# ---------------------------------------------------------------------------------------------------------------------
# Processor
# ---------------------------------------------------------------------------------------------------------------------


def _frames_folder(root: Path, make) -> Path:
    folder = root / "frames"
    folder.mkdir(exist_ok=True)
    for index in range(3):
        make(index).save(folder / f"{index}.png")
    return folder


def _rgb(index):
    return Image.fromarray(np.full((42, 56, 3), 40 * index + 20, np.uint8))


PROCESSOR_CASES = {
    "num_frames=0": (lambda root: ({"videos": [_frames_folder(root, _rgb)]}, {"num_frames": 0}), ValueError, ["num_frames", ">= 1", "0"]),
    "num_frames=-3": (lambda root: ({"videos": [_frames_folder(root, _rgb)]}, {"num_frames": -3}), ValueError, ["num_frames", "-3"]),
    "num_frames=2.5": (lambda root: ({"videos": [_frames_folder(root, _rgb)]}, {"num_frames": 2.5}), ValueError, ["num_frames", "integer", "2.5"]),
    "fps=0": (lambda root: ({"videos": [_frames_folder(root, _rgb)]}, {"fps": 0, "video_fps": 4}), ValueError, ["fps", "> 0", "0"]),
    "fps=nan": (lambda root: ({"videos": [_frames_folder(root, _rgb)]}, {"fps": float("nan"), "video_fps": 4}), ValueError, ["fps", "nan"]),
    "max<min": (lambda root: ({"videos": [_frames_folder(root, _rgb)]}, {"min_frames": 3, "max_frames": 2}), ValueError, ["max_frames (2)", "min_frames (3)"]),
    "16-bit-png-frames": (
        lambda root: ({"videos": [_frames_folder(root, lambda i: Image.fromarray(np.full((42, 56), 30000 + i, np.uint16)))]}, {}),
        ValueError, ["frame", "0.png", "16-bit"],
    ),
    "float-0-255-frames": (lambda root: ({"videos": [[np.full((42, 56, 3), 200.0)] * 3]}, {}), ValueError, ["floats in [200, 200]", "divide 0-255"]),
    "uint16-image": (lambda root: ({"images": [np.full((42, 56, 3), 1000, np.uint16)]}, {}), ValueError, ["image", "uint16"]),
    "16-bit-pil-image": (lambda root: ({"images": [Image.fromarray(np.full((42, 56), 9, np.uint16))]}, {}), ValueError, ["image", "16-bit"]),
    "empty-image": (lambda root: ({"images": [np.zeros((0, 0, 3), np.uint8)]}, {}), ValueError, ["image", "empty"]),
    "nan-float-frame": (lambda root: ({"images": [np.full((42, 56, 3), np.nan)]}, {}), ValueError, ["image", "NaN"]),
}


@pytest.mark.parametrize("case", sorted(PROCESSOR_CASES))
def test_processor(spa3_vlm_processor, tmp_path, case):
    build, error_type, words = PROCESSOR_CASES[case]
    media, kwargs = build(tmp_path)
    token = "<|vision_start|><|video_pad|><|vision_end|>" if "videos" in media else "<|vision_start|><|image_pad|><|vision_end|>"
    assert_raises(lambda: spa3_vlm_processor(text=token + "How many?", **media, **kwargs), error_type, words)


def test_processor_text_is_required(spa3_vlm_processor):
    assert_raises(lambda: spa3_vlm_processor(images=[_rgb(0)]), ValueError, ["needs text", "placeholder"])


# ---------------------------------------------------------------------------------------------------------------------
# Scene folders (ScanNet-like)
# ---------------------------------------------------------------------------------------------------------------------


def _scene(root: Path) -> Path:
    """A valid 2-frame scene folder."""
    scene = root / "scene0000_00"
    for folder in ("color", "depth", "pose", "intrinsic"):
        (scene / folder).mkdir(parents=True)
    write_matrix(scene / "intrinsic" / "intrinsic_color.txt", np.diag([60.0, 60.0, 1.0, 1.0]))
    for index in range(2):
        _rgb(index).save(scene / "color" / f"{index}.jpg")
        Image.fromarray(np.full((42, 56), 1500, np.uint16)).save(scene / "depth" / f"{index}.png")
        pose = np.eye(4)
        pose[0, 3] = index
        write_matrix(scene / "pose" / f"{index}.txt", pose)
    return scene


def _pose(matrix):
    return lambda scene: write_matrix(scene / "pose" / "1.txt", np.asarray(matrix, dtype=np.float64))


SCENE_CASES = {
    "singular-pose": (_pose(np.zeros((4, 4)) + np.eye(4) * [0, 0, 0, 1]), "open", ["pose", "singular", "pose/1.txt"]),
    "scaled-pose": (_pose(np.diag([2.0, 2.0, 2.0, 1.0])), "open", ["pose matrix is not rigid", "pose/1.txt"]),
    "reflected-pose": (_pose(np.diag([-1.0, 1.0, 1.0, 1.0])), "open", ["not rigid", "det R = -1", "pose/1.txt"]),
    "bad-last-row": (_pose([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "open", ["0 0 0 1", "pose/1.txt"]),
    "inf-pose": (lambda s: (s / "pose" / "1.txt").write_text("-inf " * 16), "open", ["NaN or infinite", "pose/1.txt"]),
    "short-pose": (lambda s: (s / "pose" / "1.txt").write_text("1 0 0"), "open", ["4x4 numbers, got 3", "pose/1.txt"]),
    "missing-pose": (lambda s: (s / "pose" / "1.txt").unlink(), "open", ["missing pose file", "pose/1.txt"]),
    "zero-focal": (lambda s: write_matrix(s / "intrinsic" / "intrinsic_color.txt", np.diag([0.0, 60.0, 1.0, 1.0])), "open",
                   ["positive focal lengths", "fx=0", "intrinsic_color.txt"]),
    "negative-focal": (lambda s: write_matrix(s / "intrinsic" / "intrinsic_color.txt", np.diag([60.0, -60.0, 1.0, 1.0])), "open",
                       ["positive focal lengths", "fy=-60", "intrinsic_color.txt"]),
    "8-bit-depth": (lambda s: Image.fromarray(np.full((42, 56), 90, np.uint8)).save(s / "depth" / "1.png"), "view",
                    ["depth PNG must be 16-bit", "'L'", "depth/1.png"]),
    "rgb-depth": (lambda s: _rgb(0).save(s / "depth" / "1.png"), "view", ["16-bit", "'RGB'", "depth/1.png"]),
    "corrupt-color": (lambda s: (s / "color" / "1.jpg").write_bytes(b"\xff\xd8 not a jpeg"), "view", ["corrupt color image", "color/1.jpg"]),
    "missing-depth": (lambda s: (s / "depth" / "1.png").unlink(), "view", ["missing depth frame", "depth/1.png"]),
    "no-frames": (lambda s: shutil.rmtree(s / "color"), "open", ["empty scene folder", "scene0000_00"]),
}


@pytest.mark.parametrize("case", sorted(SCENE_CASES))
def test_scene_folder(tmp_path, case):
    change, stage, words = SCENE_CASES[case]
    scene = _scene(tmp_path)
    change(scene)
    if stage == "open":
        assert_raises(lambda: SceneFolder(scene), DataError, words)
    else:
        folder = SceneFolder(scene)
        assert_raises(lambda: folder.load_view(1, 56), DataError, words)


def test_good_scene_loads_metric_depth(tmp_path):
    view = SceneFolder(_scene(tmp_path)).load_view(1, 56)
    assert np.allclose(view["depth"][view["depth"] > 0], 1.5) and np.allclose(view["extrinsics"][0, 3], -1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Converter
# ---------------------------------------------------------------------------------------------------------------------


def _never_build(monkeypatch):
    """The converter must check its inputs before it builds the (full-size) model."""
    import modeling_spa3r.modeling_spa3r as spa3r_module
    import modeling_spa3r.modeling_vggt as vggt_module

    def refuse(self, *args, **kwargs):
        raise AssertionError("the model was built before the checkpoint was checked")

    for module, name in ((vggt_module, "VGGTModel"), (spa3r_module, "Spa3RModel"), (spa3r_module, "Spa3RForPretraining")):
        monkeypatch.setattr(getattr(module, name), "__init__", refuse)


def _truncated_safetensors(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"aggregator.camera_token": torch.zeros(1, 2, 1, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:-40])
    return path


CONVERT_CASES = {
    "missing-ckpt": (lambda d: ("spa3r", d / "spa3r.ckpt"), FileNotFoundError, ["not found", "spa3r.ckpt"]),
    "missing-vggt": (lambda d: ("vggt", d / "model.safetensors"), FileNotFoundError, ["not found", "model.safetensors"]),
    "truncated-safetensors": (lambda d: ("vggt", _truncated_safetensors(d / "model.safetensors")), DataError,
                              ["corrupt or truncated checkpoint", "model.safetensors"]),
    "garbage-ckpt": (lambda d: ("spa3r", (d / "spa3r.ckpt", (d / "spa3r.ckpt").write_bytes(b"PK\x03\x04 garbage"))[0]),
                     DataError, ["corrupt or truncated checkpoint", "spa3r.ckpt"]),
    "ckpt-not-a-dict": (lambda d: ("spa3r", (d / "list.ckpt", torch.save([1, 2], d / "list.ckpt"))[0]), ValueError,
                        ["list.ckpt", "does not hold a state dict", "list"]),
}


@pytest.mark.parametrize("case", sorted(CONVERT_CASES))
def test_converter_checks_the_checkpoint_before_building_the_model(tmp_path, monkeypatch, case):
    from modeling_spa3r.convert import convert_spa3r_checkpoint, convert_vggt_checkpoint

    build, error_type, words = CONVERT_CASES[case]
    kind, path = build(tmp_path)
    _never_build(monkeypatch)
    convert = convert_spa3r_checkpoint if kind == "spa3r" else convert_vggt_checkpoint
    assert_raises(lambda: convert(path), error_type, words)


def test_vlm_converter_missing_input_says_not_found(tmp_path):
    from modeling_spa3r.convert_spa3_vlm import convert_official_checkpoint

    assert_raises(lambda: convert_official_checkpoint(tmp_path / "Spa3-VLM"), FileNotFoundError, ["not found", "Spa3-VLM/config.json"])


# ---------------------------------------------------------------------------------------------------------------------
# Training checkpoints (resume)
# ---------------------------------------------------------------------------------------------------------------------


def _checkpoint(root: Path, complete: bool = True) -> Path:
    from safetensors.torch import save_file

    from modeling_spa3r.training.checkpoints import write_completion

    folder = root / "checkpoint-4"
    folder.mkdir(parents=True)
    save_file({"weight": torch.zeros(3)}, str(folder / "model.safetensors"))
    torch.save({"state": {}}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": []}))
    if complete:
        write_completion(folder)
    return folder


CHECKPOINT_CASES = {
    "missing": (lambda f: shutil.rmtree(f), True, ["not found", "checkpoint-4"]),
    "no-trainer-state": (lambda f: (f / "trainer_state.json").unlink(), False, ["trainer_state.json is missing"]),
    "truncated-trainer-state": (lambda f: (f / "trainer_state.json").write_text('{"global_st'), False, ["trainer_state.json is truncated"]),
    "no-weights": (lambda f: (f / "model.safetensors").unlink(), False, ["holds no weights"]),
    "truncated-optimizer": (lambda f: (f / "optimizer.pt").write_bytes((f / "optimizer.pt").read_bytes()[:50]), False,
                            ["optimizer.pt", "truncated or corrupt"]),
    "truncated-weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-4]), False,
                          ["model.safetensors", "truncated or corrupt"]),
    "recorded-file-missing": (lambda f: (f / "optimizer.pt").unlink(), True, ["optimizer.pt is missing", "interrupted"]),
    "recorded-file-cut-short": (lambda f: (f / "optimizer.pt").write_bytes(b"PK"), True, ["optimizer.pt has 2 bytes", "cut short"]),
    "corrupt-record": (lambda f: (f / "checkpoint_complete.json").write_text("{"), True, ["checkpoint_complete.json is corrupt"]),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_resume_from_a_broken_checkpoint_names_the_file(tmp_path, case):
    from modeling_spa3r.training.checkpoints import resolve_checkpoint

    change, complete, words = CHECKPOINT_CASES[case]
    folder = _checkpoint(tmp_path, complete)
    change(folder)
    assert_raises(lambda: resolve_checkpoint(tmp_path, str(folder)), DataError, ["cannot resume from", *words])


def test_resume_last_skips_incomplete_checkpoints(tmp_path, caplog):
    from modeling_spa3r.training.checkpoints import resolve_checkpoint

    good = _checkpoint(tmp_path / "run")
    newer = good.with_name("checkpoint-8")
    newer.mkdir()
    (newer / "model.safetensors").write_bytes(good.joinpath("model.safetensors").read_bytes())
    assert resolve_checkpoint(tmp_path / "run", "last") == str(good)
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-8" in caplog.text
    assert (tmp_path / "run" / "incomplete-checkpoint-8").is_dir() and not newer.exists()
    assert resolve_checkpoint(tmp_path / "empty", "last") is None  # documented: nothing to resume → from scratch


def test_checkpoint_weights_that_do_not_fit_the_model_are_named(models, tmp_path):
    from modeling_spa3r.training.checkpoints import load_checkpoint_weights

    folder = _checkpoint(tmp_path)
    assert_raises(lambda: load_checkpoint_weights(models["vggt"], folder), DataError,
                  ["model.safetensors", "does not match the model", "missing", "unexpected"])  # fmt: skip
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    assert_raises(lambda: load_checkpoint_weights(models["vggt"], folder), DataError, ["model.safetensors", "not a readable"])


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation runner: run identity and predictions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def answered(tiny_qwen_dir, vsi_fixture_dir, tmp_path_factory):
    """An output folder of a finished run on the fixture's 10 questions."""
    from accelerate import PartialState

    from modeling_spa3r import eval_vsibench as runner

    output = tmp_path_factory.mktemp("answered")
    args = _eval_args(tiny_qwen_dir, vsi_fixture_dir / "test.jsonl", output)
    runner.run(args, state=PartialState())
    return output


def _eval_args(model, data, output, *extra):
    from modeling_spa3r import eval_vsibench as runner

    return runner.build_parser().parse_args(["--model", str(model), "--data", str(data), "--output-dir", str(output),
                                             "--num-frames", "2", "--max-new-tokens", "1", "--no-progress", *extra])  # fmt: skip


def _other_split(vsi_fixture_dir, tmp_path, change=None) -> Path:
    """The fixture's questions under another file name (val vs test), optionally changed."""
    rows = [json.loads(line) for line in (vsi_fixture_dir / "test.jsonl").read_text().splitlines()]
    if change:
        rows = change(rows)
    path = tmp_path / "other-val.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _drop_first(rows):
    return rows[1:]


def _change_truth(rows):
    counting = next(row for row in rows if row["question_type"] == "object_counting")
    counting["ground_truth"] = str(int(counting["ground_truth"]) + 7)
    return rows


EVAL_CASES = {
    "other-data-file": (lambda out, fix, tmp: _eval_args("M", _other_split(fix, tmp), out), ["different settings", "data:", "other-"]),
    "fewer-questions": (lambda out, fix, tmp: _eval_args("M", _other_split(fix, tmp, _drop_first), out), ["questions:", "9 questions"]),
    "changed-ground-truth": (lambda out, fix, tmp: _eval_args("M", _other_split(fix, tmp, _change_truth), out), ["questions:", "sha256"]),
    "limit": (lambda out, fix, tmp: _eval_args("M", fix / "test.jsonl", out, "--question-types", "object_counting"), ["questions:"]),
    "num-frames": (lambda out, fix, tmp: _eval_args("M", fix / "test.jsonl", out, "--num-frames", "3"), ["num_frames: 2 on disk vs 3"]),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_eval_refuses_answers_of_another_question_set(answered, tiny_qwen_dir, vsi_fixture_dir, tmp_path, case):
    from accelerate import PartialState

    from modeling_spa3r import eval_vsibench as runner

    output = tmp_path / "out"
    shutil.copytree(answered, output)
    build, words = EVAL_CASES[case]
    args = build(output, vsi_fixture_dir, tmp_path)
    args.model, args.video_root = str(tiny_qwen_dir), str(vsi_fixture_dir)
    assert_raises(lambda: runner.run(args, state=PartialState()), ValueError, [str(output), *words])


@pytest.mark.parametrize("case", ["foreign-id", "wrong-ground-truth", "copied-without-config"])
def test_eval_refuses_predictions_that_do_not_belong(answered, tiny_qwen_dir, vsi_fixture_dir, tmp_path, case):
    from accelerate import PartialState

    from modeling_spa3r import eval_vsibench as runner

    output = tmp_path / "out"
    shutil.copytree(answered, output)
    predictions = output / "predictions.jsonl"
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    if case == "foreign-id":
        records.append({**records[0], "id": "from-elsewhere"})
        words = ["1 prediction(s)", "not in the selected questions", "from-elsewhere"]
    elif case == "wrong-ground-truth":
        records[0]["ground_truth"] = "999"
        words = [f"id {records[0]['id']!r}", "ground_truth '999'"]
    else:
        (output / "run_config.json").unlink()
        words = ["holds predictions but no run_config.json"]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = _eval_args(tiny_qwen_dir, vsi_fixture_dir / "test.jsonl", output)
    assert_raises(lambda: runner.run(args, state=PartialState()), ValueError, words)


def test_eval_same_settings_resume_is_accepted(answered, tiny_qwen_dir, vsi_fixture_dir, tmp_path):
    """Documented behaviour: the same settings and questions reuse every answer (nothing is generated again)."""
    from accelerate import PartialState

    from modeling_spa3r import eval_vsibench as runner

    output = tmp_path / "out"
    shutil.copytree(answered, output)
    summary = runner.run(_eval_args(tiny_qwen_dir, vsi_fixture_dir / "test.jsonl", output), state=PartialState())
    assert summary["num_questions"] == 10


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


CLI_CASES = {
    "synth-negative-scenes": (["synth", "--scenes", "-2", "--out", "{tmp}/s"], ["--scenes", "must be >= 1", "-2"]),
    "synth-zero-width": (["synth", "--scenes", "1", "--width", "0", "--out", "{tmp}/s"], ["--width", "must be >= 1"]),
    "synth-zero-fps": (["synth", "--scenes", "1", "--fps", "0", "--out", "{tmp}/s"], ["--fps", "must be >= 1"]),
    "synth-fraction": (["synth", "--scenes", "3", "--val-fraction", "1.5", "--out", "{tmp}/s"], ["--val-fraction", "[0, 1]"]),
    "synth-not-a-number": (["synth", "--scenes", "many", "--out", "{tmp}/s"], ["--scenes", "expected an integer", "'many'"]),
    "eval-missing-model": (["eval", "--model", "{tmp}/runs/missing", "--data", "{tmp}/q.jsonl", "--output-dir", "{tmp}/o"],
                           ["not found: {tmp}/runs/missing", "--model"]),
    "eval-missing-data": (["eval", "--model", "{tmp}", "--data", "{tmp}/q.jsonl", "--output-dir", "{tmp}/o"], ["not found: {tmp}/q.jsonl"]),
    "convert-missing-checkpoint": (["convert", "spa3r", "--checkpoint", "{tmp}/spa3r.ckpt", "--out", "{tmp}/o"],
                                   ["spa3r convert: error: not found: {tmp}/spa3r.ckpt"]),
    "convert-vlm-missing-input": (["convert", "vlm", "--input", "{tmp}/Spa3-VLM", "--output", "{tmp}/o"], ["not found: {tmp}/Spa3-VLM"]),
    "pretrain-missing-teachers": (["pretrain", "--teachers_path", "{tmp}/teachers", "--train_data", "synthetic:{tmp}"],
                                  ["not found: {tmp}/teachers"]),
    "eval-negative-frames": (["eval", "--model", "{tmp}", "--data", "{tmp}", "--output-dir", "{tmp}/o", "--num-frames",
                              "-1"], ["--num-frames must be >= 0 (0: blind)"]),  # fmt: skip
    "pretrain-unknown-preset": (["pretrain", "--preset", "no-such-preset"], ["preset 'no-such-preset'"]),
    "sft-missing-train-file": (["sft", "--model_name_or_path", "{tmp}", "--train_file", "{tmp}/train.json"], ["not found: {tmp}/train.json"]),
    "sft-missing-model": (["sft", "--model_name_or_path", "{tmp}/a/b/vlm", "--train_file", "{tmp}/t.json"], ["not found: {tmp}/a/b/vlm"]),
    "ask-missing-image-before-question": (["ask", "{tmp}", "--images", "{tmp}/f0.jpg", "{tmp}/f1.jpg", "How many?"],
                                          ["not found: {tmp}/f0.jpg", "--images"]),
    "ask-missing-video": (["ask", "{tmp}", "--video", "{tmp}/room.mp4", "--question", "How many?"], ["not found: {tmp}/room.mp4"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, case):
    argv, words = CLI_CASES[case]
    status, error = _status([token.format(tmp=tmp_path) for token in argv], capsys)
    assert status == 2, error
    lines = [line for line in error.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in error, error
    for word in words:
        assert word.format(tmp=tmp_path) in lines[0], (word, lines[0])


@pytest.mark.parametrize("command", [["eval", "--model", "{ckpt}", "--data", "{tmp}", "--output-dir", "{tmp}/o"],
                                     ["ask", "{ckpt}", "--question", "How many?"],
                                     ["sft", "--model_name_or_path", "{ckpt}", "--train_file", "{tmp}"],
                                     ["encode", "{ckpt}", "--out", "{tmp}/latents.safetensors"]], ids=lambda c: c[0])
def test_cli_names_a_truncated_weight_file_before_loading(tmp_path, capsys, command):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    _truncated_safetensors(checkpoint / "model.safetensors")
    status, error = _status([token.format(ckpt=checkpoint, tmp=tmp_path) for token in command], capsys)
    assert status == 2 and "Traceback" not in error, error
    assert "truncated or corrupt safetensors file" in error and str(checkpoint / "model.safetensors") in error


def _status(argv, capsys):
    from modeling_spa3r.cli import main

    try:
        return main(argv), capsys.readouterr().err
    except SystemExit as exit:  # argparse errors
        return exit.code, capsys.readouterr().err


def test_cli_argparse_errors_exit_2(capsys):
    status, error = _status(["synth", "--scenes", "-2", "--out", "x"], capsys)
    assert status == 2 and "argument --scenes: must be >= 1, got -2" in error and "Traceback" not in error


def test_cli_debug_shows_the_traceback(tmp_path, capsys):
    status, error = _status(["--debug", "convert", "vggt", "--checkpoint", str(_truncated_safetensors(tmp_path / "m.safetensors")),
                             "--out", str(tmp_path / "o")], capsys)  # fmt: skip
    assert status == 2 and "Traceback" in error and "corrupt or truncated checkpoint" in error.splitlines()[-1]


def test_cli_in_a_fresh_process_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "modeling_spa3r.cli", "convert", "vlm", "--input", str(tmp_path / "x"), "--output",
                             str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and f"not found: {tmp_path / 'x'}" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# App limits
# ---------------------------------------------------------------------------------------------------------------------


def _app(**limits):
    """The Gradio app's `Spa3App` without a model (every case fails before inference) and its module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("spa3_gradio_app", REPO / "app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.Spa3App.__new__(module.Spa3App)
    app.limits, app.num_frames = module.UploadLimits(**limits), 4
    return app, module


def _pictures(tmp_path, count, size=(56, 42)):
    paths = []
    for index in range(count):
        path = tmp_path / f"view{index}.png"
        Image.new("RGB", size, (index * 20, 40, 60)).save(path)
        paths.append(str(path))
    return paths


def _bomb(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 M pixels in a small file
    return [str(path)]


APP_CASES = {
    "too-many-files": (lambda t: _pictures(t, 5), {"max_files": 4}, ["5 files uploaded", "at most 4"]),
    "too-many-bytes": (lambda t: _pictures(t, 3, (400, 300)), {"max_bytes": 1000}, ["MiB", "at most 0 MiB"]),
    "too-many-pixels": (lambda t: _pictures(t, 3, (560, 420)), {"max_pixels": 500_000}, ["0.7 megapixels", "at most 0.5"]),
    "decompression-bomb": (_bomb, {}, ["bomb.png", "too large to decode safely"]),
    "not-an-image": (lambda t: [str((t / "x.png", (t / "x.png").write_bytes(b"nope"))[0])], {}, ["x.png", "not a readable image"]),
    "unsupported-type": (lambda t: [str((t / "notes.txt", (t / "notes.txt").write_text("hi"))[0])], {}, ["unsupported file type", "notes.txt"]),
    "empty-upload": (lambda t: [], {}, ["upload a video or some images first"]),
}


@pytest.mark.parametrize("case", sorted(APP_CASES))
def test_app_limits_are_checked_before_decoding_and_shown_in_the_answer_box(tmp_path, monkeypatch, case):
    build, limits, words = APP_CASES[case]
    app, module = _app(**limits)
    decoded = []
    monkeypatch.setattr(module, "load_frames", lambda **kw: decoded.append(kw))
    text, picture = app.run(build(tmp_path), "How many chairs?")
    assert text.startswith("Error: ") and picture is None and not decoded
    assert all(word in text for word in words), text
