"""VSI-590K-style annotation files -> a checked SFT JSONL: the output loads with `datasets`, keeps every
conversation, normalises media fields and placeholders, trains through `training/sft.py`'s reader, and missing
media are reported (an error naming the report, or dropped and counted on request)."""

import json

import datasets
import pytest

from modeling_spa3r.data import io as dio
from modeling_spa3r.data.annotations import convert_annotations
from modeling_spa3r.data.prepare import main as prepare_main
from modeling_spa3r.training.sft import ConversationSamples, read_records

from ..fixtures_real_data import write_annotation_media

SAMPLING = {"num_frames": None, "fps": 0.5, "min_frames": 2, "max_frames": 4, "frame_folder_fps": None}


@pytest.fixture
def annotation_files(tmp_path):
    media = tmp_path / "media"
    records = write_annotation_media(media)
    (tmp_path / "part1.json").write_text(json.dumps(records[:2]))
    (tmp_path / "part2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[2:]))
    return media, records, [tmp_path / "part1.json", tmp_path / "part2.jsonl"]


def test_output_loads_with_datasets_and_keeps_every_conversation(annotation_files, tmp_path):
    media, records, files = annotation_files
    out = tmp_path / "sft" / "train.jsonl"
    report = convert_annotations(files, out, media, progress=False)
    assert report == {"records": 4, "written": 4, "missing_media": 0, "dropped_records": 0, "placeholders_added": 1,
                      "missing_report": None, "out": str(out)}
    rows = datasets.load_dataset("json", data_files=str(out), split="train").to_list()
    assert [r["id"] for r in rows] == ["vsi_0", "17", "vsi_2", "part2.jsonl:1"]
    assert [r["video"] for r in rows] == ["scannet/scene0001_00.mp4", "arkitscenes/frames_41069025", None, None]
    assert [r["images"] for r in rows] == [[], [], ["images/a.jpg", "images/b.jpg"], ["images/b.jpg"]]
    assert rows[0]["conversations"] == records[0]["conversations"]
    assert rows[1]["conversations"][0]["value"] == "<video>\nWhat is the size of this room?"  # <|video|> spelling
    assert rows[3]["conversations"][0]["value"] == "<image>\nIs the door open?"  # placeholder added
    assert [t["value"] for r in rows for t in r["conversations"] if t["from"] == "gpt"] == ["4", "12.5", "A", "Yes"]


def test_sft_reader_trains_on_the_output(annotation_files, tmp_path):
    media, _, files = annotation_files
    out = tmp_path / "train.jsonl"
    convert_annotations(files, out, media, progress=False)
    assert len(read_records(str(out))) == 4
    samples = ConversationSamples([str(out)], str(media), SAMPLING)
    images = [len(samples[i]["images"]) for i in range(4)]
    assert images == [2, 3, 2, 1]  # 0.4 s video at 0.5 fps -> min_frames, 3-frame folder, two images, one image
    assert [m["role"] for m in samples[2]["messages"]] == ["user", "assistant"]


def test_missing_media_are_reported_never_silently_dropped(annotation_files, tmp_path):
    media, _, files = annotation_files
    (media / "images" / "a.jpg").unlink()
    (media / "scannet" / "scene0001_00.mp4").unlink()
    out = tmp_path / "train.jsonl"
    report_file = tmp_path / "train.jsonl.missing.jsonl"
    expected = rf"2 media file\(s\) not found \(e\.g\. vsi_0: {media}/scannet/scene0001_00\.mp4; vsi_2: .*: {report_file}$"
    with pytest.raises(dio.DataError, match=expected):
        convert_annotations(files, out, media, progress=False)
    assert not out.exists()
    assert [json.loads(line) for line in report_file.read_text().splitlines()] == [
        {"id": "vsi_0", "path": "scannet/scene0001_00.mp4"}, {"id": "vsi_2", "path": "images/a.jpg"}]
    report = convert_annotations(files, out, media, on_missing="drop", progress=False)
    assert (report["written"], report["dropped_records"], report["missing_media"]) == (2, 2, 2)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["17", "part2.jsonl:1"]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"video": "v.mp4", "conversations": [{"from": "human", "value": "<video><video> q"}, {"from": "gpt", "value": "a"}]},
         r"part\.json:0: 2 <video> and 0 <image> placeholders for 1 video\(s\) and 0 image\(s\)"),
        ({"conversations": [{"from": "human", "value": "q"}]}, r"part\.json:0: no assistant"),
        ({"conversations": [{"from": "bot", "value": "q"}]}, r"part\.json:0: every turn needs 'from'"),
    ],
)  # fmt: skip
def test_malformed_records_name_file_and_record(tmp_path, record, message):
    (tmp_path / "part.json").write_text(json.dumps([record]))
    with pytest.raises(dio.DataError, match=message):
        convert_annotations([tmp_path / "part.json"], tmp_path / "out.jsonl", tmp_path, progress=False)


def test_command_line(annotation_files, tmp_path, capsys):
    media, _, files = annotation_files
    out = tmp_path / "cli.jsonl"
    assert prepare_main(["annotations", *map(str, files), "--media-root", str(media), "--out", str(out), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 4
    (media / "images" / "b.jpg").unlink()
    assert prepare_main(["annotations", *map(str, files), "--media-root", str(media), "--out", str(out), "--no-progress"]) == 2
    assert "2 media file(s) not found" in capsys.readouterr().err
