"""The VSI-Bench runner drives Spa3-VLM on Qwen3-VL: frames reach Spa3R as one scene per question, and batching
does not change the answers."""

import json
from pathlib import Path

from accelerate import PartialState

from modeling_spa3r import eval_vsibench as runner
from tests.fixtures_qwen3 import save_tiny_spa3_vlm_qwen3


def _args(model_dir, data_dir, output_dir, *extra):
    return runner.build_parser().parse_args(
        ["--model", str(model_dir), "--data", str(data_dir), "--output-dir", str(output_dir), "--num-frames", "3",
         "--max-new-tokens", "2", "--no-progress", *extra]
    )  # fmt: skip


def test_qwen3_checkpoint_gets_geometry_and_batching_keeps_answers(tmp_path, monkeypatch, vsi_fixture_dir):
    save_tiny_spa3_vlm_qwen3(tmp_path / "spa3_qwen3")
    model, processor = runner.load_model_and_processor(str(tmp_path / "spa3_qwen3"))
    assert type(model).__name__ == "Spa3VLMQwen3ForConditionalGeneration"
    seen = []
    original = type(model).generate

    def recording_generate(self, *a, **kw):
        seen.append((tuple(kw["geometry_pixel_values"].shape), kw["geometry_image_scenes"].tolist()))
        return original(self, *a, **kw)

    monkeypatch.setattr(type(model), "generate", recording_generate)
    batched = runner.run(_args(tmp_path / "spa3_qwen3", vsi_fixture_dir, tmp_path / "b2", "--batch-size", "2"),
                         model=model, processor=processor, state=PartialState())  # fmt: skip
    # 5 calls of 2 questions × 3 frames: each question's frames are the views of its own scene
    assert len(seen) == 5 and all(shape == (6, 3, 70, 70) and scenes == [0, 0, 0, 1, 1, 1] for shape, scenes in seen)
    assert batched["num_questions"] == 10
    runner.run(_args(tmp_path / "spa3_qwen3", vsi_fixture_dir, tmp_path / "b1"),
               model=model, processor=processor, state=PartialState())  # fmt: skip

    def answers(folder):
        lines = Path(folder, "predictions.jsonl").read_text().splitlines()
        return {record["id"]: record["output"] for record in map(json.loads, lines)}

    assert answers(tmp_path / "b2") == answers(tmp_path / "b1") and len(answers(tmp_path / "b1")) == 10
