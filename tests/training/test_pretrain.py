"""PSFM pretraining: batch targets/cameras in the model, teacher reload, data plumbing, the Trainer script in one
and two processes (DDP, DeepSpeed ZeRO-2), exact kill-and-resume."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining
from modeling_spa3r.data.datasets import MultiViewDataset, sample_spread_indices
from modeling_spa3r.inference import load_spa3r_encoder
from modeling_spa3r.modeling_spa3r import relative_to_first_context_view, smooth_l1_and_cosine
from modeling_spa3r.training.pretrain import (
    DataArguments,
    EpochBatchSampler,
    PretrainingCollator,
    ModelArguments,
    SceneMixture,
    build_datasets,
    build_model,
    check_teachers_needed,
    main,
)
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


def random_rigid_motion(generator: torch.Generator) -> torch.Tensor:
    """A random world motion (4, 4): rotation from a QR decomposition (det +1), translation of a few metres."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    motion = torch.eye(4, dtype=torch.float64)
    motion[:3, :3], motion[:3, 3] = q, 3 * torch.randn(3, generator=generator, dtype=torch.float64)
    return motion


def move_world(extrinsics: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """World→camera (…, 3, 4) of the same cameras after the whole scene moved by `motion`: E ↦ E · motion⁻¹."""
    return (extrinsics.double() @ torch.linalg.inv(motion)).float()


def test_batch_cameras_replace_the_camera_head(spa3r_config, images):
    model = Spa3RForPretraining(spa3r_config).eval()
    teacher = model(images, view_mask=VIEW_MASK)
    given = model(images, view_mask=VIEW_MASK, extrinsics=teacher.extrinsics, intrinsics=teacher.intrinsics)
    assert given.pose_encodings is None and torch.equal(given.target_geo, teacher.target_geo)
    canonical = relative_to_first_context_view(teacher.extrinsics, VIEW_MASK)
    torch.testing.assert_close(given.extrinsics, canonical)
    again = model(images, view_mask=VIEW_MASK, extrinsics=canonical, intrinsics=teacher.intrinsics)
    torch.testing.assert_close(again.loss, given.loss, atol=1e-6, rtol=0)  # canonical cameras are a fixed point
    shifted = teacher.extrinsics.clone()
    shifted[:, 1:, :, 3] += 1.0  # the other cameras move relative to the first one: a different scene
    other = model(images, view_mask=VIEW_MASK, extrinsics=shifted, intrinsics=teacher.intrinsics)
    assert not torch.allclose(other.pred_geo, given.pred_geo, atol=1e-4)


def test_first_context_view_becomes_the_world_frame():
    generator = torch.Generator().manual_seed(0)
    poses = torch.stack([random_rigid_motion(generator) for _ in range(8)]).float().view(2, 4, 4, 4)[..., :3, :]
    canonical = relative_to_first_context_view(poses, VIEW_MASK)
    torch.testing.assert_close(canonical[:, 0], torch.eye(3, 4).expand(2, 3, 4), atol=1e-6, rtol=0)
    mask = torch.tensor([[True, False, False, True], [False, True, False, True]])  # first context view: 1, then 0
    canonical = relative_to_first_context_view(poses, mask)
    torch.testing.assert_close(canonical[0, 1], torch.eye(3, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(canonical[1, 0], torch.eye(3, 4), atol=1e-6, rtol=0)
    # relative poses between views are kept: camera 2 seen from camera 3 is the same in both frames
    def relative(e, i, j):
        full = torch.cat((e, torch.tensor([0.0, 0, 0, 1]).expand(*e.shape[:-2], 1, 4)), -2).double()
        return full[..., i, :, :] @ torch.linalg.inv(full[..., j, :, :])

    torch.testing.assert_close(relative(canonical, 2, 3), relative(poses, 2, 3), atol=1e-5, rtol=0)


def rendered_model(**overrides) -> Spa3RForPretraining:
    config = Spa3RConfig.from_json_file(str(REPO / "configuration" / "models" / "spa3r-synthetic-tiny.json"))
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return Spa3RForPretraining(config).eval()


@pytest.mark.parametrize("loss_views", ["all", "target"])
def test_rigid_motion_of_the_scene_leaves_ground_truth_camera_loss_unchanged(images, loss_views):
    """Ground-truth cameras are re-expressed relative to the first context view, so moving the whole scene (every
    pose by one random rigid motion) changes neither loss nor predictions. Not scale-invariant: depth is metric."""
    model = rendered_model(loss_views=loss_views)
    targets = batch_targets(classes=29)
    generator = torch.Generator().manual_seed(1)
    poses = torch.stack([random_rigid_motion(generator) for _ in range(8)]).float().view(2, 4, 4, 4)[..., :3, :]
    _, intrinsics = cameras()
    with torch.no_grad():
        reference = model(images, view_mask=VIEW_MASK, extrinsics=poses, intrinsics=intrinsics, **targets)
        for _ in range(3):
            moved = move_world(poses, random_rigid_motion(generator))
            out = model(images, view_mask=VIEW_MASK, extrinsics=moved, intrinsics=intrinsics, **targets)
            torch.testing.assert_close(out.loss, reference.loss, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.pred_geo, reference.pred_geo, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out.pred_sem, reference.pred_sem, atol=1e-4, rtol=1e-4)
        before_fix = model.decode(reference.latents, moved, intrinsics, images.shape[-2:], (2, 3))[0]
    assert not torch.allclose(before_fix, reference.decoder_output, atol=1e-3)  # raw world poses would leak


@pytest.mark.parametrize("camera_source", ["ground_truth", "teacher"])
def test_moving_a_scene_folder_rigidly_leaves_the_pipeline_loss_unchanged(training_synth_root, tmp_path, camera_source):
    """End to end (scene folder → dataset → collator → model) for both camera sources: a copy of a scene whose
    poses are all moved by one rigid motion gives the same loss and predictions."""
    import shutil

    scene = sorted((training_synth_root / "scenes").iterdir())[0]
    moved_scene = tmp_path / scene.name
    shutil.copytree(scene, moved_scene)
    motion = random_rigid_motion(torch.Generator().manual_seed(2)).numpy()
    for pose_file in (moved_scene / "pose").iterdir():
        np.savetxt(pose_file, motion @ np.loadtxt(pose_file))
    model = rendered_model()
    collator = PretrainingCollator(14, targets="rendered", cameras=camera_source, num_classes=29)
    outputs = []
    for folder in (scene, moved_scene):
        sample = MultiViewDataset([folder], views=(4, 4), width=56, sampling="spread", seed=5)[0]
        sample["view_mask"] = torch.tensor([False, True, False, True])
        batch = collator([sample])
        assert ("extrinsics" in batch) == (camera_source == "ground_truth")
        with torch.no_grad():
            outputs.append(model(**batch))
    torch.testing.assert_close(outputs[1].loss, outputs[0].loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs[1].pred_geo, outputs[0].pred_geo, atol=1e-4, rtol=1e-4)


def test_loss_views_and_representation_vs_probe_terms(images):
    targets = batch_targets(classes=29)
    extrinsics, intrinsics = cameras()
    every = rendered_model()(images, view_mask=VIEW_MASK, extrinsics=extrinsics, intrinsics=intrinsics, **targets)
    only = rendered_model(loss_views="target")(images, view_mask=VIEW_MASK, extrinsics=extrinsics, intrinsics=intrinsics, **targets)
    torch.testing.assert_close(only.pred_geo, every.pred_geo)  # same weights, same predictions; only the loss moves
    pred, target = every.pred_geo[VIEW_MASK], every.target_geo[VIEW_MASK]  # (4 target views, Np, 4)
    torch.testing.assert_close(only.losses["geo/l1"], torch.nn.functional.smooth_l1_loss(pred, target))
    torch.testing.assert_close(every.losses["geo/l1"], torch.nn.functional.smooth_l1_loss(every.pred_geo, every.target_geo))
    assert not torch.allclose(only.losses["geo/l1"], every.losses["geo/l1"])
    for out in (every, only):
        torch.testing.assert_close(out.probe_loss, out.losses["depth_prob"])
        torch.testing.assert_close(out.representation_loss, out.loss - out.losses["depth_prob"])
    with pytest.raises(ValueError, match="loss_views must be 'all' or 'target'"):
        Spa3RConfig(loss_views="context")


def test_backbone_supervision_trains_the_aggregator_on_the_context_views_own_geometry(images):
    targets = batch_targets(classes=29)
    extrinsics, intrinsics = cameras()
    inputs = dict(view_mask=VIEW_MASK, extrinsics=extrinsics, intrinsics=intrinsics, **targets)
    plain_model, supervised_model = rendered_model(), rendered_model(backbone_supervision_weight=0.5)
    missing, unexpected = supervised_model.load_state_dict(plain_model.state_dict(), strict=False)
    assert plain_model.backbone_geo is None and missing == ["backbone_geo.weight", "backbone_geo.bias"] and not unexpected
    plain, supervised = plain_model(images, **inputs), supervised_model(images, **inputs)
    assert "backbone_geo/l1" not in plain.losses  # off by default
    torch.testing.assert_close(supervised.pred_geo, plain.pred_geo)  # same student; only a loss term is added
    context_geo = torch.stack([targets["geometry_targets"][b, (~VIEW_MASK[b]).nonzero()[:, 0]] for b in range(2)])
    predicted = supervised_model.backbone_geo(supervised.context_features)  # (B, 2 context views, Np, 4)
    l1, cos = smooth_l1_and_cosine(predicted, context_geo)
    torch.testing.assert_close(supervised.losses["backbone_geo/l1"], 0.5 * l1)
    torch.testing.assert_close(supervised.losses["backbone_geo/cos"], 0.5 * cos)
    torch.testing.assert_close(supervised.representation_loss, plain.representation_loss)  # PSFM terms unchanged
    torch.testing.assert_close(supervised.loss, plain.loss + 0.5 * (l1 + cos))
    supervised_model.zero_grad()
    (supervised.losses["backbone_geo/l1"] + supervised.losses["backbone_geo/cos"]).backward()
    assert supervised_model.spa3r.aggregator.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in supervised_model.spa3r.encoder.parameters())  # it shapes the backbone only
    with pytest.raises(ValueError, match="backbone_supervision_weight trains the aggregator: it needs train_backbone"):
        Spa3RConfig(backbone_supervision_weight=1.0)
    with pytest.raises(ValueError, match="backbone_supervision_weight must be >= 0"):
        Spa3RConfig(backbone_supervision_weight=-1.0, train_backbone=True)


def test_backbone_supervision_override_and_its_refusals():
    tiny = str(REPO / "configuration" / "models" / "spa3r-synthetic-tiny.json")
    model = build_model(ModelArguments(config_name=tiny, backbone_supervision_weight=2.0))
    assert model.config.backbone_supervision_weight == 2.0 and model.backbone_geo.out_features == 4
    check_teachers_needed(model, ModelArguments(), DataArguments(targets="rendered", cameras="ground_truth"))
    with pytest.raises(ValueError, match="it needs --targets rendered \\(got 'teachers'\\)"):
        check_teachers_needed(model, ModelArguments(teachers_path="teachers"), DataArguments(targets="teachers"))
    frozen = build_model(ModelArguments(config_name=tiny, backbone_supervision_weight=1.0))
    frozen.config.train_backbone = False
    with pytest.raises(ValueError, match="a config with train_backbone=true \\(got False\\)"):
        check_teachers_needed(frozen, ModelArguments(teachers_path="teachers"), DataArguments(targets="rendered"))


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


def test_spread_sampling_covers_the_trajectory():
    rng = np.random.default_rng(0)
    for num_frames, num_views in ((32, 8), (24, 6), (9, 9), (10, 3)):
        frames = sample_spread_indices(rng, num_frames, num_views)
        segments = np.floor(np.sort(frames) * num_views / num_frames).astype(int)
        assert len(set(frames.tolist())) == num_views and segments.tolist() == list(range(num_views)), (frames, segments)
    orders = {tuple(np.argsort(sample_spread_indices(rng, 32, 4))) for _ in range(30)}
    assert len(orders) > 1  # the reference (first) view is not always the trajectory's start
    with pytest.raises(ValueError, match="fewer than the 5 views"):
        sample_spread_indices(rng, 4, 5)


def test_eval_fraction_holds_out_rooms_with_a_fixed_split(training_synth_root):
    data = DataArguments(train_data=[f"synthetic:{training_synth_root}"], views=[2, 4], image_width=56,
                         sampling="spread", eval_fraction=0.25, eval_views=3, targets="rendered", cameras="ground_truth")  # fmt: skip
    train, evaluation = build_datasets(data, mask_ratio=0.5, seed=0)
    scenes = sorted(p.name for p in (training_synth_root / "scenes").iterdir())
    assert [s.path.name for s in train.datasets[0].scenes] == scenes[:3]
    assert [s.path.name for s in evaluation.datasets[0].scenes] == scenes[3:] and len(evaluation) == 1
    first = evaluation[(0, 3)]
    train.set_epoch(5)  # training epochs do not move the held-out sample
    again = evaluation[(0, 3)]
    assert torch.equal(first["frame_indices"], again["frame_indices"]) and torch.equal(first["view_mask"], again["view_mask"])
    assert first["pixel_values"].shape[0] == 3 and (~first["view_mask"]).sum() == 1
    for bad, message in ((dict(eval_fraction=1.0), "eval_fraction must be in"), (dict(sampling="random"), "sampling must be"),
                         (dict(eval_data=["synthetic:/x"]), "either --eval_data or --eval_fraction")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            build_datasets(DataArguments(**{**data.__dict__, **bad}), mask_ratio=0.5, seed=0)


def test_no_held_out_rooms_turns_the_presets_held_out_evaluation_off(training_synth_root, tmp_path, caplog):
    caplog.set_level("INFO", logger="modeling_spa3r.training.pretrain")
    metrics = main(["--preset", "spa3r-synthetic-room", "--train_data", f"synthetic:{training_synth_root}",
                    "--output_dir", str(tmp_path), "--max_steps", "2", "--eval_fraction", "0", "--save_strategy", "no",
                    *SMALL])  # fmt: skip
    assert metrics["steps"] == 2
    assert "held-out evaluation is off" in caplog.text
    assert not any(key.startswith("eval_") for entry in log_history(tmp_path) for key in entry)
    # the view width is recorded, and the tools encode at it (not at VGGT's 518)
    assert json.loads((tmp_path / "config.json").read_text())["pretraining_image_width"] == 56
    assert load_spa3r_encoder(str(tmp_path))[1] == 56
