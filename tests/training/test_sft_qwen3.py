"""SFT of Spa3-VLM on Qwen3-VL from a stock Qwen3-VL folder + a Spa3R folder: full (LLM + adapter), LoRA, and two
processes (DDP); the result loads through the Auto classes."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from ..fixtures_qwen3 import save_tiny_qwen3_base, save_tiny_spa3r
from ..fixtures_training import log_history, run_script


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3_sft_base")
    return save_tiny_qwen3_base(root / "qwen3"), save_tiny_spa3r(root / "spa3r")


def sft_args(base_dirs, data_root, output_dir, steps: int = 2) -> list[str]:
    qwen3, spa3r = base_dirs
    return ["training/sft.py", "--preset", "spa3-vlm-sft-cpu", "--qwen_model_path", str(qwen3), "--spa3r_model_path",
            str(spa3r), "--train_file", str(data_root / "sft" / "synthvsi_train_sft.json"), "--media_root",
            str(data_root), "--output_dir", str(output_dir), "--max_steps", str(steps), "--logging_steps", "1",
            "--save_steps", str(steps), "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip


def test_sft_from_qwen3_and_spa3r_trains_llm_and_adapter_only(training_synth_root, base_dirs, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run_script(sft_args(base_dirs, training_synth_root, tmp_path, steps=3))
    losses = [entry["loss"] for entry in log_history(tmp_path) if "loss" in entry]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    base = load_file(str(base_dirs[0] / "model.safetensors"))
    spa3r = load_file(str(base_dirs[1] / "model.safetensors"))
    after = load_file(str(tmp_path / "model.safetensors"))
    changed = {key for key in base if not torch.equal(base[key], after[key])}
    assert any(".language_model." in key for key in changed)
    assert not any(".visual." in key for key in changed)  # vision tower, merger, DeepStack mergers frozen
    assert after["model.geometry_fusion.adaptor.up_proj.weight"].abs().sum() > 0  # the zero-init adaptor learned
    for key, value in spa3r.items():  # Spa3R frozen, saved as loaded
        assert torch.equal(after[f"model.geometry_encoder.{key}"], value), key
    model = AutoModelForImageTextToText.from_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(model).__name__ == "Spa3VLMQwen3ForConditionalGeneration"
    assert type(processor).__name__ == "Spa3VLMQwen3Processor"
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "spa3_vlm_qwen3"


def test_sft_lora(training_synth_root, base_dirs, tmp_path):
    run_script(sft_args(base_dirs, training_synth_root, tmp_path) + ["--use_lora", "true", "--lora_r", "4"])
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 4 and "geometry_fusion" in config["modules_to_save"]
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any("language_model" in key and "lora_A" in key for key in weights)
    assert any("geometry_fusion" in key for key in weights)


def test_sft_ddp_two_processes(training_synth_root, base_dirs, tmp_path):
    launcher = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29651"]  # fmt: skip
    run_script(sft_args(base_dirs, training_synth_root, tmp_path) + ["--use_cpu", "true"], launcher=launcher)
    history = [entry for entry in log_history(tmp_path) if "loss" in entry]
    assert len(history) == 2 and history[-1]["num_tokens"] > 0
    records = json.loads((training_synth_root / "sft" / "synthvsi_train_sft.json").read_text())
    # 2 processes × batch 2 per device: an epoch is ceil(N / 4) steps (one process: ceil(N / 2))
    assert history[-1]["epoch"] == pytest.approx(2 / math.ceil(len(records) / 4), abs=1e-4)
    from modeling_spa3r.modeling_spa3_vlm_qwen3 import Spa3VLMQwen3ForConditionalGeneration

    Spa3VLMQwen3ForConditionalGeneration.from_pretrained(tmp_path)


def test_qwen3_preset_is_the_sft_recipe():
    from trl import SFTConfig

    from modeling_spa3r.training.presets import parse_arguments
    from modeling_spa3r.training.sft import DataArguments, ModelArguments

    argv = ["--preset", "spa3-vlm-qwen3-sft", "--qwen_model_path", "Qwen/Qwen3-VL-4B-Instruct", "--spa3r_model_path",
            "runs/spa3r-base", "--use_cpu", "true", "--bf16", "false"]  # fmt: skip (bf16 off: this machine has no GPU)
    model, data, training = parse_arguments((ModelArguments, DataArguments, SFTConfig), argv, "sft")
    assert (model.train_llm, model.train_adapter, model.train_vision_tower, model.train_merger) == (True, True, False, False)
    assert (data.fps, data.min_frames, data.max_frames, data.max_visual_tokens_per_frame) == (0.5, 4, 8, 576)
    assert (training.learning_rate, training.gradient_accumulation_steps, training.assistant_only_loss) == (1e-5, 8, True)
