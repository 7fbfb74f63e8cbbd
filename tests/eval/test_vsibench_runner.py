"""End-to-end tests of the VSI-Bench runner with a tiny offline Qwen2.5-VL and tiny mp4 videos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import PartialState

from modeling_spa3r import eval_vsibench as runner
from modeling_spa3r import vsibench
from tests.fixtures_qwen import VSI_FIXTURE_ROWS, write_video

REPO = Path(__file__).resolve().parents[2]


class Interrupted(RuntimeError):
    """Simulated crash of a long run."""


@pytest.fixture(scope="module")
def tiny_qwen(tiny_qwen_dir):
    return runner.load_model_and_processor(str(tiny_qwen_dir))


def _args(model_dir, data_dir, output_dir, *extra):
    return runner.build_parser().parse_args(
        [
            "--model", str(model_dir), "--data", str(data_dir), "--output-dir", str(output_dir),
            "--num-frames", "4", "--max-new-tokens", "1", "--no-progress", *extra,
        ]
    )  # fmt: skip


def _run_counting(monkeypatch, model, processor, args, fail_after=None):
    """Run the evaluation, counting generate() calls and the questions they answered."""
    calls = {"generate": 0, "questions": 0}
    original = type(model).generate

    def counting_generate(self, *a, **kw):
        if fail_after is not None and calls["questions"] >= fail_after:
            raise Interrupted(f"simulated crash after {calls['questions']} questions")
        calls["generate"] += 1
        calls["questions"] += kw["input_ids"].shape[0]
        return original(self, *a, **kw)

    monkeypatch.setattr(type(model), "generate", counting_generate)
    try:
        summary = runner.run(args, model=model, processor=processor, state=PartialState())
    finally:
        monkeypatch.setattr(type(model), "generate", original)
    return summary, calls


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --- frames ----------------------------------------------------------------------------------------


def test_frame_indices_follow_floor_linspace():
    expected = np.floor(np.linspace(0, 1234 - 1, 32)).astype(int).tolist()
    assert runner.sample_frame_indices(1234, 32) == expected
    assert runner.sample_frame_indices(100, 4) == [0, 33, 66, 99]
    assert runner.sample_frame_indices(7, 32) == list(range(7))
    assert runner.sample_frame_indices(32, 32) == list(range(32))
    assert runner.sample_frame_indices(9, 1) == [0]
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        runner.sample_frame_indices(9, 0)


def _mean_colour(image):
    return np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0)


def test_load_frames_from_mp4_picks_the_sampled_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=10, seed=3)
    frames = runner.load_frames(path, 4)
    assert len(frames) == 4 and all(f.size == (56, 56) and f.mode == "RGB" for f in frames)
    base = np.random.default_rng(3).integers(0, 256, size=3)
    for frame, index in zip(frames, [0, 3, 6, 9]):
        np.testing.assert_allclose(_mean_colour(frame), (base + 37 * index) % 256, atol=6)
    assert len(runner.load_frames(path, 32)) == 10


def test_load_frames_from_folder_uses_natural_order(tmp_path):
    from PIL import Image

    folder = tmp_path / "scene"
    folder.mkdir()
    for index in range(12):
        Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(folder / f"frame_{index}.png")
    frames = runner.load_frames(folder, 4)
    assert [int(_mean_colour(f)[0]) for f in frames] == [0, 60, 140, 220]  # indices 0, 3, 7, 11


def test_missing_video_error_names_the_path(tmp_path, vsi_fixture_dir, tiny_qwen_dir):
    args = _args(tiny_qwen_dir, vsi_fixture_dir / "test.jsonl", tmp_path / "out", "--video-root", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "arkitscenes" / "41069025.mp4")):
        runner.run(args, model=object(), processor=object(), state=PartialState())
    assert runner.main([*map(str, ["--model", tiny_qwen_dir, "--data", vsi_fixture_dir / "test.jsonl", "--output-dir",
                                   tmp_path / "o2", "--video-root", tmp_path])]) == 2  # fmt: skip


# --- data ------------------------------------------------------------------------------------------


def test_load_questions_jsonl_parquet_and_debiased(tmp_path, vsi_fixture_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from_dir = runner.load_questions(vsi_fixture_dir)
    assert [q["id"] for q in from_dir] == list(range(1, 11))
    rows = [{**row, "pruned": row["id"] % 3 == 0} for row in VSI_FIXTURE_ROWS]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    full = runner.load_questions(tmp_path)
    assert [q["options"] for q in full] == [row["options"] for row in VSI_FIXTURE_ROWS]
    assert [q["id"] for q in runner.load_questions(tmp_path, debiased=True)] == [1, 2, 4, 5, 7, 8, 10]
    with pytest.raises(ValueError, match="no 'pruned' column"):
        runner.load_questions(vsi_fixture_dir, debiased=True)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ground_truth": "0"}, r"question id 1 \(object_counting\): field 'ground_truth' must be a finite number > 0"),
        ({"question_type": "counting"}, "unknown question_type 'counting'"),
        ({"question": None}, r"lacks field\(s\) question"),
        ({"dataset": None}, "needs 'dataset' and 'scene_name'"),
    ],
)
def test_bad_rows_fail_before_inference(tmp_path, change, message):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({**VSI_FIXTURE_ROWS[0], **change}) + "\n")
    with pytest.raises(ValueError, match=message):
        runner.load_questions(path)


def test_bad_mca_and_duplicates(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({**VSI_FIXTURE_ROWS[1], "ground_truth": "E"}) + "\n")
    with pytest.raises(ValueError, match="'E' is not one of the option letters"):
        runner.load_questions(path)
    path.write_text((json.dumps(VSI_FIXTURE_ROWS[0]) + "\n") * 2)
    with pytest.raises(ValueError, match="duplicate question id 1"):
        runner.load_questions(path)


def test_selection(vsi_fixture_dir):
    questions = runner.load_questions(vsi_fixture_dir)
    chosen = runner.select_questions(questions, ["object_rel_direction", "route_planning"])
    assert [q["id"] for q in chosen] == [4, 5, 6, 7]
    assert [q["id"] for q in runner.select_questions(questions, ["object_counting", "route_planning"], 1)] == [1]
    with pytest.raises(ValueError, match="contains object_rel_direction_easy but not object_rel_direction_hard"):
        runner.select_questions(questions, limit=4)
    with pytest.raises(ValueError, match="unknown type 'counting'"):
        runner.select_questions(questions, ["counting"])


# --- runs ------------------------------------------------------------------------------------------


def test_resume_after_crash_matches_uninterrupted_run(tmp_path, monkeypatch, tiny_qwen, tiny_qwen_dir, vsi_fixture_dir, capsys):
    model, processor = tiny_qwen
    reference, calls = _run_counting(
        monkeypatch, model, processor, _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "ref", "--batch-size", "2")
    )
    assert calls == {"generate": 5, "questions": 10}
    reference_table = capsys.readouterr().out

    out = tmp_path / "resumed"
    args = _args(tiny_qwen_dir, vsi_fixture_dir, out, "--batch-size", "2")
    with pytest.raises(Interrupted):
        _run_counting(monkeypatch, model, processor, args, fail_after=4)
    partial = _lines(out / "predictions.jsonl")
    assert [r["id"] for r in partial] == [1, 2, 3, 4]
    assert not (out / "results.json").exists()
    with open(out / "predictions.jsonl", "a") as handle:  # a line cut short by the crash
        handle.write('{"id": 5, "question_type": "object_rel_dir')

    resumed, calls = _run_counting(monkeypatch, model, processor, args)
    assert calls == {"generate": 3, "questions": 6}  # only the six unanswered questions
    assert resumed["results"] == reference["results"]
    assert resumed["table"].splitlines()[1:] == reference["table"].splitlines()[1:]  # line 0: title
    assert capsys.readouterr().out.splitlines()[1:] == reference_table.splitlines()[1:]
    records = _lines(out / "predictions.jsonl")
    assert sorted(r["id"] for r in records) == list(range(1, 11))
    assert records == _lines(tmp_path / "ref" / "predictions.jsonl")

    # Every record carries the official score of its raw output; a third run computes nothing.
    for record, row in zip(records, VSI_FIXTURE_ROWS):
        assert record["prompt"] == vsibench.build_prompt(row["question"], row["question_type"], row["options"])
        assert record["score"] == vsibench.score(record["output"], row["ground_truth"], row["question_type"])
        assert record["num_frames"] == 4
    _, calls = _run_counting(monkeypatch, model, processor, args)
    assert calls == {"generate": 0, "questions": 0}
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"] == reference["results"] and saved["num_questions"] == 10
    assert saved["question_type_counts"]["object_rel_direction_hard"] == 1
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batching_does_not_change_answers(tmp_path, monkeypatch, tiny_qwen, tiny_qwen_dir, vsi_fixture_dir):
    model, processor = tiny_qwen
    one, _ = _run_counting(monkeypatch, model, processor, _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "a", "--max-new-tokens", "3"))
    four, calls = _run_counting(
        monkeypatch, model, processor,
        _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "b", "--batch-size", "4", "--max-new-tokens", "3"),
    )  # fmt: skip
    assert calls == {"generate": 3, "questions": 10}
    assert [r["output"] for r in _lines(tmp_path / "a" / "predictions.jsonl")] == [
        r["output"] for r in _lines(tmp_path / "b" / "predictions.jsonl")
    ]
    assert one["results"] == four["results"]


def test_changed_settings_refuse_to_mix_answers(tmp_path, monkeypatch, tiny_qwen, tiny_qwen_dir, vsi_fixture_dir):
    model, processor = tiny_qwen
    args = _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path, "--question-types", "route_planning")
    _run_counting(monkeypatch, model, processor, args)
    args.num_frames = 8
    with pytest.raises(ValueError, match="num_frames: 4 on disk vs 8 now"):
        runner.run(args, model=model, processor=processor, state=PartialState())


def test_retrained_weights_in_the_same_folder_refuse_the_old_answers(tmp_path, monkeypatch, tiny_qwen, tiny_qwen_dir, vsi_fixture_dir):
    """A model retrained into the same folder must not be scored with the previous model's answers."""
    import shutil

    model, processor = tiny_qwen
    folder = tmp_path / "model"
    shutil.copytree(tiny_qwen_dir, folder)
    args = _args(folder, vsi_fixture_dir, tmp_path / "out", "--question-types", "route_planning")
    _run_counting(monkeypatch, model, processor, args)
    recorded = json.loads((tmp_path / "out" / "run_config.json").read_text())["weights"]
    assert recorded == runner.weights_digest(folder) and recorded.startswith("1 files, sha256:")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight: a different model under the same path
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights: '1 files, sha256:[0-9a-f]{16}' on disk vs '1 files, sha256:"):
        runner.run(args, model=model, processor=processor, state=PartialState())
    with pytest.raises(ValueError, match="no weight files"):
        runner.weights_digest(tmp_path / "out")


def test_cli_with_two_processes_merges_ranks(tmp_path, tiny_qwen_dir, vsi_fixture_dir, monkeypatch, tiny_qwen):
    model, processor = tiny_qwen
    single, _ = _run_counting(monkeypatch, model, processor, _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "single"))
    out = tmp_path / "multi"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "eval" / "vsibench.py"), "--model", str(tiny_qwen_dir), "--data", str(vsi_fixture_dir),
        "--output-dir", str(out), "--num-frames", "4", "--max-new-tokens", "1", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [_lines(out / f"predictions.rank{r}.jsonl") for r in (0, 1)]
    assert [r["id"] for r in ranks[0]] == [1, 3, 5, 7, 9]
    assert [r["id"] for r in ranks[1]] == [2, 4, 6, 8, 10]
    assert _lines(out / "predictions.jsonl") == _lines(tmp_path / "single" / "predictions.jsonl")
    assert json.loads((out / "results.json").read_text())["results"] == single["results"]
    assert "| Overall | Obj. Count |" in done.stdout


def test_spa3_vlm_checkpoint_gets_geometry_inputs(tmp_path, monkeypatch, vsi_fixture_dir):
    from tests.fixtures_vlm import build_spa3_vlm_processor, build_tiny_spa3_vlm

    processor = build_spa3_vlm_processor()
    build_tiny_spa3_vlm(processor.tokenizer).save_pretrained(tmp_path / "spa3")
    processor.save_pretrained(tmp_path / "spa3")
    model, processor = runner.load_model_and_processor(str(tmp_path / "spa3"))
    assert type(model).__name__ == "Spa3VLMForConditionalGeneration"
    seen = []
    original = type(model).generate

    def recording_generate(self, *a, **kw):
        seen.append(tuple(kw["geometry_pixel_values"].shape))
        return original(self, *a, **kw)

    monkeypatch.setattr(type(model), "generate", recording_generate)
    args = _args(tmp_path / "spa3", vsi_fixture_dir, tmp_path / "out", "--batch-size", "2", "--num-frames", "3")
    summary = runner.run(args, model=model, processor=processor, state=PartialState())
    assert len(seen) == 5 and all(shape[0] == 6 for shape in seen)  # 2 samples x 3 frames per call
    records = _lines(tmp_path / "out" / "predictions.jsonl")
    assert [r["id"] for r in records] == list(range(1, 11)) and all(r["num_frames"] == 3 for r in records)
    assert summary["num_questions"] == 10


def test_controls_give_every_question_the_next_scenes_frames_or_views(tmp_path, monkeypatch, vsi_fixture_dir):
    from tests.fixtures_vlm import build_spa3_vlm_processor, build_tiny_spa3_vlm

    processor = build_spa3_vlm_processor()
    build_tiny_spa3_vlm(processor.tokenizer).save_pretrained(tmp_path / "spa3")
    processor.save_pretrained(tmp_path / "spa3")
    model, processor = runner.load_model_and_processor(str(tmp_path / "spa3"))
    seen = []
    original = type(model).generate

    def recording_generate(self, *a, **kw):
        seen.append({"frames": kw["pixel_values"].clone(), "geometry": kw["geometry_pixel_values"].clone()})
        return original(self, *a, **kw)

    monkeypatch.setattr(type(model), "generate", recording_generate)
    inputs = {}
    for run_name, flags in {"own": [], "geometry": ["--geometry-from", "other-scene"],
                            "frames": ["--frames-from", "other-scene"]}.items():  # fmt: skip
        seen.clear()
        runner.run(_args(tmp_path / "spa3", vsi_fixture_dir, tmp_path / run_name, "--num-frames", "3", *flags),
                   model=model, processor=processor, state=PartialState())  # fmt: skip
        records = _lines(tmp_path / run_name / "predictions.jsonl")
        inputs[run_name] = {r["id"]: call for r, call in zip(records, seen)}  # batch size 1: one call per question
    questions = runner.load_questions(vsi_fixture_dir)
    video_of = {q["id"]: runner.visual_path(q, vsi_fixture_dir) for q in questions}
    videos = sorted(set(video_of.values()))
    assert len(videos) == 3
    for q in questions:
        donor_video = videos[(videos.index(video_of[q["id"]]) + 1) % len(videos)]
        donor = next(i for i, v in video_of.items() if v == donor_video)
        own = inputs["own"]
        for swapped, kept in (("geometry", "frames"), ("frames", "geometry")):
            assert torch.equal(inputs[swapped][q["id"]][swapped], own[donor][swapped])
            assert not torch.equal(inputs[swapped][q["id"]][swapped], own[q["id"]][swapped])
            assert torch.equal(inputs[swapped][q["id"]][kept], own[q["id"]][kept])
    for swapped in ("geometry", "frames"):
        records = _lines(tmp_path / swapped / "predictions.jsonl")
        assert all(r[f"{swapped}_video"] == str(videos[(videos.index(video_of[r["id"]]) + 1) % 3]) for r in records)
    assert not {"geometry_video", "frames_video"} & set(_lines(tmp_path / "own" / "predictions.jsonl")[0])
    with pytest.raises(ValueError, match="geometry_from: 'other-scene' on disk vs 'own' now"):
        runner.run(_args(tmp_path / "spa3", vsi_fixture_dir, tmp_path / "geometry", "--num-frames", "3"),
                   model=model, processor=processor, state=PartialState())  # fmt: skip


def test_frames_control_on_a_model_without_geometry(tmp_path, monkeypatch, tiny_qwen, tiny_qwen_dir, vsi_fixture_dir):
    model, processor = tiny_qwen
    args = _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "out", "--frames-from", "other-scene", "--limit", "3")
    summary, calls = _run_counting(monkeypatch, model, processor, args)
    assert calls["questions"] == 3 and summary["config"]["frames_from"] == "other-scene"
    assert all("frames_video" in r for r in _lines(tmp_path / "out" / "predictions.jsonl"))


def test_geometry_control_refuses_models_without_geometry_and_a_single_scene(tmp_path, tiny_qwen, tiny_qwen_dir, vsi_fixture_dir):
    model, processor = tiny_qwen
    args = _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "out", "--geometry-from", "other-scene")
    with pytest.raises(ValueError, match="control for a model with geometry inputs; the processor of .* gives none"):
        runner.run(args, model=model, processor=processor, state=PartialState())
    one_scene = [q for q in runner.load_questions(vsi_fixture_dir) if q["scene_name"] == "scene0011_00"]
    with pytest.raises(ValueError, match="needs questions from at least two scenes .*got 1"):
        runner.other_scene_videos(one_scene, vsi_fixture_dir)


def test_answers_written_before_the_controls_existed_still_resume(tmp_path, monkeypatch, tiny_qwen, tiny_qwen_dir, vsi_fixture_dir):
    model, processor = tiny_qwen
    args = _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "out", "--limit", "3")
    _run_counting(monkeypatch, model, processor, args)
    config_file = tmp_path / "out" / runner.RUN_CONFIG_FILE
    config = json.loads(config_file.read_text())
    del config["frames_from"], config["geometry_from"]  # a run_config.json from before the controls
    config_file.write_text(json.dumps(config))
    _, calls = _run_counting(monkeypatch, model, processor, _args(tiny_qwen_dir, vsi_fixture_dir, tmp_path / "out", "--limit", "3"))
    assert calls["generate"] == 0


def test_blind_evaluation_gives_the_question_text_alone_and_needs_no_videos(tmp_path, monkeypatch, vsi_fixture_dir):
    """--num-frames 0: VSI-Bench's vision-disabled baseline; a Spa3-VLM gets neither frames nor Spa3R views."""
    import shutil

    from tests.fixtures_vlm import build_spa3_vlm_processor, build_tiny_spa3_vlm

    processor = build_spa3_vlm_processor()
    build_tiny_spa3_vlm(processor.tokenizer).save_pretrained(tmp_path / "spa3")
    processor.save_pretrained(tmp_path / "spa3")
    model, processor = runner.load_model_and_processor(str(tmp_path / "spa3"))
    questions_only = tmp_path / "questions"  # the question file without a single video beside it
    questions_only.mkdir()
    for path in vsi_fixture_dir.iterdir():
        if path.is_file() and path.suffix in (".jsonl", ".json", ".parquet"):
            shutil.copy(path, questions_only / path.name)
    seen = []
    original = type(model).generate

    def recording_generate(self, *a, **kw):
        seen.append(kw)
        return original(self, *a, **kw)

    monkeypatch.setattr(type(model), "generate", recording_generate)
    args = _args(tmp_path / "spa3", questions_only, tmp_path / "blind", "--num-frames", "0", "--batch-size", "4")
    summary = runner.run(args, model=model, processor=processor, state=PartialState())
    assert summary["num_questions"] == 10 and summary["config"]["num_frames"] == 0
    assert "blind (no frames)" in summary["table"]
    assert seen and all(not {"pixel_values", "geometry_pixel_values"} & set(kw) for kw in seen)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert all(int((kw["input_ids"] == image_pad).sum()) == 0 for kw in seen)
    records = _lines(tmp_path / "blind" / "predictions.jsonl")
    assert len(records) == 10 and all(r["num_frames"] == 0 for r in records)
    with pytest.raises(ValueError, match="with --num-frames 0 \\(blind\\) it sees nothing"):
        runner.run(_args(tmp_path / "spa3", questions_only, tmp_path / "x", "--num-frames", "0", "--frames-from",
                         "other-scene"), model=model, processor=processor, state=PartialState())  # fmt: skip
    with pytest.raises(ValueError, match="--num-frames must be >= 0"):
        runner.run(_args(tmp_path / "spa3", questions_only, tmp_path / "y", "--num-frames", "-1"),
                   model=model, processor=processor, state=PartialState())  # fmt: skip
