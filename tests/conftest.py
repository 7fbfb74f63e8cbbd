"""Shared fixtures. Builders of tiny models live in tests/fixtures_*.py; fixtures expose them here."""

# ============================================================================================
# VSI-Bench runner fixtures (issue #4): tiny offline Qwen2.5-VL checkpoint + VSI-format data.
# Builders live in tests/fixtures_qwen.py.
# ============================================================================================
import pytest  # noqa: E402 (kept so this block stands on its own)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    """Folder with a tiny random Qwen2.5-VL model + processor, loadable with the Auto classes."""
    from .fixtures_qwen import save_tiny_qwen

    return save_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="session")
def vsi_fixture_dir(tmp_path_factory):
    """Folder laid out like nyu-visionx/VSI-Bench: test.jsonl + <dataset>/<scene>.mp4 (10 questions)."""
    from .fixtures_qwen import write_vsi_fixture

    return write_vsi_fixture(tmp_path_factory.mktemp("vsibench"))
