"""Spa3-VLM SFT on TRL: VSI-590K-style data → frames as images and views, assistant-only labels, trainable parts,
LoRA, and the script in one and two processes (DDP, DeepSpeed ZeRO-3)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from modeling_spa3r.training.sft import ConversationSamples, evaluation_sets, read_records

from ..fixtures_training import log_history, run_script

SAMPLING = {"num_frames": None, "fps": 0.5, "min_frames": 2, "max_frames": 4, "frame_folder_fps": None}


def sft_args(vlm_dir, root, output_dir, steps: int = 4) -> list[str]:
    return ["training/sft.py", "--preset", "spa3-vlm-sft-cpu", "--model_name_or_path", str(vlm_dir), "--train_file",
            str(root / "sft" / "synthvsi_train_sft.json"), "--media_root", str(root), "--output_dir", str(output_dir),
            "--max_steps", str(steps), "--logging_steps", "1", "--save_steps", str(steps), "--report_to", "none",
            "--disable_tqdm", "true"]  # fmt: skip


def test_video_cache_decodes_each_video_once_and_changes_nothing(training_synth_root, monkeypatch):
    import numpy as np

    from modeling_spa3r.training import sft

    files, root = [str(training_synth_root / "sft" / "synthvsi_train_sft.json")], str(training_synth_root)
    plain, cached = ConversationSamples(files, root, SAMPLING), ConversationSamples(files, root, SAMPLING, video_cache_size=1)
    decoded = []
    real = sft.load_video_frames
    monkeypatch.setattr(sft, "load_video_frames", lambda path, sampling: decoded.append(path) or real(path, sampling))
    same_video = [i for i, r in enumerate(cached.records) if r["video"] == cached.records[0]["video"]]
    other = next(i for i, r in enumerate(cached.records) if r["video"] != cached.records[0]["video"])
    order = [same_video[0], same_video[1], other, same_video[0]]  # the cache holds one video: the last one is evicted
    samples = [cached[i] for i in order]
    assert len(decoded) == 3 and decoded[0] == decoded[2] != decoded[1]
    samples[0]["images"][0].paste((0, 0, 0), (0, 0, 8, 8))  # a caller drawing on a frame does not reach the cache
    for index, sample in zip(order, samples):
        expected = plain[index]
        assert sample["messages"] == expected["messages"]
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(cached[index]["images"], expected["images"]))
    with pytest.raises(ValueError, match="video_cache_size must be >= 0"):
        ConversationSamples(files, root, SAMPLING, video_cache_size=-1)


def test_conversations_become_frames_and_image_turns(training_synth_root, tmp_path):
    samples = ConversationSamples([str(training_synth_root / "sft" / "synthvsi_train_sft.json")], str(training_synth_root), SAMPLING)
    sample = samples[0]
    # 24 frames at 4 fps = 6 s → 3 frames at 0.5 fps (within 2..4)
    assert len(sample["images"]) == 3
    user, assistant = sample["messages"]
    assert user["role"] == "user" and [c["type"] for c in user["content"]] == ["image"] * 3 + ["text"]
    assert assistant == {"role": "assistant", "content": [{"type": "text", "text": samples.records[0]["conversations"][1]["value"]}]}
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(10):
        sample["images"][0].save(frames / f"{index}.jpg")
    record = {"video": "frames", "conversations": [{"from": "human", "value": "<video>\nHow many?"}, {"from": "gpt", "value": "2"}]}
    (tmp_path / "data.jsonl").write_text(json.dumps(record) + "\n")
    folder = ConversationSamples([str(tmp_path / "data.jsonl")], str(tmp_path), SAMPLING)
    assert len(folder[0]["images"]) == 4  # frame folders without a frame rate: max_frames uniformly
    dataset = folder.dataset()
    assert set(dataset[0]) == {"messages", "images"}


def test_evaluation_sets_plain_or_named(training_synth_root):
    """Plain --eval_file paths make one set (eval_loss); NAME=FILE entries one set per name (eval_NAME_loss), files
    of one name together; a mix is refused, naming the unnamed entries."""
    train = str(training_synth_root / "sft" / "synthvsi_train_sft.json")
    n = len(read_records(train))
    root = str(training_synth_root)
    assert evaluation_sets(None, root, SAMPLING, 0) is None
    assert len(evaluation_sets([train, train], root, SAMPLING, 0)) == 2 * n
    named = evaluation_sets([f"own={train}", f"other_scene={train}", f"own={train}"], root, SAMPLING, 0)
    assert {name: len(dataset) for name, dataset in named.items()} == {"own": 2 * n, "other_scene": n}
    with pytest.raises(ValueError, match=r"name every file \(NAME=FILE\) or none; unnamed: \['.*synthvsi_train_sft.json'\]"):
        evaluation_sets([f"own={train}", train], root, SAMPLING, 0)


def test_bad_data_is_reported(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"video": "x.mp4", "conversations": [{"from": "human", "value": "<video> hi"}]}]))
    with pytest.raises(ValueError, match="no assistant"):
        read_records(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_records(str(bad))
    bad.write_text(json.dumps([{"video": "missing.mp4", "conversations": [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "A"}]}]))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        ConversationSamples([str(bad)], str(tmp_path), SAMPLING)


def test_assistant_only_labels(training_synth_root, training_vlm_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    from modeling_spa3r.modeling_spa3_vlm import Spa3VLMForConditionalGeneration
    from modeling_spa3r.processing_spa3_vlm import Spa3VLMProcessor

    samples = ConversationSamples([str(training_synth_root / "sft" / "synthvsi_train_sft.json")], str(training_synth_root), SAMPLING)
    processor = Spa3VLMProcessor.from_pretrained(training_vlm_dir)
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, remove_unused_columns=False, report_to=[], max_length=None,
                     bf16=False)
    trainer = SFTTrainer(model=Spa3VLMForConditionalGeneration.from_pretrained(training_vlm_dir), args=args,
                         train_dataset=samples.dataset(), processing_class=processor)  # fmt: skip
    dataset = samples.dataset()
    batch = trainer.data_collator([dataset[0], dataset[1]])
    assert batch["geometry_pixel_values"].shape[0] == 6 and batch["geometry_scene_sizes"][:, 0].tolist() == [3, 3]
    for row in range(2):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        answer = samples.records[row]["conversations"][1]["value"]
        assert processor.tokenizer.decode(labelled) == answer + "<|im_end|>\n"  # TRL's Qwen2.5-VL training template


def test_sft_single_process_trains_llm_and_adapter_only(training_synth_root, training_vlm_dir, tmp_path):
    run_script(sft_args(training_vlm_dir, training_synth_root, tmp_path, steps=4))
    losses = [entry["loss"] for entry in log_history(tmp_path) if "loss" in entry]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    before = load_file(str(training_vlm_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "model.safetensors"))
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert any(".language_model." in key or key.startswith("model.layers.") for key in changed)
    assert any("geometry_fusion" in key for key in changed)
    assert not any(key.startswith(("visual.", "model.visual.")) or "geometry_encoder" in key for key in changed)


def test_sft_lora(training_synth_root, training_vlm_dir, tmp_path):
    run_script(sft_args(training_vlm_dir, training_synth_root, tmp_path, steps=2) + ["--use_lora", "true", "--lora_r", "4"])
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 4 and "geometry_fusion" in config["modules_to_save"]
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any("lora_A" in key for key in weights) and any("geometry_fusion" in key for key in weights)


def test_sft_ddp_two_processes(training_synth_root, training_vlm_dir, tmp_path):
    launcher = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29641"]  # fmt: skip
    run_script(sft_args(training_vlm_dir, training_synth_root, tmp_path, steps=2) + ["--use_cpu", "true"], launcher=launcher)
    history = [entry for entry in log_history(tmp_path) if "loss" in entry]
    # 2 processes × batch 2 per step: 4 samples per optimizer step
    assert history[-1]["num_tokens"] > 0 and len(history) == 2
    from modeling_spa3r.modeling_spa3_vlm import Spa3VLMForConditionalGeneration

    Spa3VLMForConditionalGeneration.from_pretrained(tmp_path)


def test_sft_deepspeed_zero3_two_processes(training_synth_root, training_vlm_dir, tmp_path):
    launcher = ["torchrun", "--nproc_per_node", "2", "--master_port", "29642"]
    args = sft_args(training_vlm_dir, training_synth_root, tmp_path, steps=2) + ["--use_cpu", "true", "--deepspeed", "configuration/deepspeed/zero3.json"]
    run_script(args, launcher=launcher, timeout=420)
    assert len([entry for entry in log_history(tmp_path) if "loss" in entry]) == 2
    from modeling_spa3r.modeling_spa3_vlm import Spa3VLMForConditionalGeneration

    model = Spa3VLMForConditionalGeneration.from_pretrained(tmp_path)  # ZeRO-3 gathers the 16-bit weights on save
    assert model.lm_head.weight.abs().sum() > 0


def test_adapter_learning_rate_regroups_the_fusion(training_synth_root, training_vlm_dir, tmp_path):
    """Every trainable parameter stays in exactly one group; the fusion's sit at the adapter rate, with their weight
    decay kept; a model whose fusion is frozen is refused."""
    from trl import SFTConfig

    from modeling_spa3r.modeling_spa3_vlm import Spa3VLMForConditionalGeneration
    from modeling_spa3r.processing_spa3_vlm import Spa3VLMProcessor
    from modeling_spa3r.training.sft import ResumableSFTTrainer

    samples = ConversationSamples([str(training_synth_root / "sft" / "synthvsi_train_sft.json")], str(training_synth_root), SAMPLING)
    args = SFTConfig(output_dir=str(tmp_path), remove_unused_columns=False, report_to=[], max_length=None, bf16=False,
                     learning_rate=1e-3, weight_decay=0.01)  # fmt: skip
    model = Spa3VLMForConditionalGeneration.from_pretrained(training_vlm_dir)
    model.model.geometry_encoder.requires_grad_(False)
    trainer = ResumableSFTTrainer(model=model, args=args, train_dataset=samples.dataset(),
                                  processing_class=Spa3VLMProcessor.from_pretrained(training_vlm_dir),
                                  adapter_learning_rate=2e-5)  # fmt: skip
    optimizer = trainer.create_optimizer()
    names = {id(p): name for name, p in model.named_parameters()}
    grouped = [(names[id(p)], group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(name for name, _, _ in grouped) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert {lr for name, lr, _ in grouped if "geometry_fusion." in name} == {2e-5}
    assert {lr for name, lr, _ in grouped if "geometry_fusion." not in name} == {1e-3}
    decay = {name: wd for name, _, wd in grouped}
    assert decay["model.geometry_fusion.adaptor.up_proj.weight"] == 0.01
    assert decay["model.geometry_fusion.adaptor.up_proj.bias"] == 0.0
    model.model.geometry_fusion.requires_grad_(False)
    frozen = ResumableSFTTrainer(model=model, args=args, train_dataset=samples.dataset(),
                                 processing_class=Spa3VLMProcessor.from_pretrained(training_vlm_dir),
                                 adapter_learning_rate=2e-5)  # fmt: skip
    with pytest.raises(ValueError, match="--adapter_learning_rate is set but no geometry fusion parameter is trained"):
        frozen.create_optimizer()


def test_sft_adapter_learning_rate_zero_keeps_the_fusion(training_synth_root, training_vlm_dir, tmp_path):
    run_script(sft_args(training_vlm_dir, training_synth_root, tmp_path, steps=2) + ["--adapter_learning_rate", "0"])
    before = load_file(str(training_vlm_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "model.safetensors"))
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and not any("geometry_fusion" in key for key in changed)  # the language model trained, the fusion not
