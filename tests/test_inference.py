"""`spa3r ask` and `spa3r encode`: answers equal direct greedy generation, latents equal the encoders', errors."""

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

import modeling_spa3r  # noqa: F401  (registers the Auto classes)
from modeling_spa3r.inference import ask_main, encode_main, load_frames
from modeling_spa3r.modeling_spa3r import Spa3RModel
from modeling_spa3r.processing_spa3_vlm import geometry_view

from .fixtures_vlm import write_video

QUESTION = "How many chairs are in the room?"


@pytest.fixture(scope="module")
def vlm(spa3_vlm_dir):
    return AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).eval(), AutoProcessor.from_pretrained(spa3_vlm_dir)


def _reference_answer(vlm, images, question, max_new_tokens):
    """Greedy generation with the placeholders written by hand (not through the chat template)."""
    model, processor = vlm
    placeholders = "<|vision_start|><|image_pad|><|vision_end|>" * len(images)
    text = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{placeholders}{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    inputs = processor(images=images, text=text, max_frames=len(images), return_tensors="pt")
    assert inputs["geometry_pixel_values"].shape[0] == len(images)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _ask_json(capsys, argv):
    assert ask_main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_ask_images_equals_greedy_generate(spa3_vlm_dir, scene_pictures, vlm, capsys):
    images = [Image.open(p).convert("RGB") for p in scene_pictures[:3]]
    expected = _reference_answer(vlm, images, QUESTION, 6)
    out = _ask_json(capsys, [str(spa3_vlm_dir), QUESTION, "--images", *map(str, scene_pictures[:3]), "--max-new-tokens", "6", "--json"])
    assert out == {"question": QUESTION, "answer": expected, "num_frames": 3}
    assert expected  # the tiny model does produce tokens
    # the geometry reaches the model: the same Qwen inputs without the Spa3R views give other next-token logits
    model, processor = vlm
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}] * 3 + [{"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = processor(images=images, text=text, return_tensors="pt")
    qwen_only = {k: v for k, v in inputs.items() if not k.startswith("geometry_")}
    with torch.no_grad():
        with_geometry, without = model(**inputs).logits[0, -1], model(**qwen_only).logits[0, -1]
    assert (with_geometry - without).abs().max() > 1e-3

def test_ask_video_equals_its_frames_as_images(spa3_vlm_dir, vlm, tmp_path, capsys):
    video = write_video(tmp_path / "room.mp4", num_frames=9, fps=3)
    frames = load_frames(video=video, num_frames=7)  # more than the processor's max_frames (6)
    assert len(frames) == 7
    frame_paths = []
    for index, frame in enumerate(frames):
        frame.save(tmp_path / f"f{index}.png")
        frame_paths.append(str(tmp_path / f"f{index}.png"))
    argv = [str(spa3_vlm_dir), QUESTION, "--max-new-tokens", "5", "--json"]
    from_video = _ask_json(capsys, argv + ["--video", str(video), "--num-frames", "7"])
    from_images = _ask_json(capsys, argv + ["--images", *frame_paths])
    assert from_video == from_images
    assert from_video["answer"] == _reference_answer(vlm, frames, QUESTION, 5)


def test_ask_errors(spa3_vlm_dir, spa3r_pretraining_dir, scene_pictures, capsys, tmp_path):
    assert ask_main([str(spa3_vlm_dir), QUESTION, "--images", str(tmp_path / "missing.png")]) == 2
    assert "missing.png does not exist" in capsys.readouterr().err
    assert ask_main([str(spa3r_pretraining_dir), QUESTION, "--images", str(scene_pictures[0])]) == 2
    assert "not a Spa3-VLM one" in capsys.readouterr().err
    assert ask_main([str(spa3_vlm_dir), "  ", "--images", str(scene_pictures[0])]) == 2
    assert "question is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --video and --images together
        ask_main([str(spa3_vlm_dir), QUESTION, "--video", "v.mp4", "--images", "a.png"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_encode_spa3r_checkpoint(spa3r_pretraining_dir, scene_pictures, tmp_path, capsys):
    out = tmp_path / "latents.safetensors"
    assert encode_main([str(spa3r_pretraining_dir), "--images", *map(str, scene_pictures), "--out", str(out)]) == 0
    assert "wrote latents (1, 8, 32) of 4 views" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        latents, metadata = f.get_tensor("latents"), f.metadata()
    views = torch.stack([geometry_view(Image.open(p), 56) for p in scene_pictures])[None]  # 64x48 → 56x42
    encoder = Spa3RModel.from_pretrained(spa3r_pretraining_dir).eval()
    with torch.no_grad():
        expected = encoder(pixel_values=views).latents
    torch.testing.assert_close(latents, expected, rtol=0, atol=0)
    assert metadata == {
        "format": "spa3r-latents/v1",
        "model": str(spa3r_pretraining_dir),
        "sources": json.dumps(list(map(str, scene_pictures))),
        "num_views": "4",
        "view_size": "42x56",
        "num_queries": "8",
        "hidden_size": "32",
        "dtype": "float32",
    }


def test_encode_spa3_vlm_uses_its_geometry_encoder(spa3_vlm_dir, vlm, scene_pictures, tmp_path):
    out = tmp_path / "vlm_latents.safetensors"
    folder = scene_pictures[0].parent
    assert encode_main([str(spa3_vlm_dir), "--images", str(folder), "--out", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        latents = f.get_tensor("latents")
    # the same latents as the VLM computes from its processor's geometry inputs while answering
    model, processor = vlm
    images = [Image.open(p).convert("RGB") for p in scene_pictures]
    text = "<|vision_start|><|image_pad|><|vision_end|>" * 4 + "q"
    inputs = processor(images=images, text=text, return_tensors="pt")
    with torch.no_grad():
        features = model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"], geometry_pixel_values=inputs["geometry_pixel_values"],
            geometry_scene_sizes=inputs["geometry_scene_sizes"],
        )
    assert latents.shape == (1, 4, 16)
    torch.testing.assert_close(latents, features.geometry_latents, rtol=1e-6, atol=1e-6)


def test_encode_errors(spa3r_pretraining_dir, scene_pictures, tmp_path, capsys):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (160, 48)).save(wide)
    argv = [str(spa3r_pretraining_dir), "--out", str(tmp_path / "x.safetensors"), "--images"]
    assert encode_main(argv + [str(scene_pictures[0]), str(wide)]) == 2
    assert "different sizes after resizing to width 56" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        encode_main([str(spa3r_pretraining_dir), "--images", str(wide), "--out", str(tmp_path / "x.pt")])
    assert "--out must be a .safetensors file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        encode_main(argv[:-1] + ["--size", "50", "--images", str(wide)])
    assert "multiple of 14" in capsys.readouterr().err
