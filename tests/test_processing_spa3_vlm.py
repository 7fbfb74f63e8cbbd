"""Spa3-VLM processor: reference geometry views, Qwen images, video frames, chat template, save/load, errors."""

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

import modeling_spa3r  # noqa: F401  (registers the Auto classes)
from modeling_spa3r.processing_spa3_vlm import Spa3VLMProcessor, geometry_view, sample_frame_indices

from .fixtures_vlm import random_picture, write_frame_folder, write_video


def test_geometry_view_reference_sizes():
    assert tuple(geometry_view(random_picture(0, 640, 480)).shape) == (3, 392, 518)  # 480·518/640 = 388.5 → 392
    assert tuple(geometry_view(random_picture(0, 300, 700)).shape) == (3, 518, 518)  # taller → centre crop
    white = geometry_view(Image.new("RGB", (100, 50), (255, 255, 255)))  # 50·518/100/14 = 18.5 → round → 18
    assert white.shape == (3, 252, 518) and torch.all(white == 1.0)


def test_frame_sampling_policies():
    assert sample_frame_indices(10, num_frames=4) == [0, 3, 6, 9]
    assert sample_frame_indices(3, num_frames=32) == [0, 1, 2]  # all frames when fewer
    assert sample_frame_indices(100, fps=0.5, source_fps=10, min_frames=4, max_frames=8) == [0, 24, 49, 74, 99]
    assert len(sample_frame_indices(10, fps=0.5, source_fps=10, min_frames=4, max_frames=8)) == 4
    assert len(sample_frame_indices(10_000, fps=0.5, source_fps=10, min_frames=4, max_frames=8)) == 8
    with pytest.raises(ValueError, match="exceeds the configured maximum"):
        sample_frame_indices(10, num_frames=40, max_frames=32)


def test_images_give_qwen_inputs_and_views(spa3_vlm_processor):
    processor = spa3_vlm_processor
    text = ["<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>two", "plain text"]
    out = processor(images=[random_picture(0), random_picture(1)], text=text, padding=True, return_tensors="pt")
    # 64x48 → view 56x42 → Qwen image 56x28 = 2x4 patches = 2 merged tokens
    assert out["image_grid_thw"].tolist() == [[1, 2, 4], [1, 2, 4]]
    assert out["geometry_scene_sizes"].tolist() == [[2, 42, 56]]
    assert out["geometry_pixel_values"].shape == (2, 3, 42, 56)
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (out["input_ids"] == image_id).sum(-1).tolist() == [4, 0]
    assert torch.equal(out["mm_token_type_ids"], (out["input_ids"] == image_id).long())
    # the Qwen pixels are the view's centre 28 rows, normalised with the image processor's mean/std
    view = geometry_view(random_picture(0), 56)[:, 7:35]
    mean = torch.tensor(processor.image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(3, 1, 1)
    first_patch = out["pixel_values"][0].view(3, 2, 14, 14)[:, 0]
    torch.testing.assert_close(first_patch, ((view - mean) / std)[:, :14, :14], atol=1e-5, rtol=1e-5)


def test_video_file_and_frame_folder(spa3_vlm_processor, tmp_path):
    video = write_video(tmp_path / "v.mp4", num_frames=8, fps=4)
    folder = write_frame_folder(tmp_path / "frames", num_frames=5)
    conversation = [
        [{"role": "user", "content": [{"type": "video", "video": str(video)}, {"type": "text", "text": "a"}]}],
        [{"role": "user", "content": [{"type": "video", "video": str(folder)}, {"type": "text", "text": "b"}]}],
    ]
    kwargs = dict(tokenize=True, return_dict=True, return_tensors="pt")
    out = spa3_vlm_processor.apply_chat_template(conversation, processor_kwargs={"padding": True}, **kwargs)
    assert out["geometry_scene_sizes"].tolist() == [[3, 42, 56], [3, 42, 56]]  # num_frames=3 uniform
    text = spa3_vlm_processor.tokenizer.decode(out["input_ids"][0])
    assert text.count("<|vision_start|>") == 3 and "<|video_pad|>" not in text
    # fps sampling: 8 frames at 4 fps = 2 s; 0.5 fps → 1 frame, raised to min_frames = 2
    out = spa3_vlm_processor.apply_chat_template(conversation[:1], processor_kwargs={"fps": 0.5}, **kwargs)
    assert out["geometry_scene_sizes"].tolist() == [[2, 42, 56]]
    # the folder's frames 0, 2, 4 are the views, in order
    expected = torch.stack([geometry_view(random_picture(i), 56) for i in (0, 2, 4)])
    out = spa3_vlm_processor.apply_chat_template(conversation[1:], **kwargs)
    assert torch.equal(out["geometry_pixel_values"], expected)


def test_save_load_and_auto_processor(spa3_vlm_processor, tmp_path):
    spa3_vlm_processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is Spa3VLMProcessor
    assert (reloaded.geometry_size, reloaded.num_frames, reloaded.max_frames) == (56, 3, 6)
    text = "<|vision_start|><|image_pad|><|vision_end|>hi"
    a = spa3_vlm_processor(images=[random_picture(3)], text=text, return_tensors="pt")
    b = reloaded(images=[random_picture(3)], text=text, return_tensors="pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_clear_errors(spa3_vlm_processor, tmp_path):
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    with pytest.raises(ValueError, match="frames of different sizes within sample 0"):
        spa3_vlm_processor(images=[random_picture(0), random_picture(1, 64, 64)], text=image * 2)
    with pytest.raises(ValueError, match="more than max_frames=6"):
        spa3_vlm_processor(images=[random_picture(i) for i in range(7)], text=image * 7)
    with pytest.raises(ValueError, match="2 image\\(s\\) passed but the text has 1"):
        spa3_vlm_processor(images=[random_picture(0), random_picture(1)], text=image)
    video = "<|vision_start|><|video_pad|><|vision_end|>"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="contains no images"):
        spa3_vlm_processor(videos=[str(empty)], text=video)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot read video"):
        spa3_vlm_processor(videos=[str(broken)], text=video)
    with pytest.raises(ValueError, match="not divisible by 14"):
        Spa3VLMProcessor(spa3_vlm_processor.image_processor, spa3_vlm_processor.tokenizer, geometry_size=500)


def test_geometry_can_be_switched_off(spa3_vlm_processor, tmp_path):
    """use_geometry=False: the same Qwen inputs, no Spa3R inputs, and the setting survives save/load."""
    pictures = [random_picture(seed) for seed in range(2)]
    text = "<|vision_start|><|image_pad|><|vision_end|>" * 2 + "Where is the chair?"
    with_geometry = spa3_vlm_processor(images=pictures, text=text, return_tensors="pt")
    spa3_vlm_processor.save_pretrained(tmp_path)
    ablation = Spa3VLMProcessor.from_pretrained(tmp_path, use_geometry=False)
    ablation.save_pretrained(tmp_path / "ablation")
    ablation = AutoProcessor.from_pretrained(tmp_path / "ablation")
    assert ablation.use_geometry is False
    without = ablation(images=pictures, text=text, return_tensors="pt")
    assert "geometry_pixel_values" in with_geometry and "geometry_pixel_values" not in without
    for key in ("input_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids"):
        torch.testing.assert_close(without[key], with_geometry[key], atol=0, rtol=0)
