"""PSFM pretraining: batch targets/cameras in the model, teacher reload, data plumbing, the Trainer script in one
and two processes (DDP, DeepSpeed ZeRO-2), exact kill-and-resume."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from modeling_spa3r import Spa3RForPretraining
from modeling_spa3r.data.datasets import MultiViewDataset
from modeling_spa3r.training.pretrain import EpochBatchSampler, PretrainingCollator, SceneMixture
from modeling_spa3r.training.presets import load_preset

from ..fixtures_spa3r import tiny_spa3r_config
from ..fixtures_training import REPO, log_history, run_script

VIEW_MASK = torch.tensor([[False, True, False, True], [False, False, True, True]])
SMALL = ["--image_width", "56", "--views", "2", "4", "--images_per_device", "8", "--samples_per_scene", "4",
         "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]  # fmt: skip


def synthetic_args(root, output_dir, steps: int) -> list[str]:
    return ["training/pretrain.py", "--preset", "spa3r-synthetic-tiny", "--train_data", f"synthetic:{root}",
            "--output_dir", str(output_dir), "--max_steps", str(steps), "--logging_steps", "2", *SMALL]  # fmt: skip


def batch_targets(batch=2, views=4, patches=6, classes=5):
    generator = torch.Generator().manual_seed(3)
    return dict(
        geometry_targets=torch.randn(batch, views, patches, 4, generator=generator),
        depth_targets=torch.rand(batch, views, patches, 1, generator=generator),
        semantic_targets=torch.rand(batch, views, patches, classes, generator=generator),
    )


def cameras(batch=2, views=4):
    extrinsics = torch.eye(3, 4).repeat(batch, views, 1, 1)
    extrinsics[..., 2, 3] = torch.arange(views, dtype=torch.float32)
    intrinsics = torch.tensor([[30.0, 0, 21], [0, 30.0, 14], [0, 0, 1]]).repeat(batch, views, 1, 1)
    return extrinsics, intrinsics


def test_batch_targets_cameras_and_trainable_backbone(images, tmp_path):
    config = tiny_spa3r_config(semantic_teacher=False, train_backbone=True, geometry_target_size=4, semantic_size=5,
                               save_teachers=False)  # fmt: skip
    model = Spa3RForPretraining(config).train()
    assert "spa3r.aggregator" not in model.teachers()
    assert all(p.requires_grad for p in model.spa3r.aggregator.parameters())
    extrinsics, intrinsics = cameras()
    targets = batch_targets()
    out = model(images, view_mask=VIEW_MASK, extrinsics=extrinsics, intrinsics=intrinsics, **targets)
    assert out.pose_encodings is None and torch.equal(out.extrinsics, extrinsics)
    assert torch.equal(out.target_geo, targets["geometry_targets"]) and torch.equal(out.target_depth, targets["depth_targets"])
    assert out.pred_geo.shape == (2, 4, 6, 4) and out.pred_sem.shape == (2, 4, 6, 5)
    out.loss.backward()
    assert model.spa3r.aggregator.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.camera_head.parameters())
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert any(k.startswith("spa3r.aggregator.") for k in saved) and not any(k.startswith("camera_head.") for k in saved)


def test_batch_cameras_replace_the_camera_head(spa3r_config, images):
    model = Spa3RForPretraining(spa3r_config).eval()
    teacher = model(images, view_mask=VIEW_MASK)
    given = model(images, view_mask=VIEW_MASK, extrinsics=teacher.extrinsics, intrinsics=teacher.intrinsics)
    torch.testing.assert_close(given.loss, teacher.loss, atol=0, rtol=0)
    moved = teacher.extrinsics.clone()
    moved[..., 3] += 1.0
    other = model(images, view_mask=VIEW_MASK, extrinsics=moved, intrinsics=teacher.intrinsics)
    assert not torch.equal(other.pred_geo, teacher.pred_geo)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(geometry_targets=torch.zeros(2, 4, 5, 64)), "geometry_targets must be"),
        (dict(depth_targets=torch.zeros(2, 4, 6)), "depth_targets must be"),
        (dict(extrinsics=torch.zeros(2, 4, 3, 4)), "both extrinsics and intrinsics"),
        (dict(extrinsics=torch.zeros(2, 4, 4, 4), intrinsics=torch.zeros(2, 4, 3, 3)), "extrinsics / intrinsics must be"),
    ],
)
def test_bad_batch_targets(spa3r_config, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Spa3RForPretraining(spa3r_config)(images, view_mask=VIEW_MASK, **kwargs)


def test_load_teachers_restores_teachers_and_checks_completeness(teacher_checkpoint, tmp_path):
    source = Spa3RForPretraining.from_pretrained(teacher_checkpoint)
    model = Spa3RForPretraining(tiny_spa3r_config(save_teachers=False))
    loaded = model.load_teachers(teacher_checkpoint)
    assert sorted(loaded) == sorted(model.teachers())
    for name, teacher in model.teachers().items():
        reference = source.get_submodule(name).state_dict()
        assert all(torch.equal(value, reference[key]) for key, value in teacher.state_dict().items())
    partial = Spa3RForPretraining(tiny_spa3r_config(save_teachers=False))
    partial.save_pretrained(tmp_path)  # trainable weights only
    with pytest.raises(ValueError, match="teachers in .* are incomplete"):
        model.load_teachers(tmp_path)


def test_data_plumbing_view_budget_splits_and_rendered_targets(training_synth_root):
    scenes = MultiViewDataset(training_synth_root, views=(2, 4), stride="synthetic", width=56, samples_per_scene=3)
    mixture = SceneMixture([scenes, scenes], weights=[3, 1], length=16, mask_ratio=0.5, seed=1)
    assert mixture.bounds.tolist() == [12, 16]
    sampler = EpochBatchSampler(mixture, views=(2, 4), images_per_batch=8, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i, _ in b) == list(range(16))
    assert all(len(b) == 8 // b[0][1] or b is batches[-1] for b in batches)
    first = [mixture[item] for item in batches[0]]
    again = [mixture[item] for item in batches[0]]
    assert all(torch.equal(a["view_mask"], b["view_mask"]) and torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(first, again))
    mixture.set_epoch(1)
    assert list(sampler) != batches  # the sampler follows the dataset's epoch
    collator = PretrainingCollator(14, targets="rendered", cameras="ground_truth", num_classes=29)
    inputs = collator(first)
    batch, views = inputs["pixel_values"].shape[:2]
    patches = (inputs["pixel_values"].shape[-2] // 14) * (inputs["pixel_values"].shape[-1] // 14)
    assert inputs["geometry_targets"].shape == (batch, views, patches, 4)
    torch.testing.assert_close(inputs["semantic_targets"].sum(-1), torch.ones(batch, views, patches))
    torch.testing.assert_close(inputs["geometry_targets"][..., :3].norm(dim=-1), torch.ones(batch, views, patches))
    assert (inputs["depth_targets"] > 0).all() and inputs["view_mask"].shape == (batch, views)
    assert set(inputs) == {"pixel_values", "view_mask", "extrinsics", "intrinsics", "geometry_targets", "depth_targets", "semantic_targets"}
    with pytest.raises(ValueError, match="exceeds the model's semantic_size"):
        PretrainingCollator(14, targets="rendered", num_classes=3)(first)


def test_presets_parse_and_bad_arguments_are_reported():
    base = load_preset("spa3r-base")
    assert (base["learning_rate"], base["weight_decay"], base["max_steps"], base["gradient_accumulation_steps"]) == (2e-3, 1e-4, 80000, 2)
    assert base["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1} and base["views"] == [4, 12] and base["images_per_device"] == 24
    from modeling_spa3r.training.pretrain import main

    with pytest.raises(ValueError, match="no training data"):
        main(["--preset", "spa3r-synthetic-tiny", "--report_to", "none"])
    with pytest.raises(ValueError, match="KIND:PATH"):
        main(["--preset", "spa3r-synthetic-tiny", "--train_data", "mesh:/x", "--report_to", "none"])
    with pytest.raises(FileNotFoundError, match="neither a file nor one of"):
        main(["--preset", "no-such-preset"])
    with pytest.raises(ValueError, match="teachers"):
        main(["--train_data", "synthetic:/x", "--report_to", "none"])


def test_synthetic_preset_learns_single_process(training_synth_root, tmp_path):
    run_script(synthetic_args(training_synth_root, tmp_path, 30))
    history = [entry for entry in log_history(tmp_path) if "loss" in entry]
    for name in ("geo/l1", "geo/cos", "sem/l1", "sem/cos", "depth_prob"):
        assert name in history[0] and history[-1][name] < history[0][name], name
    assert history[-1]["loss"] < 0.6 * history[0]["loss"], [h["loss"] for h in history]
    events = list((tmp_path / "runs").glob("*/events.out.tfevents.*"))
    assert not events  # report_to none in tests; tensorboard is covered by the preset default


def test_kill_and_resume_is_exact_and_checkpoints_hold_no_teachers(training_synth_root, teacher_checkpoint, tmp_path):
    args = ["training/pretrain.py", "--config_name", str(teacher_checkpoint / "train_config.json"), "--teachers_path",
            str(teacher_checkpoint), "--train_data", f"synthetic:{training_synth_root}", "--max_steps", "6",
            "--save_steps", "3", "--logging_steps", "1", "--learning_rate", "1e-3", "--seed", "5", *SMALL]  # fmt: skip
    run_script(args + ["--output_dir", str(tmp_path / "straight")])
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, *args, "--output_dir", str(interrupted)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    marker = interrupted / "checkpoint-3" / "trainer_state.json"
    deadline = time.time() + 240
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists()
    with safe_open(str(interrupted / "checkpoint-3" / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    teachers = ("spa3r.aggregator.", "camera_head.", "depth_head.", "semantic_teacher.")
    assert saved and not any(key.startswith(teachers) for key in saved)
    run_script(args + ["--output_dir", str(interrupted), "--resume_from_checkpoint", str(interrupted / "checkpoint-3")])
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(interrupted / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    losses = lambda d: [(e["step"], e["loss"], e["geo/l1"]) for e in log_history(d) if "loss" in e]  # noqa: E731
    assert losses(tmp_path / "straight") == losses(interrupted) and len(losses(interrupted)) == 6


def _check_two_process_run(output_dir, single_epoch: float):
    history = [entry for entry in log_history(output_dir) if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history) and "sem/cos" in history[-1]
    # both ranks consume batches: an optimizer step covers twice the data of a single-process step
    assert history[-1]["epoch"] > 1.8 * single_epoch
    model = Spa3RForPretraining.from_pretrained(output_dir)
    assert model.config.train_backbone and model.spa3r.aggregator.patch_embed.proj.weight.abs().sum() > 0


@pytest.fixture(scope="module")
def single_process_epoch(training_synth_root, tmp_path_factory):
    directory = tmp_path_factory.mktemp("single")
    run_script(synthetic_args(training_synth_root, directory, 4))
    return [entry for entry in log_history(directory) if "loss" in entry][-1]["epoch"]


def test_pretrain_ddp_two_processes(training_synth_root, single_process_epoch, tmp_path):
    launcher = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29631"]  # fmt: skip
    run_script(synthetic_args(training_synth_root, tmp_path, 4) + ["--use_cpu", "true"], launcher=launcher)
    _check_two_process_run(tmp_path, single_process_epoch)


def test_pretrain_deepspeed_zero2_two_processes(training_synth_root, single_process_epoch, tmp_path):
    launcher = ["torchrun", "--nproc_per_node", "2", "--master_port", "29632"]
    # without use_cpu, TrainingArguments on a GPU-less machine is NOT_PARALLEL: every rank would train alone
    args = synthetic_args(training_synth_root, tmp_path, 4) + ["--use_cpu", "true", "--deepspeed", "configuration/deepspeed/zero2.json"]
    run_script(args, launcher=launcher, timeout=420)
    _check_two_process_run(tmp_path, single_process_epoch)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "spa3r"
