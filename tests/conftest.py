"""Shared fixtures. Builders of tiny models live in tests/fixtures_*.py; fixtures expose them here."""

import pytest
import torch

from .fixtures_spa3r import tiny_spa3r_config, tiny_vggt_config


@pytest.fixture
def spa3r_config():
    return tiny_spa3r_config()


@pytest.fixture
def vggt_config():
    return tiny_vggt_config()


@pytest.fixture
def images():
    """(B=2, V=4, 3, H=28, W=42) random views in [0, 1]."""
    return torch.rand(2, 4, 3, 28, 42, generator=torch.Generator().manual_seed(0))


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


# ============================================================================================
# Spa3-VLM fixtures (issue #6): tiny offline Spa3-VLM + processor. Builders live in tests/fixtures_vlm.py.
# ============================================================================================


@pytest.fixture(scope="session")
def spa3_vlm_processor():
    from .fixtures_vlm import build_spa3_vlm_processor

    return build_spa3_vlm_processor()


@pytest.fixture(scope="session")
def spa3_vlm_dir(tmp_path_factory, spa3_vlm_processor):
    """Folder with a tiny random Spa3-VLM (adaptor randomised) and its processor, saved with save_pretrained."""
    from .fixtures_vlm import build_tiny_spa3_vlm

    directory = tmp_path_factory.mktemp("tiny_spa3_vlm")
    build_tiny_spa3_vlm(spa3_vlm_processor.tokenizer).save_pretrained(directory)
    spa3_vlm_processor.save_pretrained(directory)
    return directory


# ============================================================================================
# Inference / visualisation / app fixtures (issue #7). Builders live in tests/fixtures_apps.py.
# ============================================================================================


@pytest.fixture(scope="session")
def spa3r_pretraining_dir(tmp_path_factory):
    """Folder with a tiny random Spa3RForPretraining (DINOv3 teacher included) for 56-pixel-wide views."""
    from .fixtures_apps import build_tiny_spa3r_pretraining

    directory = tmp_path_factory.mktemp("tiny_spa3r_pretraining")
    build_tiny_spa3r_pretraining().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def scene_pictures(tmp_path_factory):
    """Four 64x48 pictures with smooth structures (paths, in order)."""
    from .fixtures_apps import write_pictures

    return write_pictures(tmp_path_factory.mktemp("scene"), 4)


# ============================================================================================
# Training-pipeline fixtures (issue #5): synthetic scenes, tiny Spa3-VLM folder with a trainable chat template,
# tiny Spa3R teacher checkpoint. Builders live in tests/fixtures_training.py.
# ============================================================================================


@pytest.fixture(scope="session")
def training_synth_root(tmp_path_factory):
    from .fixtures_training import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("training_synth"))


@pytest.fixture(scope="session")
def training_vlm_dir(tmp_path_factory):
    from .fixtures_training import save_tiny_vlm

    return save_tiny_vlm(tmp_path_factory.mktemp("training_vlm"))


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory):
    from .fixtures_training import save_teacher_checkpoint

    return save_teacher_checkpoint(tmp_path_factory.mktemp("teachers"))
