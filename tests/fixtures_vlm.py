"""Offline builders of a tiny Spa3-VLM: tiny Qwen2.5-VL + tiny Spa3R config, byte-level tokenizer, processor.

Geometry views are 56 pixels wide (4 patches of 14); Qwen sees them trimmed to multiples of 28, so a 64×48 picture
becomes a 56×42 Spa3R view and a 56×28 Qwen image = 2 merged image tokens.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_spa3r.small_models import CHAT_TEMPLATE, build_tokenizer, small_qwen_config

from .fixtures_spa3r import tiny_vggt_config

GEOMETRY_SIZE = 56


def tiny_vlm_spa3r_config():
    from modeling_spa3r.configuration_spa3r import Spa3RConfig

    vggt = tiny_vggt_config(
        hidden_size=16,
        num_hidden_layers=1,
        global_qk_norm="rmsnorm",
        dpt_features=8,
        dpt_out_channels=[8, 8, 8, 8],
        dpt_intermediate_layers=[0, 0, 0, 0],
    )
    return Spa3RConfig(
        vggt_config=vggt, hidden_size=16, num_attention_heads=2, num_queries=4, num_encoder_layers=1, num_decoder_layers=1
    )


def tiny_spa3_vlm_config(tokenizer):
    from modeling_spa3r.configuration_spa3_vlm import Spa3VLMConfig

    qwen = small_qwen_config(
        tokenizer, hidden_size=32, num_heads=4, vision_hidden_size=16, window_size=56, tie_word_embeddings=False
    )
    return Spa3VLMConfig.from_qwen_config(qwen, geometry_config=tiny_vlm_spa3r_config())


def build_spa3_vlm_processor(tokenizer=None):
    from transformers import Qwen2VLImageProcessor

    from modeling_spa3r.processing_spa3_vlm import Spa3VLMProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56 * 4, patch_size=14, merge_size=2)
    return Spa3VLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        chat_template=CHAT_TEMPLATE,
        geometry_size=GEOMETRY_SIZE,
        num_frames=3,
        min_frames=2,
        max_frames=6,
    )


def build_tiny_spa3_vlm(tokenizer, seed: int = 0, randomize_adaptor: bool = True):
    """A tiny random Spa3-VLM; with `randomize_adaptor` the zero-initialised adaptor output layer gets random weights
    so that the geometry actually changes the logits."""
    from modeling_spa3r.modeling_spa3_vlm import Spa3VLMForConditionalGeneration

    torch.manual_seed(seed)
    model = Spa3VLMForConditionalGeneration(tiny_spa3_vlm_config(tokenizer)).eval()
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if randomize_adaptor:
        generator = torch.Generator().manual_seed(seed + 1)
        up_proj = model.model.geometry_fusion.adaptor.up_proj
        with torch.no_grad():
            up_proj.weight.copy_(torch.randn(up_proj.weight.shape, generator=generator))
            up_proj.bias.copy_(torch.randn(up_proj.bias.shape, generator=generator))
    return model


def random_picture(seed: int, width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_video(path: Path, num_frames: int = 8, fps: int = 4, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    """A small mp4 (PyAV, mpeg4) of random frames."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(num_frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_frame_folder(path: Path, num_frames: int = 5, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for index in range(num_frames):
        random_picture(seed + index).save(path / f"frame_{index}.png")
    return path
