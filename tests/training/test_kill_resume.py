"""SIGKILL and resume: pretraining and SFT killed while a checkpoint is being written come back with the weights and
losses of an uninterrupted run; a finished run resumed trains nothing more; the VSI-Bench runner killed mid-run
answers every question exactly once, with the uninterrupted run's answers.

The kill is a real `SIGKILL` sent by the process to itself at a chosen point (`tests/training/killer.py` wraps the
script): mid-save = after the weights and optimizer are on disk, before the RNG state and `trainer_state.json`.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from modeling_spa3r.training.checkpoints import COMPLETION_FILE, INCOMPLETE_PREFIX, checkpoint_problem

from ..fixtures_training import REPO, log_history, run_script

KILLER = str(Path(__file__).with_name("killer.py"))
PRETRAIN_SMALL = ["--image_width", "56", "--views", "2", "4", "--images_per_device", "8", "--samples_per_scene", "4",
                  "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]  # fmt: skip


def killed(args: list[str], point: str, step: int) -> subprocess.CompletedProcess:
    """Run a script under `killer.py` that SIGKILLs it at `point` (`save` mid-checkpoint, `step` after a step)."""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, KILLER, point, str(step), *args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, f"expected a SIGKILL, got {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def losses(output_dir: Path) -> list[tuple]:
    return [(e["step"], e["loss"]) for e in log_history(output_dir) if "loss" in e]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, different[:5]


def test_pretraining_killed_mid_save_resumes_exactly_and_a_finished_run_stays_finished(training_synth_root, tmp_path):
    args = ["training/pretrain.py", "--preset", "spa3r-synthetic-tiny", "--train_data", f"synthetic:{training_synth_root}",
            "--max_steps", "6", "--save_steps", "2", "--logging_steps", "1", *PRETRAIN_SMALL]  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_script(args + ["--output_dir", str(straight)])
    killed(args + ["--output_dir", str(interrupted)], "save", 4)
    partial = interrupted / "checkpoint-4"
    assert (partial / "model.safetensors").is_file() and not (partial / "trainer_state.json").exists()
    assert "trainer_state.json is missing" in checkpoint_problem(partial)
    assert checkpoint_problem(interrupted / "checkpoint-2") is None
    resumed = run_script(args + ["--output_dir", str(interrupted), "--resume_from_checkpoint", "last"])
    assert "skipping incomplete checkpoint" in resumed.stderr and str(partial) in resumed.stderr
    assert (interrupted / (INCOMPLETE_PREFIX + "checkpoint-4")).is_dir()
    assert (interrupted / "checkpoint-6" / COMPLETION_FILE).is_file()
    assert_same_weights(straight, interrupted)
    assert losses(straight) == losses(interrupted) and len(losses(interrupted)) == 6
    # resuming the finished run: nothing is trained, the state and weights stay those of step 6
    before = (interrupted / "model.safetensors").read_bytes()
    again = run_script(args + ["--output_dir", str(interrupted), "--resume_from_checkpoint", "last"])
    assert "nothing left to train" in again.stderr
    assert json.loads((interrupted / "trainer_state.json").read_text())["global_step"] == 6
    assert losses(interrupted) == losses(straight)
    assert (interrupted / "model.safetensors").read_bytes() == before
    assert not (interrupted / "checkpoint-7").exists()


def sft_args(vlm_dir, root, steps: int) -> list[str]:
    return ["training/sft.py", "--preset", "spa3-vlm-sft-cpu", "--model_name_or_path", str(vlm_dir), "--train_file",
            str(root / "sft" / "synthvsi_train_sft.json"), "--media_root", str(root), "--max_steps", str(steps),
            "--logging_steps", "1", "--save_steps", "2", "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip


def test_sft_killed_mid_save_resumes_exactly(training_synth_root, training_vlm_dir, tmp_path):
    args = sft_args(training_vlm_dir, training_synth_root, steps=6)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_script(args + ["--output_dir", str(straight)])
    killed(args + ["--output_dir", str(interrupted)], "save", 4)  # steps 3-4 are lost with the partial checkpoint
    assert checkpoint_problem(interrupted / "checkpoint-4") is not None
    run_script(args + ["--output_dir", str(interrupted), "--resume_from_checkpoint", "last"])
    assert_same_weights(straight, interrupted)
    history = lambda d: [(e["step"], e["loss"], e["num_tokens"]) for e in log_history(d) if "loss" in e]  # noqa: E731
    assert history(straight) == history(interrupted) and len(history(interrupted)) == 6


def test_vsibench_runner_killed_mid_run_answers_each_question_once(tiny_qwen_dir, vsi_fixture_dir, tmp_path):
    args = ["-m", "modeling_spa3r.cli", "eval", "--model", str(tiny_qwen_dir), "--data", str(vsi_fixture_dir / "test.jsonl"),
            "--num-frames", "2", "--max-new-tokens", "1", "--no-progress"]  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_script(args + ["--output-dir", str(straight)])
    killed(args + ["--output-dir", str(interrupted)], "answer", 4)
    assert len((interrupted / "predictions.jsonl").read_text().splitlines()) == 4
    killed(args + ["--output-dir", str(interrupted)], "answer", 3)  # killed again, after 3 more
    run_script(args + ["--output-dir", str(interrupted)])
    read = lambda d: [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]  # noqa: E731
    ids = [record["id"] for record in read(interrupted)]
    assert sorted(ids) == sorted(record["id"] for record in read(straight)) and len(ids) == len(set(ids)) == 10
    assert read(interrupted) == read(straight)
    results = lambda d: json.loads((d / "results.json").read_text())["results"]  # noqa: E731
    assert results(interrupted) == results(straight)
