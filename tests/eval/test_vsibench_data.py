"""VSI-Bench through `datasets.load_dataset`: a local copy in the released layout (README configs, parquet,
per-dataset video zips), the Hub id, single question files; videos extracted into lmms-eval's root
($HF_HOME/vsibench) exactly once, and bad inputs named."""

import zipfile

import datasets
import pytest
from accelerate import PartialState

from modeling_spa3r import eval_vsibench as runner
from modeling_spa3r.data import io as dio
from modeling_spa3r.data import vsibench_data

from ..fixtures_qwen import VSI_FIXTURE_ROWS
from ..fixtures_real_data import PRUNED_IDS, write_vsibench_release

FIELDS = ("id", "dataset", "scene_name", "question_type", "question", "ground_truth", "options")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_vsibench_release(tmp_path_factory.mktemp("VSI-Bench"))


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf"


def _fields(rows):
    return [{k: row[k] for k in FIELDS} for row in rows]


def test_release_folder_loads_full_and_debiased_configs(release):
    table, source = vsibench_data.load_vsibench(release)
    assert isinstance(table, datasets.Dataset) and source == str(release / "README.md")
    assert _fields(table.to_list()) == _fields(VSI_FIXTURE_ROWS)
    debiased, _ = vsibench_data.load_vsibench(release, debiased=True)
    assert debiased.column_names == list(FIELDS)  # the debiased config's own file, not a filter of the full one
    assert [r["id"] for r in debiased] == [r["id"] for r in VSI_FIXTURE_ROWS if r["id"] not in PRUNED_IDS]
    questions = runner.load_questions(release, debiased=True)
    assert [q["id"] for q in questions] == [1, 2, 4, 5, 7, 8, 10]


def test_pruned_column_or_ids_file_give_the_debiased_subset(release, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "test.parquet").write_bytes((release / "test.parquet").read_bytes())
    assert [r["id"] for r in vsibench_data.load_vsibench(tmp_path / "full", debiased=True)[0]] == [1, 2, 4, 5, 7, 8, 10]
    import json

    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VSI_FIXTURE_ROWS))
    (tmp_path / "ids" / "pruned_ids.txt").write_text("1\n2\n")
    assert [r["id"] for r in vsibench_data.load_vsibench(tmp_path / "ids" / "q.jsonl", debiased=True)[0]] == list(range(3, 11))


def test_zips_are_extracted_into_lmms_eval_root_once(release, hf_home):
    questions = runner.load_questions(release)
    root = vsibench_data.resolve_video_root(release, None, questions)
    assert root == hf_home / "vsibench"
    for dataset in vsibench_data.VIDEO_SOURCES:
        with zipfile.ZipFile(release / f"{dataset}.zip") as bundle:
            for name in bundle.namelist():
                assert (root / name).read_bytes() == bundle.read(name)
    assert vsibench_data.missing_videos(root, questions) == []
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/*.mp4")}
    assert vsibench_data.extract_videos(sorted(release.glob("*.zip")), root, progress=False) == 0  # existing kept
    assert vsibench_data.resolve_video_root(release, None, questions) == root
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/*.mp4")} == stamps
    assert not list(root.glob("**/*.partial"))
    assert vsibench_data.resolve_video_root(release, "/videos", questions) == vsibench_data.Path("/videos")


def test_hub_id_goes_through_load_dataset_and_snapshot(release, hf_home, monkeypatch):
    calls = []
    original = datasets.load_dataset

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, kwargs.get("name"), kwargs.get("split")))
        return original(str(release), *args, **kwargs) if path == "nyu-visionx/VSI-Bench" else original(path, *args, **kwargs)

    def fake_snapshot_download(repo_id, repo_type, allow_patterns):
        calls.append((repo_id, repo_type, allow_patterns))
        return str(release)

    import huggingface_hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    questions = runner.load_questions("nyu-visionx/VSI-Bench", debiased=True)
    assert [q["id"] for q in questions] == [1, 2, 4, 5, 7, 8, 10]
    root = vsibench_data.resolve_video_root("nyu-visionx/VSI-Bench", None, questions)
    assert calls == [("nyu-visionx/VSI-Bench", "debiased", "test"), ("nyu-visionx/VSI-Bench", "dataset", ["*.zip"])]
    assert vsibench_data.missing_videos(root, questions) == []


def test_eval_runs_on_the_release_layout(release, hf_home, tiny_qwen_dir, tmp_path):
    args = runner.build_parser().parse_args(
        ["--model", str(tiny_qwen_dir), "--data", str(release), "--output-dir", str(tmp_path / "out"), "--num-frames",
         "4", "--max-new-tokens", "1", "--no-progress", "--question-types", "object_counting,room_size_estimation"])  # fmt: skip
    summary = runner.run(args, state=PartialState())
    assert summary["num_questions"] == 2 and (hf_home / "vsibench" / "scannet" / "scene0011_00.mp4").is_file()


def test_bad_inputs_name_the_file(release, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no VSI-Bench question file in {tmp_path}"):
        vsibench_data.load_vsibench(tmp_path)
    with pytest.raises(FileNotFoundError, match="VSI-Bench data not found: not/a/dataset/path"):
        vsibench_data.load_vsibench("not/a/dataset/path")
    (tmp_path / "q.csv").write_text("id\n1\n")
    with pytest.raises(ValueError, match="unsupported question file type '.csv'"):
        vsibench_data.load_vsibench(tmp_path / "q.csv")
    (tmp_path / "broken.jsonl").write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(ValueError, match=f"broken.jsonl"):
        vsibench_data.load_vsibench(tmp_path / "broken.jsonl")
    (tmp_path / "scannet.zip").write_bytes(b"not a zip")
    with pytest.raises(dio.DataError, match=f"not a readable zip archive .*: {tmp_path}/scannet.zip"):
        vsibench_data.extract_videos([tmp_path / "scannet.zip"], tmp_path / "root", progress=False)
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as bundle:
        bundle.writestr("../outside.mp4", b"x")
    with pytest.raises(dio.DataError, match="would be written outside"):
        vsibench_data.extract_videos([tmp_path / "evil.zip"], tmp_path / "root", progress=False)
    assert not (tmp_path / "outside.mp4").exists()
