"""Dataset generation: on-disk layout, video, byte-identical outputs, CLI and contact sheet."""

import json
import runpy
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from modeling_spa3r import vsibench
from modeling_spa3r.data import io as dio
from modeling_spa3r.data.answerability import frames_ceiling
from modeling_spa3r.data.contact_sheet import write_contact_sheet
from modeling_spa3r.data.cli import dataset_report, main
from modeling_spa3r.data.priors import blind_priors
from modeling_spa3r.data.synthetic import (POOL_FILE, SynthConfig, generate_dataset, rebuild_questions, scene_seed,
                                          split_counts)

from .conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_scannet_like_layout_and_video(synth_root):
    scenes = sorted((synth_root / "scenes").iterdir())
    assert len(scenes) == 3
    scene = scenes[0]
    n = SMALL.frames
    for sub, suffix in (("color", ".jpg"), ("depth", ".png"), ("pose", ".txt"), ("instance", ".png"),
                        ("semantic", ".png"), ("normal", ".png")):
        assert sorted(p.name for p in (scene / sub).iterdir()) == sorted(f"{i}{suffix}" for i in range(n))
    depth = Image.open(scene / "depth" / "0.png")
    assert depth.mode == "I;16" and depth.size == (SMALL.width, SMALL.height)
    assert Image.open(scene / "color" / "0.jpg").format == "JPEG"
    k4 = dio.read_matrix(scene / "intrinsic" / "intrinsic_color.txt")
    assert k4.shape == (4, 4) and np.allclose(k4[3], [0, 0, 0, 1])
    meta = dio.read_json(scene / "scene.json")
    assert np.allclose(meta["camera"]["intrinsics"], k4[:3, :3], atol=1e-6)
    assert np.allclose(meta["camera"]["cam_to_world"][7], dio.read_matrix(scene / "pose" / "7.txt"), atol=1e-6)
    assert 60 <= meta["camera"]["hfov_deg"] <= 90
    threshold = meta["visibility_min_pixels"]
    for i in (0, 20):  # visibility lists agree with the instance maps
        ids = dio.read_label(scene / "instance" / f"{i}.png")
        for obj in meta["objects"]:
            assert (i in obj["visible_in"]) == ((ids == obj["instance_id"]).sum() >= threshold)
    for obj in meta["objects"]:
        assert len(obj["visible_in"]) == obj["visible_frames"]
        assert obj["first_visible_frame"] == (obj["visible_in"][0] if obj["visible_in"] else None)
    assert [wall["side"] for wall in meta["walls"]] == ["x=0", "x=width", "y=0", "y=depth"]
    assert all(wall["visible_in"] for wall in meta["walls"])  # the scan shows the whole room
    video = synth_root / "synthvsi" / f"{scene.name}.mp4"
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == n and frames[0].shape == (SMALL.height, SMALL.width, 3)
    first = np.asarray(Image.open(scene / "color" / "0.jpg"), dtype=np.float64)
    assert np.abs(frames[0] - first).mean() < 12  # the video shows the same frames


def test_same_seed_gives_identical_bytes(tmp_path):
    config = SynthConfig(width=64, height=48, frames=12)
    generate_dataset(tmp_path / "a", 3, seed=5, config=config, progress=False)
    generate_dataset(tmp_path / "b", 3, seed=5, config=config, workers=2, progress=False)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 100
    assert [k for k in a if a[k] != b[k]] == []
    generate_dataset(tmp_path / "c", 3, seed=6, config=config, progress=False)
    assert _tree(tmp_path / "c")["synthvsi_train.jsonl"] != a["synthvsi_train.jsonl"]


def test_rebuilding_questions_from_scene_folders_gives_the_same_bytes(tmp_path):
    config = SynthConfig(width=64, height=48, frames=12)
    generate_dataset(tmp_path, 3, seed=5, config=config, progress=False)
    before = _tree(tmp_path)
    (tmp_path / "synthvsi_val.jsonl").write_text("")
    summary = rebuild_questions(tmp_path)
    assert _tree(tmp_path) == before and summary == dio.read_json(tmp_path / "dataset.json")


def test_split_seeds_are_disjoint():
    assert split_counts(10) == {"train": 8, "val": 1, "test": 1}
    assert split_counts(2) == {"train": 2, "val": 0, "test": 0}
    seeds = {split: {scene_seed(0, split, i) for i in range(1000)} for split in ("train", "val", "test")}
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"] or seeds["val"] & seeds["test"])
    with pytest.raises(ValueError):
        scene_seed(0, "train", 10**6)


def test_command_line_and_contact_sheet(tmp_path, monkeypatch, capsys):
    script = str(REPO / "processing" / "synthetic.py")
    out = tmp_path / "cli"
    monkeypatch.setattr("sys.argv", [script, "--scenes", "1", "--out", str(out), "--width", "48", "--height", "36",
                                     "--frames", "6", "--no-extras"])
    runpy.run_path(script, run_name="__main__")
    assert '"train": 1' in capsys.readouterr().out
    (scene,) = (out / "scenes").iterdir()
    assert len(list((scene / "color").iterdir())) == 6 and not (scene / "normal").exists()
    sheet = tmp_path / "sheet.png"
    monkeypatch.setattr("sys.argv", [script, "contact-sheet", str(scene), "--out", str(sheet), "--frames", "3"])
    runpy.run_path(script, run_name="__main__")
    image = np.asarray(Image.open(sheet).convert("RGB"))
    assert image.shape[0] > 300 and image.shape[1] > 600 and image.std() > 10


def test_generator_report_has_type_mix_and_blind_priors(synth_root):
    summary = dio.read_json(synth_root / "dataset.json")
    priors = summary["blind_priors"]
    assert (priors["fit"], priors["scored"]) == ("train", "val + test")
    train = [json.loads(x) for x in (synth_root / "synthvsi_train.jsonl").read_text().splitlines()]
    held_out = [json.loads(x) for s in ("val", "test") for x in (synth_root / f"synthvsi_{s}.jsonl").read_text().splitlines()]
    expected = blind_priors(train, held_out)
    assert priors["per_type"] == expected.per_type and priors["text_prior"] == expected.text_family
    report = dataset_report(summary)
    assert "| question type | questions | share % | VSI-Bench share % |" in report
    assert "| object_abs_distance |" in report and "VSI-Bench share" in report
    assert expected.table() in report
    # what 4, 8, 16, 32 frames of the 48 can answer: the perfect perceiver with the best prior as its fallback
    ceilings = summary["frames_ceiling"]
    assert sorted(ceilings, key=int) == ["4", "8", "16", "32"]  # dataset.json sorts keys as text
    pool = summary["blind_priors_pool"]["per_type"]
    fallback = {qt: max(p[qt] for fit in (priors["per_type"], pool) for p in (fit["frequent"], fit["text"]) if qt in p)
                for qt in priors["per_type"]["text"]}  # fmt: skip
    assert ceilings["8"] == frames_ceiling(held_out, synth_root / "scenes", 8, fallback).tasks
    assert ceilings["4"]["overall"] <= ceilings["32"]["overall"]
    rows = [line for line in report.splitlines() if line.startswith(("| 4 |", "| 8 |", "| 16 |", "| 32 |"))]
    assert [row.split(" | ")[0] for row in rows] == ["| 4", "| 8", "| 16", "| 32"]  # in frame order
    assert rows[1].startswith(f"| 8 | {100 * ceilings['8']['overall']:.1f} | ") and "What N uniformly sampled" in report


def test_question_pool_of_the_train_rooms_and_its_priors(synth_root):
    """Every candidate question of the train rooms (not balanced), and the blind priors fitted on it."""
    summary = dio.read_json(synth_root / "dataset.json")
    read = lambda name: [json.loads(x) for x in (synth_root / name).read_text().splitlines()]  # noqa: E731
    splits = {s: read(f"synthvsi_{s}.jsonl") for s in ("train", "val", "test")}
    pool = read(POOL_FILE)
    assert summary["train_pool_questions"] == len(pool) > len(splits["train"])
    assert {r["scene_name"] for r in pool} == set(summary["splits"]["train"])
    split_ids = {r["id"] for records in splits.values() for r in records}
    assert len({r["id"] for r in pool}) == len(pool) and not split_ids & {r["id"] for r in pool}
    assert Counter(r["question_type"] for r in pool).keys() >= {r["question_type"] for r in splits["train"]}
    # well-formed VSI-Bench records: the ground truth, answered verbatim, scores 1 (letters checked against options)
    assert all(vsibench.score(r["ground_truth"], r["ground_truth"], r["question_type"], r["options"]) == 1.0 for r in pool)
    priors = summary["blind_priors_pool"]
    expected = blind_priors(pool, splits["val"] + splits["test"])
    assert (priors["fit"], priors["per_type"]) == ("train rooms' question pool", expected.per_type)
    report = dataset_report(summary)
    assert expected.table() in report and "blind priors (fit on train rooms' question pool" in report
    assert "uses the video only where it beats both tables" in report


def test_rooms_contact_sheet(synth_root, tmp_path):
    scenes = sorted((synth_root / "scenes").iterdir())
    main(["contact-sheet", *map(str, scenes), "--out", str(tmp_path / "rooms.png"), "--frames", "3"])
    image = np.asarray(Image.open(tmp_path / "rooms.png").convert("RGB"))
    assert image.shape[0] >= 3 * 200 and image.std() > 10  # one row per room


def test_contact_sheet_of_real_layout_without_scene_json(synth_root, tmp_path):
    scene = sorted((synth_root / "scenes").iterdir())[1]
    copy = tmp_path / "scan"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (copy / sub).mkdir(parents=True)
        for f in (scene / sub).iterdir():
            (copy / sub / f.name).write_bytes(f.read_bytes())
    path = write_contact_sheet(copy, tmp_path / "real.png", num_frames=4)
    assert Image.open(path).size[0] > 600
