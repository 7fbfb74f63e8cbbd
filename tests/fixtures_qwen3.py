"""Offline builders of a tiny Spa3-VLM on Qwen3-VL: tiny Qwen3-VL (patch 16, DeepStack at layer 0) + tiny Spa3R,
the package's byte-level tokenizer and a Spa3VLMQwen3Processor.

Geometry views are 70 pixels wide (5 patches of 14); Qwen3-VL sees them trimmed to multiples of 32, so a 64×48
picture becomes a 70×56 Spa3R view and a 64×32 Qwen3-VL image = 2 merged tokens.
"""

from pathlib import Path

import torch

from modeling_spa3r.small_models import CHAT_TEMPLATE, build_tokenizer, small_qwen3_config

from .fixtures_vlm import tiny_vlm_spa3r_config

GEOMETRY_SIZE = 70


def tiny_qwen3_config(tokenizer):
    return small_qwen3_config(tokenizer, hidden_size=32, num_heads=4, vision_hidden_size=16, vision_depth=2)


def tiny_spa3_vlm_qwen3_config(tokenizer):
    from modeling_spa3r.configuration_spa3_vlm_qwen3 import Spa3VLMQwen3Config

    return Spa3VLMQwen3Config.from_qwen_config(tiny_qwen3_config(tokenizer), geometry_config=tiny_vlm_spa3r_config())


def build_spa3_vlm_qwen3_processor(tokenizer=None):
    from transformers import Qwen2VLImageProcessor, Qwen3VLVideoProcessor

    from modeling_spa3r.processing_spa3_vlm_qwen3 import Spa3VLMQwen3Processor

    image_processor = Qwen2VLImageProcessor(
        min_pixels=32 * 32, max_pixels=64 * 64 * 4, patch_size=16, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64 * 16},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        cap_pixels_per_frame=True,
    )
    return Spa3VLMQwen3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
        geometry_size=GEOMETRY_SIZE,
        num_frames=4,
        min_frames=2,
        max_frames=8,
    )


def _set_generation_tokens(model, tokenizer):
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return model


def build_tiny_qwen3(tokenizer, seed: int = 0):
    """A tiny random stock `Qwen3VLForConditionalGeneration` (the base model of the tests)."""
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    return _set_generation_tokens(Qwen3VLForConditionalGeneration(tiny_qwen3_config(tokenizer)).eval(), tokenizer)


def build_tiny_spa3_vlm_qwen3(tokenizer, seed: int = 0, randomize_adaptor: bool = True):
    """A tiny random Spa3-VLM on Qwen3-VL; with `randomize_adaptor` the zero-initialised adaptor output layer gets
    random weights so that the geometry changes the logits."""
    from modeling_spa3r.modeling_spa3_vlm_qwen3 import Spa3VLMQwen3ForConditionalGeneration

    torch.manual_seed(seed)
    model = Spa3VLMQwen3ForConditionalGeneration(tiny_spa3_vlm_qwen3_config(tokenizer)).eval()
    if randomize_adaptor:
        generator = torch.Generator().manual_seed(seed + 1)
        up_proj = model.model.geometry_fusion.adaptor.up_proj
        with torch.no_grad():
            up_proj.weight.copy_(torch.randn(up_proj.weight.shape, generator=generator))
            up_proj.bias.copy_(torch.randn(up_proj.bias.shape, generator=generator))
    return _set_generation_tokens(model, tokenizer)


def save_tiny_spa3_vlm_qwen3(directory: Path) -> Path:
    processor = build_spa3_vlm_qwen3_processor()
    build_tiny_spa3_vlm_qwen3(processor.tokenizer).save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


def save_tiny_qwen3_base(directory: Path) -> Path:
    """A stock tiny Qwen3-VL folder (model + `Qwen3VLProcessor` with TRL's Qwen3-VL chat template), as a Hub
    Qwen3-VL checkpoint is laid out: the starting point of `from_qwen_and_spa3r` / `sft.py --qwen_model_path`."""
    import trl
    from transformers import Qwen3VLProcessor

    spa3_processor = build_spa3_vlm_qwen3_processor()
    processor = Qwen3VLProcessor(
        image_processor=spa3_processor.image_processor,
        tokenizer=spa3_processor.tokenizer,
        video_processor=spa3_processor.video_processor,
        chat_template=(Path(trl.__file__).parent / "chat_templates" / "qwen3_vl.jinja").read_text(),
    )
    build_tiny_qwen3(processor.tokenizer).save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


def save_tiny_spa3r(directory: Path, seed: int = 0) -> Path:
    from modeling_spa3r.modeling_spa3r import Spa3RModel

    torch.manual_seed(seed)
    Spa3RModel(tiny_vlm_spa3r_config()).save_pretrained(directory)
    return Path(directory)
