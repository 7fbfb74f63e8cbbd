"""Teacher cache: the symmetric step's loss and cameras from the cache equal the uncached step's (fp32 and bf16
teachers, any view split), refusal of other teachers / settings / data and of the asymmetric step, resume after an
interruption, truncated shards named, and `spa3r cache-teachers` + `spa3r pretrain --teacher_cache` end to end."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import TrainingArguments

from modeling_spa3r import Spa3RForPretraining
from modeling_spa3r.training import teacher_cache
from modeling_spa3r.training.pretrain import DataArguments, PretrainingCollator, build_datasets
from modeling_spa3r.training.teacher_cache import (
    CACHED_KEYS,
    SAMPLE_KEY,
    CachedTeacherDataset,
    TeacherCache,
    check_servable,
    data_settings,
    teacher_settings,
    write_cache,
)
from modeling_spa3r.validation import DataError

from ..fixtures_spa3r import tiny_spa3r_config
from ..fixtures_training import REPO, log_history, run_script

SEED = 0


def tiny_model(**overrides) -> Spa3RForPretraining:
    torch.manual_seed(0)
    return Spa3RForPretraining(tiny_spa3r_config(asymmetric_masking=False, **overrides)).train()


def data_arguments(root, **overrides) -> DataArguments:
    values = dict(train_data=[f"synthetic:{root}"], views=[3, 4], image_width=56, samples_per_scene=1)
    return DataArguments(**{**values, **overrides})


def training_arguments(tmp_path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "unused"), report_to="none", use_cpu=True)


def make_cache(model, root, directory, tmp_path, shard_entries=3):
    """4 scenes × V in {3, 4} = 8 entries, in shards of `shard_entries`."""
    data = data_arguments(root)
    train, _ = build_datasets(data, model.config.mask_ratio, SEED)
    settings, tied_data = teacher_settings(model, training_arguments(tmp_path)), data_settings(data, SEED)
    return write_cache(model, train, directory, settings, tied_data, shard_entries=shard_entries, progress=False)


def open_cache(model, root, directory, tmp_path, **data_overrides) -> TeacherCache:
    data = data_arguments(root, **data_overrides)
    return TeacherCache(directory, model, teacher_settings(model, training_arguments(tmp_path)), data_settings(data, SEED))


def without_cache(sample: dict) -> dict:
    return {key: value for key, value in sample.items() if key != SAMPLE_KEY}


@pytest.mark.parametrize("teacher_dtype", ["float32", "bfloat16"])
def test_cached_step_equals_the_uncached_step(training_synth_root, tmp_path, teacher_dtype):
    model = tiny_model(teacher_dtype=teacher_dtype)
    make_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    plain, _ = build_datasets(data_arguments(training_synth_root), model.config.mask_ratio, SEED)
    cached_set, _ = build_datasets(data_arguments(training_synth_root), model.config.mask_ratio, SEED)
    cached = CachedTeacherDataset(cached_set, open_cache(model, training_synth_root, tmp_path / "cache", tmp_path))
    collate = PretrainingCollator(model.config.vggt_config.patch_size)
    items = [(1, 4), (3, 4)]
    masks = {}
    for epoch in (0, 1, 2, 3):
        cached.set_epoch(epoch)
        samples = [cached[item] for item in items]
        masks[epoch] = torch.stack([s["view_mask"] for s in samples])
        with_cache = collate(samples)
        assert with_cache["canonical_cameras"] is True and all(key in with_cache for key in CACHED_KEYS)
        uncached = collate([without_cache(s) for s in samples])  # same images and split, teachers run in the step
        if epoch == 0:  # the cached frames are the ones the plain mixture draws at epoch 0
            reference = collate([plain[item] for item in items])
            assert torch.equal(reference["pixel_values"], uncached["pixel_values"])
            assert torch.equal(reference["view_mask"], uncached["view_mask"])
        out_cached, out_uncached = model(**with_cache), model(**uncached)
        assert out_uncached.pose_encodings is not None and out_cached.pose_encodings is None  # the teachers were skipped
        torch.testing.assert_close(out_cached.extrinsics, out_uncached.extrinsics, rtol=0, atol=1e-6)
        torch.testing.assert_close(out_cached.intrinsics, out_uncached.intrinsics, rtol=1e-6, atol=1e-5)
        for name in ("target_geo", "target_sem", "target_depth", "pred_geo"):
            torch.testing.assert_close(getattr(out_cached, name), getattr(out_uncached, name), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out_cached.loss, out_uncached.loss, rtol=1e-6, atol=1e-7)
        for name, value in out_uncached.losses.items():
            torch.testing.assert_close(out_cached.losses[name], value, rtol=1e-6, atol=1e-7)
    assert len({tuple(mask.flatten().tolist()) for mask in masks.values()}) > 1  # the split changed between epochs


def test_refuses_other_teachers_settings_data_and_the_asymmetric_step(training_synth_root, tmp_path):
    model = tiny_model()
    make_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    digest = teacher_cache.teacher_digest(model)
    other = tiny_model()
    with torch.no_grad():
        next(other.depth_head.parameters()).view(-1)[0] += 1e-3
    other_digest = teacher_cache.teacher_digest(other)
    assert other_digest != digest
    with pytest.raises(ValueError, match=rf"other teacher weights: cache teacher_digest {digest}, this run's teachers {other_digest}"):
        open_cache(other, training_synth_root, tmp_path / "cache", tmp_path)
    with torch.no_grad():
        other.pose_tokenizer.weight.add_(1.0)  # a student weight: not part of the digest
    assert teacher_cache.teacher_digest(other) == other_digest
    with pytest.raises(ValueError, match=r"another teacher setting: sampled_depth_target: cache False, this run True"):
        open_cache(tiny_model(sampled_depth_target=True), training_synth_root, tmp_path / "cache", tmp_path)
    with pytest.raises(ValueError, match=r"another teacher setting: teacher_dtype: cache 'float32', this run 'bfloat16'"):
        open_cache(tiny_model(teacher_dtype="bfloat16"), training_synth_root, tmp_path / "cache", tmp_path)
    with pytest.raises(ValueError, match=r"another data: image_width: cache 56, this run 70"):
        open_cache(model, training_synth_root, tmp_path / "cache", tmp_path, image_width=70)
    with pytest.raises(ValueError, match=r"another data: views: cache \[3, 4\], this run \[2, 4\]"):
        open_cache(model, training_synth_root, tmp_path / "cache", tmp_path, views=[2, 4])
    asymmetric = Spa3RForPretraining(tiny_spa3r_config(asymmetric_masking=True))
    with pytest.raises(ValueError, match=r"serves only the symmetric step \(asymmetric_masking=False\)"):
        check_servable(asymmetric, data_arguments(training_synth_root))
    with pytest.raises(ValueError, match=r"--targets teachers --cameras teacher"):
        check_servable(model, data_arguments(training_synth_root, cameras="ground_truth"))


def test_entries_that_no_longer_match_the_data_are_refused(training_synth_root, tmp_path):
    model = tiny_model()
    make_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    cache = open_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    cache.entries[(2, 3)]["frames"] = [0, 1, 2]
    train, _ = build_datasets(data_arguments(training_synth_root), model.config.mask_ratio, SEED)
    with pytest.raises(ValueError, match=r"entry 2_3 .* was made for \{'scene': .*'frames': \[0, 1, 2\].* the data now gives"):
        CachedTeacherDataset(train, cache)[(2, 3)]
    with pytest.raises(ValueError, match=r"has no entry for sample 2 with 5 views"):
        CachedTeacherDataset(train, cache)[(2, 5)]


def test_interrupted_cache_resumes_and_skips_finished_shards(training_synth_root, tmp_path, monkeypatch):
    model = tiny_model()
    reference = make_cache(model, training_synth_root, tmp_path / "reference", tmp_path)
    assert reference["complete"] and len(reference["shards"]) == 3 and len(reference["entries"]) == 8
    calls = []
    real_pass = teacher_cache.teacher_outputs

    def interrupted_pass(*args):
        if len(calls) == 4:  # the second shard dies after its first entry
            raise KeyboardInterrupt
        calls.append(1)
        return real_pass(*args)

    monkeypatch.setattr(teacher_cache, "teacher_outputs", interrupted_pass)
    with pytest.raises(KeyboardInterrupt):
        make_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["manifest.json", "shard-00000.safetensors"]
    with pytest.raises(ValueError, match=r"incomplete \(1 of 3 shards\): run spa3r cache-teachers again"):
        open_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    (tmp_path / "cache" / ".shard-00001.safetensors.tmp").write_bytes(b"\x00" * 100)  # a kill -9 mid-write
    first_shard = (tmp_path / "cache" / "shard-00000.safetensors").stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(teacher_cache, "teacher_outputs", lambda *args: calls.append(1) or real_pass(*args))
    resumed = make_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    assert len(calls) == 5 and resumed["complete"]  # entries 4-8 only
    assert (tmp_path / "cache" / "shard-00000.safetensors").stat().st_mtime_ns == first_shard
    assert resumed["entries"] == reference["entries"] and resumed["shards"] == reference["shards"]
    for name in reference["shards"]:
        assert (tmp_path / "cache" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()


def test_truncated_shard_is_named_and_rewritten(training_synth_root, tmp_path, monkeypatch, caplog):
    model = tiny_model()
    make_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    shard = tmp_path / "cache" / "shard-00001.safetensors"
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])
    with pytest.raises(DataError, match=rf"shard {shard} has {len(original) // 2} bytes, {len(original)} when written"):
        open_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    shard.write_bytes(b"\xff" * len(original))  # right size, garbage header
    with pytest.raises(DataError, match=rf"shard {shard} is corrupt"):
        open_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    calls = []
    real_pass = teacher_cache.teacher_outputs
    monkeypatch.setattr(teacher_cache, "teacher_outputs", lambda *args: calls.append(1) or real_pass(*args))
    make_cache(model, training_synth_root, tmp_path / "cache", tmp_path)
    assert len(calls) == 3 and shard.read_bytes() == original
    assert f"shard {shard} is corrupt" in caplog.text and "computing it again" in caplog.text
    assert open_cache(model, training_synth_root, tmp_path / "cache", tmp_path).load(3, 4)["geometry_targets"].shape == (4, 12, 64)


def test_cache_teachers_then_pretrain_from_the_cache(training_synth_root, teacher_checkpoint, tmp_path):
    common = ["--config_name", str(teacher_checkpoint / "train_config.json"), "--teachers_path", str(teacher_checkpoint),
              "--asymmetric_masking", "false", "--train_data", f"synthetic:{training_synth_root}", "--image_width", "56",
              "--views", "2", "4", "--images_per_device", "8", "--samples_per_scene", "2", "--seed", "5",
              "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]  # fmt: skip
    cache = tmp_path / "cache"
    run_script(["-m", "modeling_spa3r.cli", "cache-teachers", *common, "--teacher_cache", str(cache), "--output_dir",
                str(tmp_path / "unused")])  # fmt: skip
    train = ["--max_steps", "4", "--logging_steps", "1", "--optim", "sgd", "--learning_rate", "0.05"]  # SGD: float noise stays small
    run_script(["-m", "modeling_spa3r.cli", "pretrain", *common, *train, "--teacher_cache", str(cache), "--output_dir",
                str(tmp_path / "cached")])  # fmt: skip
    run_script(["-m", "modeling_spa3r.cli", "pretrain", *common, *train, "--output_dir", str(tmp_path / "plain")])
    terms = ("loss", "geo/l1", "sem/cos", "depth_prob")
    cached, plain = ([entry for entry in log_history(tmp_path / run) if "loss" in entry] for run in ("cached", "plain"))
    assert len(cached) == len(plain) == 4 and all(torch.isfinite(torch.tensor(e["loss"])) for e in cached)
    first_epoch = [step for step, entry in enumerate(plain) if entry["epoch"] <= 1.0]  # later epochs draw other frames
    assert len(first_epoch) >= 2
    # the first step is the same computation; later ones drift by the float noise of per-sample (cache) against
    # batched (step) camera-head passes (~3e-7, the step itself is no closer across batch sizes), which the random
    # tiny teachers' ill-conditioned cameras amplify through training
    assert [cached[0][t] for t in terms] == pytest.approx([plain[0][t] for t in terms], rel=1e-6)
    for step in first_epoch:
        assert [cached[step][t] for t in terms] == pytest.approx([plain[step][t] for t in terms], rel=1e-3)
    assert cached[first_epoch[-1]]["loss"] != plain[0]["loss"]  # the weights moved
    refused = run_script_failure(["-m", "modeling_spa3r.cli", "pretrain", *common, *train, "--teacher_cache", str(cache),
                                  "--sampled_depth_target", "true", "--output_dir", str(tmp_path / "refused")])  # fmt: skip
    assert "another teacher setting: sampled_depth_target: cache False, this run True" in refused


def run_script_failure(args: list[str]) -> str:
    """stderr of a CLI run that must fail with a user error (status 2)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    return result.stderr
