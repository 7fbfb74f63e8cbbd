"""Builders for the training-pipeline tests: a small synthetic dataset, a tiny Spa3-VLM folder whose processor
carries Qwen2.5-VL's chat template (TRL turns it into its assistant-masking training template), and a tiny
Spa3R pretraining checkpoint that holds its frozen teachers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import trl

REPO = Path(__file__).resolve().parents[1]


def write_synthetic(root: Path, scenes: int = 4) -> Path:
    from modeling_spa3r.data.synthetic import SynthConfig, generate_dataset

    generate_dataset(root, scenes, seed=3, config=SynthConfig(width=128, height=96, frames=24, fps=4), progress=False,
                     val_fraction=0.0, test_fraction=0.0)  # fmt: skip
    return root


def save_tiny_vlm(directory: Path) -> Path:
    from .fixtures_vlm import build_spa3_vlm_processor, build_tiny_spa3_vlm

    processor = build_spa3_vlm_processor()
    processor.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl.jinja").read_text()
    build_tiny_spa3_vlm(processor.tokenizer, randomize_adaptor=False).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def save_teacher_checkpoint(directory: Path) -> Path:
    """A tiny Spa3RForPretraining (frozen aggregator, camera/depth heads, DINOv3) saved with its teachers."""
    import torch

    from modeling_spa3r import Spa3RForPretraining

    from .fixtures_spa3r import tiny_spa3r_config

    torch.manual_seed(0)
    Spa3RForPretraining(tiny_spa3r_config(save_teachers=True)).save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config["save_teachers"] = False  # training checkpoints keep only the trainable weights
    (directory / "train_config.json").write_text(json.dumps(config))
    return directory


def run_script(args: list[str], launcher: list[str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a training script in a fresh process (optionally under torchrun / accelerate launch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    command = (launcher or [sys.executable]) + args
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def log_history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
