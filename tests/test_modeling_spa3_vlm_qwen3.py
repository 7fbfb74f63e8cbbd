"""Spa3-VLM on Qwen3-VL: zero-init equals base Qwen3-VL, per-sample fusion of images and videos, DeepStack left
alone, generate with Spa3R run once, save/load through the Auto classes, remote code, errors."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

import modeling_spa3r  # noqa: F401  (registers the Auto classes)
from modeling_spa3r.modeling_spa3_vlm_qwen3 import Spa3VLMQwen3ForConditionalGeneration, Spa3VLMQwen3Model
from modeling_spa3r.modeling_spa3r import Spa3RModel

from .fixtures_qwen3 import build_spa3_vlm_qwen3_processor, build_tiny_qwen3, build_tiny_spa3_vlm_qwen3
from .fixtures_vlm import random_picture, tiny_vlm_spa3r_config, write_video


def _conversations(video, other_video=None, pictures=(0, 1, 2)):
    """Batch of 4: two images (with an answer), a video, an image + a video, text only."""
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
        [{"role": "user", "content": [{"type": "video", "video": str(video)}, {"type": "text", "text": "count"}]}],
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": random_picture(pictures[2])},
                    {"type": "video", "video": str(other_video or video)},
                    {"type": "text", "text": "both"},
                ],
            }
        ],
        [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    ]


def _batch(processor, conversations, **kwargs):
    return processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True, **kwargs}
    )


def _qwen_inputs(batch):
    return {k: v for k, v in batch.items() if not k.startswith("geometry_")}


@pytest.fixture(scope="module")
def processor():
    return build_spa3_vlm_qwen3_processor()


@pytest.fixture(scope="module")
def model(processor):
    return build_tiny_spa3_vlm_qwen3(processor.tokenizer)


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "room.mp4", num_frames=8, fps=4)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, processor, model):
    directory = tmp_path_factory.mktemp("tiny_spa3_vlm_qwen3")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_processor_scenes_timestamps_and_views(processor, video_path):
    batch = _batch(processor, _conversations(video_path))
    # 4 frames sampled uniformly from 8: one scene per sample with images/videos, views in text order
    assert batch["geometry_scene_sizes"].tolist() == [[2, 56, 70], [4, 56, 70], [5, 56, 70]]
    assert batch["geometry_image_scenes"].tolist() == [0, 0, 2]
    assert batch["geometry_video_scenes"].tolist() == [1, 2]
    assert batch["geometry_pixel_values"].shape == (11, 3, 56, 70)
    assert batch["video_grid_thw"].tolist() == [[2, 2, 4], [2, 2, 4]]  # 4 frames → 2 temporal patches
    # Qwen3-VL's timestamps from the sampled frame indices [0, 2, 4, 7] at 4 fps
    text = processor.tokenizer.decode(batch["input_ids"][1])
    assert "<0.2 seconds>" in text and "<1.4 seconds>" in text
    # the frames Qwen3-VL sees are the Spa3R views, trimmed to 64x32 and normalised with mean = std = 0.5
    view = batch["geometry_pixel_values"][2]  # first frame of the video (scene 1)
    patches = batch["pixel_values_videos"][0].view(3, 2, 16, 16)  # first patch: channels, time, 16x16
    expected = (view[:, 12:28, 3:19] - 0.5) / 0.5
    torch.testing.assert_close(patches[:, 0], expected, atol=1e-5, rtol=0)


def test_zero_init_is_exactly_base_qwen3(processor, video_path):
    model = build_tiny_spa3_vlm_qwen3(processor.tokenizer, randomize_adaptor=False)
    up_proj = model.model.geometry_fusion.adaptor.up_proj
    assert not up_proj.weight.any() and not up_proj.bias.any()
    base = build_tiny_qwen3(processor.tokenizer)
    missing, unexpected = base.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(".geometry_" in key for key in unexpected)
    batch = _batch(processor, _conversations(video_path))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base(**_qwen_inputs(batch)).logits)


def test_from_qwen_and_spa3r_equals_base_qwen3(processor, tmp_path, video_path):
    base = build_tiny_qwen3(processor.tokenizer, seed=3)
    base.save_pretrained(tmp_path / "qwen3")
    spa3r = Spa3RModel(tiny_vlm_spa3r_config())
    spa3r.save_pretrained(tmp_path / "spa3r")
    model, info = Spa3VLMQwen3ForConditionalGeneration.from_qwen_and_spa3r(
        tmp_path / "qwen3", tmp_path / "spa3r", output_loading_info=True
    )
    model.eval()
    assert all(key.startswith("model.geometry_") for key in info["missing_keys"]) and not info["unexpected_keys"]
    for key, value in spa3r.state_dict().items():
        assert torch.equal(model.model.geometry_encoder.state_dict()[key], value), key
    assert all(not p.requires_grad for p in model.model.geometry_encoder.parameters())
    batch = _batch(processor, _conversations(video_path))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base(**_qwen_inputs(batch)).logits)


def test_per_sample_fusion_images_and_videos(processor, model, video_path, tmp_path):
    other = write_video(tmp_path / "other.mp4", num_frames=8, fps=4, seed=7)
    base = _batch(processor, _conversations(video_path))
    changed_third = _batch(processor, _conversations(video_path, other_video=other))
    changed_first = _batch(processor, _conversations(video_path, pictures=(5, 6, 2)))
    with torch.no_grad():
        logits, third, first = (model(**b).logits for b in (base, changed_third, changed_first))
    mask = base["attention_mask"].bool()
    for row in (0, 1, 3):  # sample 2's video is only in sample 2's scene
        assert torch.equal(logits[row][mask[row]], third[row][mask[row]])
    assert (logits[2][mask[2]] - third[2][mask[2]]).abs().max() > 1e-3
    for row in (1, 2, 3):
        assert torch.equal(logits[row][mask[row]], first[row][mask[row]])
    assert (logits[0][mask[0]] - first[0][mask[0]]).abs().max() > 1e-3


def test_batch_matches_samples_alone(processor, model, video_path):
    conversations = _conversations(video_path)
    batch = _batch(processor, conversations)
    with torch.no_grad():
        logits = model(**batch).logits
        for row, conversation in enumerate(conversations):
            alone_logits = model(**_batch(processor, [conversation])).logits[0]
            valid = batch["attention_mask"][row].bool()
            torch.testing.assert_close(logits[row][valid], alone_logits, atol=2e-5, rtol=1e-4)


def test_geometry_fuses_merged_tokens_only_not_deepstack(processor, model, video_path):
    batch = _batch(processor, _conversations(video_path))
    inner = model.model
    with torch.no_grad():
        plain = inner.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
        fused = inner.get_image_features(
            batch["pixel_values"],
            batch["image_grid_thw"],
            geometry_pixel_values=batch["geometry_pixel_values"],
            geometry_scene_sizes=batch["geometry_scene_sizes"],
            geometry_image_scenes=batch["geometry_image_scenes"],
        )
        videos = inner.get_video_features(
            batch["pixel_values_videos"],
            batch["video_grid_thw"],
            geometry_latents=fused.geometry_latents,
            geometry_video_scenes=batch["geometry_video_scenes"],
        )
        plain_videos = inner.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"])
    assert fused.geometry_latents.shape == (3, 4, 16)  # (S, Q, D)
    for ours, theirs in zip(fused.pooler_output + videos.pooler_output, plain.pooler_output + plain_videos.pooler_output):
        assert ours.shape == theirs.shape and (ours - theirs).abs().max() > 1e-3
    assert len(fused.deepstack_features) == 1  # DeepStack at vision layer 0
    for layer_ours, layer_theirs in zip(fused.deepstack_features + videos.deepstack_features,
                                        plain.deepstack_features + plain_videos.deepstack_features):  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(layer_ours, layer_theirs))


def test_generate_encodes_geometry_once_and_matches_per_sample(processor, model, video_path):
    conversations = [c[:1] for c in _conversations(video_path)]
    kwargs = dict(tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
    batch = processor.apply_chat_template(conversations, processor_kwargs={"padding": True, "padding_side": "left"}, **kwargs)
    scenes_encoded = []
    hook = model.model.geometry_encoder.register_forward_hook(
        lambda module, args, kwargs, output: scenes_encoded.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            tokens = model.generate(**batch, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    finally:
        hook.remove()
    assert sum(scenes_encoded) == 3  # every scene once (images and videos read the same latents), no decode step
    new = tokens[:, batch["input_ids"].shape[1] :]
    for row, conversation in enumerate(conversations):
        alone = processor.apply_chat_template([conversation], **kwargs)
        with torch.no_grad():
            alone_tokens = model.generate(**alone, max_new_tokens=4, do_sample=False, min_new_tokens=4)
        assert torch.equal(new[row], alone_tokens[0, alone["input_ids"].shape[1] :])


def test_train_step_images_video_text_only(processor, model, video_path):
    batch = _batch(processor, _conversations(video_path))
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    try:
        out = model(**batch, labels=labels)
        out.loss.backward()
    finally:
        model.eval()
    assert torch.isfinite(out.loss)
    assert model.model.geometry_fusion.cross_attention.q_proj.weight.grad.abs().sum() > 0
    assert model.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.model.geometry_encoder.parameters())
    model.zero_grad(set_to_none=True)


def test_save_load_auto_classes(saved_dir, model, video_path):
    processor = AutoProcessor.from_pretrained(saved_dir)
    reloaded = AutoModelForImageTextToText.from_pretrained(saved_dir).eval()
    assert type(reloaded) is Spa3VLMQwen3ForConditionalGeneration
    assert type(processor).__name__ == "Spa3VLMQwen3Processor" and processor.geometry_size == 70
    batch = _batch(processor, _conversations(video_path))
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)
    base = AutoModel.from_pretrained(saved_dir)
    assert type(base) is Spa3VLMQwen3Model
    for key, value in base.state_dict().items():
        assert torch.equal(value, reloaded.model.state_dict()[key]), key
    saved = json.loads((saved_dir / "config.json").read_text())
    assert saved["model_type"] == "spa3_vlm_qwen3"
    assert saved["auto_map"]["AutoModelForImageTextToText"] == (
        "modeling_spa3_vlm_qwen3.Spa3VLMQwen3ForConditionalGeneration"
    )
    assert (saved_dir / "fusion.py").is_file()


def test_trust_remote_code_in_fresh_process(saved_dir, model, tmp_path, video_path):
    conversation = _conversations(video_path)[2]  # an image and a video
    conversation[0]["content"][0] = {"type": "image"}  # the script puts the picture back
    random_picture(2).save(tmp_path / "picture.png")
    (tmp_path / "conversation.json").write_text(json.dumps([conversation]))
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({str(saved_dir)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(saved_dir)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(processor).__name__ == "Spa3VLMQwen3Processor" and "modeling_spa3r" not in sys.modules
        conversations = json.load(open("conversation.json"))
        conversations[0][0]["content"][0]["image"] = Image.open("picture.png")
        batch = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            torch.save(model(**batch).logits, "logits.pt")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    processor = AutoProcessor.from_pretrained(saved_dir)
    with torch.no_grad():
        expected = model(**_batch(processor, [_conversations(video_path)[2]])).logits
    assert torch.equal(torch.load(tmp_path / "logits.pt", weights_only=True), expected)


def test_clear_errors(processor, model, video_path):
    batch = dict(_batch(processor, _conversations(video_path)))
    with torch.no_grad():
        swapped = dict(batch, geometry_video_scenes=torch.tensor([2, 1]))
        with pytest.raises(ValueError, match="video 0 fills placeholder tokens of sample 1 .* says scene 2"):
            model(**swapped)
        without = {k: v for k, v in batch.items() if k != "geometry_video_scenes"}
        with pytest.raises(ValueError, match="need geometry_video_scenes"):
            model(**without)
        fewer = dict(batch, geometry_scene_sizes=torch.tensor([[2, 56, 70], [9, 56, 70]]))
        with pytest.raises(ValueError, match="2 geometry scenes given but 3 samples have images or videos"):
            model(**fewer)
        with pytest.raises(ValueError, match="without images or videos"):
            model(input_ids=batch["input_ids"], geometry_pixel_values=batch["geometry_pixel_values"])


def test_pipeline_and_geometry_ablation(saved_dir, processor, model):
    from transformers import pipeline

    frames = [random_picture(seed) for seed in range(3)]
    question = "How many chairs are in this room?"
    pipe = pipeline("image-text-to-text", model=str(saved_dir))
    answer = pipe(images=frames, text=question, max_new_tokens=5, return_full_text=False)[0]["generated_text"]
    inputs = processor(images=frames, text=question, return_tensors="pt")  # a bare question: images go first
    assert inputs["geometry_image_scenes"].tolist() == [0, 0, 0]
    with torch.no_grad():
        tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert answer == processor.decode(tokens[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    # use_geometry=False: the same Qwen3-VL inputs without geometry, so the model runs as its base Qwen3-VL
    processor.use_geometry = False
    try:
        plain = processor(images=frames, text=question, return_tensors="pt")
    finally:
        processor.use_geometry = True
    assert not [key for key in plain if key.startswith("geometry_")]
    assert torch.equal(plain["input_ids"], inputs["input_ids"]) and torch.equal(plain["pixel_values"], inputs["pixel_values"])
    base = build_tiny_qwen3(processor.tokenizer)
    base.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.equal(model(**plain).logits, base(**plain).logits)
        assert not torch.equal(model(**inputs).logits, base(**plain).logits)
