"""The app's answer function without a browser: the answer survives a failing picture; pretraining checkpoints
trained on teacher targets and on rendered targets both give a picture."""

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app_module():
    spec = importlib.util.spec_from_file_location("spa3_gradio_app_answer", REPO / "app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered_pretraining(tmp_path_factory):
    from modeling_spa3r import Spa3RConfig, Spa3RForPretraining

    config = Spa3RConfig.from_json_file(REPO / "configuration" / "models" / "spa3r-synthetic-tiny.json")
    config.pretraining_targets = "rendered"
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("app_rendered")
    Spa3RForPretraining(config).save_pretrained(directory)
    return directory


def test_answer_kept_when_the_picture_fails(app_module, spa3_vlm_dir, scene_pictures, monkeypatch):
    app = app_module.Spa3App(str(spa3_vlm_dir), max_new_tokens=4)
    files = [str(p) for p in scene_pictures]
    text, picture = app.run(files, "How many chairs are in the room?")
    assert picture is not None and Path(picture).stat().st_size > 0 and not text.startswith("Error")

    def broken(frames):
        raise RuntimeError("no display")

    monkeypatch.setattr(app, "picture", broken)
    again, picture = app.run(files, "How many chairs are in the room?")
    assert picture is None and again == f"{text}\n\n[picture failed: RuntimeError: no display]"


@pytest.mark.parametrize("kind", ["teachers", "rendered"])
def test_pretraining_checkpoint_of_either_target_kind(kind, app_module, spa3_vlm_dir, spa3r_pretraining_dir,
                                                      rendered_pretraining, scene_pictures):
    checkpoint = spa3r_pretraining_dir if kind == "teachers" else rendered_pretraining
    app = app_module.Spa3App(str(spa3_vlm_dir), pretraining=str(checkpoint), max_new_tokens=4)
    text, picture = app.run([str(p) for p in scene_pictures], "How many chairs are in the room?")
    assert picture is not None and Path(picture).stat().st_size > 0 and not text.startswith("Error")
    if kind == "rendered":  # uploads carry no rendered maps: the tokens are drawn and the answer box says why
        assert "[feature fields not drawn: this checkpoint was pretrained on rendered targets" in text
    else:
        assert "not drawn" not in text  # teacher targets: the predicted vs target fields are drawn
