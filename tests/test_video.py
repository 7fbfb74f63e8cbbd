"""modeling_spa3r/video.py: the official frame rule, decoding through transformers.video_utils, frame folders and lists."""

import av
import numpy as np
import pytest
from PIL import Image

from modeling_spa3r.video import load_video_frames, natural_key, sample_frame_indices

from .fixtures_vlm import write_video


@pytest.mark.parametrize("total", [1, 7, 32, 33, 100, 1234, 5000])
def test_uniform_rule_is_the_official_linspace(total):
    # Spa3-VLM's lmms-eval wrapper: np.linspace(0, N - 1, 32, dtype=int), all frames when N < 32
    expected = np.linspace(0, total - 1, min(32, total), dtype=int).tolist()
    assert sample_frame_indices(total, num_frames=32) == expected


def test_bad_sampling_requests_name_the_problem():
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        sample_frame_indices(10, num_frames=0)
    with pytest.raises(ValueError, match="empty video"):
        sample_frame_indices(0, num_frames=4)
    with pytest.raises(ValueError, match="needs the source frame rate"):
        sample_frame_indices(10, fps=1.0)


def test_video_file_frames_are_the_sampled_decoded_frames(tmp_path):
    path = write_video(tmp_path / "room.mp4", num_frames=9, fps=3)
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    frames = load_video_frames(path, {"num_frames": 4})
    assert len(frames) == 4
    for frame, index in zip(frames, [0, 2, 5, 8]):
        np.testing.assert_array_equal(np.asarray(frame), decoded[index])
    # fps rule: 9 frames at 3 fps = 3 s → 1.5 frames at 0.5 fps → round → 2 (within min 1)
    assert len(load_video_frames(path, {"fps": 0.5})) == 2


def test_frame_folders_sort_naturally_and_lists_are_sampled(tmp_path):
    for index in range(12):
        Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(tmp_path / f"frame_{index}.png")
    frames = load_video_frames(tmp_path, {"num_frames": 4})
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 60, 140, 220]  # 0, 3, 7, 11 (not frame_10 before frame_2)
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]
    as_list = load_video_frames([np.full((4, 4, 3), v, np.uint8) for v in range(5)], {"num_frames": 3})
    assert [f.getpixel((0, 0))[0] for f in as_list] == [0, 2, 4]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no images"):
        load_video_frames(tmp_path / "empty", {"num_frames": 2})
