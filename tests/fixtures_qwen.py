"""Offline builders for a tiny random Qwen2.5-VL checkpoint and tiny VSI-format benchmark data.

Nothing here touches the Hub: the tokenizer is the package's byte-level BPE with the Qwen special
tokens and a Qwen-style chat template (`modeling_spa3r.small_models`), the image processor is the PIL variant of
``Qwen2VLImageProcessor`` sized so that every 56x56 frame becomes 4 visual tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from modeling_spa3r.small_models import CHAT_TEMPLATE, build_tokenizer, small_qwen_config

FRAME_SIZE = 56
"""Side of the tiny frames: 56x56 -> 4x4 patches of 14 -> 4 merged visual tokens per frame."""


def build_qwen_processor():
    """A ``Qwen2_5_VLProcessor`` (PIL image processor) for tiny frames."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen2VLVideoProcessor

    pixels = FRAME_SIZE * FRAME_SIZE
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=pixels, max_pixels=pixels, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_qwen_model(tokenizer, seed: int = 0, answer_tokens: str | None = "ABCD0123456789"):
    """A tiny random ``Qwen2_5_VLForConditionalGeneration`` matching ``tokenizer``.

    With ``answer_tokens`` the LM head rows of all other tokens are zeroed (except the end-of-turn
    token), so greedy answers are short strings of letters/digits that the scorer can parse.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = small_qwen_config(
        tokenizer, hidden_size=32, num_heads=4, vision_depth=2, window_size=56, tie_word_embeddings=False
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    if answer_tokens is not None:
        keep = [ids(token) for token in answer_tokens] + [ids("<|im_end|>")]
        with torch.no_grad():
            mask = torch.zeros(config.text_config.vocab_size, dtype=torch.bool)
            mask[keep] = True
            model.lm_head.weight[~mask] = 0.0
    return model


def save_tiny_qwen(directory: Path, seed: int = 0) -> Path:
    """Save the tiny model and its processor to ``directory`` (loadable with the Auto classes)."""
    processor = build_qwen_processor()
    model = build_tiny_qwen_model(processor.tokenizer, seed=seed)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return Path(directory)


def write_video(path: Path, num_frames: int, seed: int, size: int = FRAME_SIZE, fps: int = 10) -> Path:
    """Write a small H.264 mp4 whose frame ``i`` is a flat colour derived from ``seed`` and ``i``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(num_frames):
            colour = (base + 37 * index) % 256
            array = np.broadcast_to(colour.astype(np.uint8), (size, size, 3)).copy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


VSI_FIXTURE_ROWS = [
    {"id": 1, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_counting",
     "question": "How many chair(s) are in this room?", "ground_truth": "4", "options": None},
    {"id": 2, "dataset": "scannet", "scene_name": "scene0011_00", "question_type": "object_rel_distance",
     "question": "Which object is closest to the bed?", "ground_truth": "B",
     "options": ["A. sink", "B. chair", "C. door", "D. tv"]},
    {"id": 3, "dataset": "scannetpp", "scene_name": "0a5c013435", "question_type": "object_abs_distance",
     "question": "What is the distance between the sofa and the tv (in meters)?", "ground_truth": "2.5",
     "options": None},
    {"id": 4, "dataset": "scannet", "scene_name": "scene0011_00", "question_type": "object_rel_direction_easy",
     "question": "Is the door to the left or the right of the bed?", "ground_truth": "A",
     "options": ["A. left", "B. right"]},
    {"id": 5, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_rel_direction_medium",
     "question": "Is the tv to the left, right or back?", "ground_truth": "C",
     "options": ["A. back", "B. left", "C. right"]},
    {"id": 6, "dataset": "scannetpp", "scene_name": "0a5c013435", "question_type": "object_rel_direction_hard",
     "question": "Where is the lamp?", "ground_truth": "D",
     "options": ["A. front-left", "B. back-right", "C. back-left", "D. front-right"]},
    {"id": 7, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "route_planning",
     "question": "How do you get from the bed to the door?", "ground_truth": "A",
     "options": ["A. Turn Left, Turn Right", "B. Turn Back, Turn Left"]},
    {"id": 8, "dataset": "scannet", "scene_name": "scene0011_00", "question_type": "room_size_estimation",
     "question": "What is the size of this room (in square meters)?", "ground_truth": "3",
     "options": None},
    {"id": 9, "dataset": "scannetpp", "scene_name": "0a5c013435", "question_type": "obj_appearance_order",
     "question": "In which order do these objects first appear?", "ground_truth": "B",
     "options": ["A. chair, table", "B. table, chair", "C. sofa, tv", "D. tv, sofa"]},
    {"id": 10, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_size_estimation",
     "question": "What is the length of the longest dimension of the table (in centimeters)?",
     "ground_truth": "7", "options": None},
]  # fmt: skip
"""Ten questions covering every question type, over three scenes (one per source dataset)."""


def write_vsi_fixture(root: Path, num_frames: int = 6) -> Path:
    """Write ``root/test.jsonl`` plus one mp4 per scene under ``root/<dataset>/<scene>.mp4``."""
    root.mkdir(parents=True, exist_ok=True)
    scenes = sorted({(row["dataset"], row["scene_name"]) for row in VSI_FIXTURE_ROWS})
    for seed, (dataset, scene) in enumerate(scenes):
        write_video(root / dataset / f"{scene}.mp4", num_frames=num_frames, seed=seed)
    with open(root / "test.jsonl", "w") as handle:
        for row in VSI_FIXTURE_ROWS:
            handle.write(json.dumps(row) + "\n")
    return root
