import importlib.util
import json

import pytest

from modeling_spa3r import demo
from modeling_spa3r.demo import VARIANTS, DemoSettings, run

TASK_KEYS = {"object_counting_MRA:.5:.95:.05", "route_planning_accuracy", "overall"}


def test_demo_end_to_end(tmp_path):
    """A very small demo run: every stage runs and writes its artefacts; both VLMs are scored on the same questions."""
    settings = DemoSettings(scenes=8, frames=12, pretrain_steps=4, sft_epochs=0.25, vocab_size=300)
    report = run(tmp_path, settings)
    for name in ("loss_curves.png", "feature_fields.png", "results.md", "results.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["scenes"] == 8
    assert set(report["results"]) == set(VARIANTS)
    counts = {name: result["num_questions"] for name, result in report["results"].items()}
    assert len(set(counts.values())) == 1 and counts["Spa3-VLM"] > 0
    for result in report["results"].values():
        assert TASK_KEYS <= set(result["results"])
    table = (tmp_path / "results.md").read_text()
    assert "| task | Spa3-VLM | VLM without geometry |" in table and "| overall |" in table
    assert set(report["held_out_field_cosine"]) == {"geometry", "semantics"}
    curves = report["pretraining_loss_first_last"]  # train and held-out-room curves of the PSFM stage
    assert {"representation_loss", "probe_loss", "eval_representation_loss", "eval_probe_loss"} <= set(curves)
    # the no-geometry twin never sees Spa3R inputs
    processor = json.loads((tmp_path / "sft-no-geometry" / "processor_config.json").read_text())
    assert processor["use_geometry"] is False


def test_demo_names_missing_training_packages(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(SystemExit) as error:
        demo.main(["--quick"])
    assert error.value.code == 2
    assert "needs trl" in capsys.readouterr().err
