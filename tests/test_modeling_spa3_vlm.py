"""Spa3-VLM model: per-sample fusion, training and generation through the Auto classes, loading paths, errors."""

import json
import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.utils import logging as transformers_logging

import modeling_spa3r  # noqa: F401  (registers the Auto classes)
from modeling_spa3r.configuration_spa3_vlm import Spa3VLMConfig
from modeling_spa3r.convert import spa3r_config_from_reference
from modeling_spa3r.modeling_spa3_vlm import Spa3VLMForConditionalGeneration
from modeling_spa3r.modeling_spa3r import Spa3RModel

from .fixtures_vlm import build_tiny_spa3_vlm, random_picture, tiny_vlm_spa3r_config, write_video
from .parity import PARITY_DIR, reference_sets


def _conversations(video_path, pictures=(0, 1)):
    """Batch of 3: two images (with an answer), a video, text only."""
    return [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": random_picture(pictures[0])},
                    {"type": "image", "image": random_picture(pictures[1])},
                    {"type": "text", "text": "how far apart?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "3 m"}]},
        ],
        [{"role": "user", "content": [{"type": "video", "video": str(video_path)}, {"type": "text", "text": "count"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    ]


def _batch(processor, conversations, **kwargs):
    return processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True, **kwargs}
    )


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "room.mp4", num_frames=8, fps=4)


@pytest.fixture(scope="module")
def loaded(spa3_vlm_dir):
    return AutoProcessor.from_pretrained(spa3_vlm_dir), AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).eval()


def test_auto_classes_load_our_classes(loaded):
    processor, model = loaded
    assert type(model) is Spa3VLMForConditionalGeneration
    assert type(processor).__name__ == "Spa3VLMProcessor"
    assert model.config.text_config._attn_implementation == "sdpa"


def test_train_step_images_video_text_only(loaded, video_path):
    processor, model = loaded
    batch = _batch(processor, _conversations(video_path))
    assert batch["geometry_scene_sizes"].tolist() == [[2, 42, 56], [3, 42, 56]]  # sample 3 is text only
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    model.gradient_checkpointing_enable()
    try:
        out = model(**batch, labels=labels)
        out.loss.backward()
    finally:
        model.gradient_checkpointing_disable()
        model.eval()
    assert torch.isfinite(out.loss) and out.logits.shape[:2] == batch["input_ids"].shape
    fusion, lm = model.model.geometry_fusion, model.model.language_model
    assert fusion.cross_attention.q_proj.weight.grad.abs().sum() > 0
    assert lm.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.model.geometry_encoder.parameters())
    model.zero_grad(set_to_none=True)


def test_per_sample_fusion(loaded, video_path, tmp_path):
    processor, model = loaded
    other_video = write_video(tmp_path / "other.mp4", num_frames=8, fps=4, seed=7)
    base = _batch(processor, _conversations(video_path))
    changed_second = _batch(processor, _conversations(other_video))
    changed_first = _batch(processor, _conversations(video_path, pictures=(5, 6)))
    with torch.no_grad():
        logits = model(**base).logits
        second = model(**changed_second).logits
        first = model(**changed_first).logits
    mask = base["attention_mask"].bool()
    # sample 0 (and the text-only sample 2) do not see sample 1's frames ...
    assert torch.equal(logits[0][mask[0]], second[0][mask[0]])
    assert torch.equal(logits[2][mask[2]], second[2][mask[2]])
    assert (logits[1][mask[1]] - second[1][mask[1]]).abs().max() > 1e-3
    # ... while sample 0's own images do change its logits, and nothing else
    assert (logits[0][mask[0]] - first[0][mask[0]]).abs().max() > 1e-3
    assert torch.equal(logits[1][mask[1]], first[1][mask[1]])


def test_batch_matches_samples_alone(loaded, video_path):
    processor, model = loaded
    conversations = _conversations(video_path)
    batch = _batch(processor, conversations)
    with torch.no_grad():
        logits = model(**batch).logits
        for row, conversation in enumerate(conversations):
            alone = _batch(processor, [conversation])
            alone_logits = model(**alone).logits[0]
            valid = batch["attention_mask"][row].bool()
            torch.testing.assert_close(logits[row][valid], alone_logits, atol=2e-5, rtol=1e-4)


def test_generate_encodes_geometry_once_and_matches_per_sample(loaded, video_path):
    processor, model = loaded
    conversations = [c[:1] for c in _conversations(video_path)]
    kwargs = dict(tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
    batch = processor.apply_chat_template(conversations, processor_kwargs={"padding": True, "padding_side": "left"}, **kwargs)
    calls = []
    hook = model.model.geometry_encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        with torch.no_grad():
            tokens = model.generate(**batch, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    finally:
        hook.remove()
    # Spa3R runs once, before prefill: one batched call per scene shape (2 views of 42x56, 3 views of 42x56)
    assert len(calls) == 2
    new = tokens[:, batch["input_ids"].shape[1] :]
    for row, conversation in enumerate(conversations):
        alone = processor.apply_chat_template([conversation], **kwargs)
        with torch.no_grad():
            alone_tokens = model.generate(**alone, max_new_tokens=4, do_sample=False, min_new_tokens=4)
        assert torch.equal(new[row], alone_tokens[0, alone["input_ids"].shape[1] :])


def test_fresh_model_is_exactly_base_qwen(spa3_vlm_processor, video_path):
    model = build_tiny_spa3_vlm(spa3_vlm_processor.tokenizer, randomize_adaptor=False)
    up_proj = model.model.geometry_fusion.adaptor.up_proj
    assert not up_proj.weight.any() and not up_proj.bias.any()
    qwen_config = Qwen2_5_VLConfig(**{k: v for k, v in model.config.to_dict().items() if k in ("text_config", "vision_config", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")})
    qwen = Qwen2_5_VLForConditionalGeneration(qwen_config).eval()
    missing, unexpected = qwen.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all("geometry_" in key for key in unexpected)
    batch = _batch(spa3_vlm_processor, _conversations(video_path))
    with torch.no_grad():
        ours = model(**batch).logits
        base = qwen(**{k: v for k, v in batch.items() if not k.startswith("geometry_")}).logits
    assert torch.equal(ours, base)


def test_save_load_round_trip_and_attention_backends(loaded, spa3_vlm_dir, tmp_path, video_path):
    processor, model = loaded
    batch = _batch(processor, _conversations(video_path))
    model.save_pretrained(tmp_path)
    reloaded = Spa3VLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    eager = Spa3VLMForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.config.text_config._attn_implementation == "eager"
    with torch.no_grad():
        logits = model(**batch).logits
        assert torch.equal(reloaded(**batch).logits, logits)
        torch.testing.assert_close(eager(**batch).logits, logits, atol=1e-5, rtol=1e-4)
    saved = json.loads((spa3_vlm_dir / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForImageTextToText"] == "modeling_spa3_vlm.Spa3VLMForConditionalGeneration"


def test_trust_remote_code_in_fresh_process(loaded, spa3_vlm_dir, tmp_path, video_path):
    processor, model = loaded
    batch = _batch(processor, _conversations(video_path))
    with torch.no_grad():
        expected = model(**batch).logits
    torch.save(dict(batch), tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        assert "modeling_spa3r" not in sys.modules
        model = AutoModelForImageTextToText.from_pretrained({str(spa3_vlm_dir)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(spa3_vlm_dir)!r}, trust_remote_code=True)
        assert type(model).__name__ == "Spa3VLMForConditionalGeneration" and "modeling_spa3r" not in sys.modules
        assert type(processor).__name__ == "Spa3VLMProcessor"
        with torch.no_grad():
            logits = model(**torch.load({str(tmp_path / "batch.pt")!r}, weights_only=True)).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "logits.pt", weights_only=True), expected)


def test_official_checkpoint_loading_reports_keys():
    meta = json.loads((PARITY_DIR / "spa3_vlm_tiny_e.json").read_text())
    geometry_config = spa3r_config_from_reference(meta["geometry_encoder_spec"])
    model = Spa3VLMForConditionalGeneration.from_pretrained(PARITY_DIR / "spa3_vlm_tiny_e_hf", geometry_config=geometry_config)
    report = model.conversion_report
    assert report["unmapped"] == report["missing"] == report["mismatched"] == []
    ignored = {key.split(".")[2] for key in report["ignored_training_only"]}
    assert ignored == {"camera_head", "depth_head", "point_head", "decoder", "pose_tokenizer", "heads", "depth_prob", "dino"}
    assert model.config.model_type == "spa3_vlm" and model.config.geometry_config.num_queries == 8
    with pytest.raises(ValueError, match="spa3r_num_queries=8"):
        Spa3VLMConfig.from_official_dict(meta["config_json"], geometry_config=tiny_vlm_spa3r_config())
    with pytest.raises(ValueError, match="does not fit the released Spa3R"):
        Spa3VLMConfig.from_official_dict(meta["config_json"])


def test_start_sft_from_base_qwen_and_spa3r(spa3_vlm_processor, tmp_path, video_path, caplog, capfd):
    reference = build_tiny_spa3_vlm(spa3_vlm_processor.tokenizer, randomize_adaptor=False)
    qwen_config = Qwen2_5_VLConfig(**{k: v for k, v in reference.config.to_dict().items() if k in ("text_config", "vision_config", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")})
    qwen = Qwen2_5_VLForConditionalGeneration(qwen_config).eval()
    qwen.save_pretrained(tmp_path / "qwen")
    spa3r = Spa3RModel(tiny_vlm_spa3r_config())
    spa3r.save_pretrained(tmp_path / "spa3r")
    transformers_logging.set_verbosity_info()  # the report a user would see, at the most talkative level
    try:
        with caplog.at_level(logging.INFO, logger="modeling_spa3r.fusion"):
            model = Spa3VLMForConditionalGeneration.from_qwen_and_spa3r(tmp_path / "qwen", tmp_path / "spa3r").eval()
    finally:
        transformers_logging.set_verbosity_warning()
    # no load report listing the Spa3R/fusion keys as MISSING (they are filled from the Spa3R checkpoint): one line
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert [r.getMessage() for r in caplog.records if r.name == "modeling_spa3r.fusion"] == [
        f"Spa3VLMForConditionalGeneration: backbone from {tmp_path / 'qwen'}, Spa3R encoder from {tmp_path / 'spa3r'} "
        f"({len(spa3r.state_dict())} tensors), geometry fusion freshly initialised (adaptor output zero)"
    ]
    for key, value in spa3r.state_dict().items():
        assert torch.equal(model.model.geometry_encoder.state_dict()[key], value), key
    batch = _batch(spa3_vlm_processor, _conversations(video_path))
    with torch.no_grad():
        ours = model(**batch).logits
        base = qwen(**{k: v for k, v in batch.items() if not k.startswith("geometry_")}).logits
    assert torch.equal(ours, base)


def test_clear_errors(loaded, video_path):
    processor, model = loaded
    batch = dict(_batch(processor, _conversations(video_path)))
    with torch.no_grad():
        wrong_tokens = dict(batch, input_ids=batch["input_ids"].clone())
        first_image_token = (wrong_tokens["input_ids"][0] == model.config.image_token_id).nonzero()[0, 0]
        wrong_tokens["input_ids"][0, first_image_token] = 0
        with pytest.raises(ValueError, match="image tokens do not match the images"):
            model(**wrong_tokens)
        odd = dict(batch, geometry_scene_sizes=torch.tensor([[2, 40, 56], [3, 42, 56]]))
        with pytest.raises(ValueError, match="not divisible by the patch size 14"):
            model(**odd)
        fewer = dict(batch, geometry_scene_sizes=torch.tensor([[2, 42, 56], [2, 42, 56]]))
        with pytest.raises(ValueError, match=r"geometry scene 1 has 2 view\(s\) .* but sample 1 has 3 image\(s\)"):
            model(**fewer)
        with pytest.raises(ValueError, match="hold 4 views .* but the batch has 5 images"):
            model.model.get_image_features(
                batch["pixel_values"],
                batch["image_grid_thw"],
                geometry_pixel_values=batch["geometry_pixel_values"],
                geometry_scene_sizes=fewer["geometry_scene_sizes"],
            )
        with pytest.raises(ValueError, match="without images"):
            model(input_ids=batch["input_ids"], geometry_pixel_values=batch["geometry_pixel_values"])


def test_auto_model_on_a_spa3_vlm_folder_is_the_base_model_with_its_weights(spa3_vlm_dir, tmp_path):
    from transformers import AutoModel, AutoModelForImageTextToText

    base, info = AutoModel.from_pretrained(spa3_vlm_dir, output_loading_info=True)
    assert type(base).__name__ == "Spa3VLMModel"
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    assert sorted(info["unexpected_keys"]) == ["lm_head.weight"]  # as for Qwen2.5-VL's base model
    full = AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).model.state_dict()
    for key, value in base.state_dict().items():
        assert torch.equal(value, full[key]), key
    base.save_pretrained(tmp_path)
    for key, value in AutoModel.from_pretrained(tmp_path).state_dict().items():
        assert torch.equal(value, full[key]), key
