import importlib.util
import json
from pathlib import Path

import pytest

from modeling_spa3r import cli, demo
from modeling_spa3r.demo import VARIANTS, DemoSettings, run



def test_demo_end_to_end(tmp_path, capsys):
    """A very small demo run: every stage runs and writes its artefacts; both VLMs are scored on the same questions."""
    import torch

    settings = DemoSettings(scenes=8, frames=12, pretrain_steps=4, sft_epochs=0.25, vocab_size=300, vlm_seeds=2)
    threads = torch.get_num_threads()
    report = run(tmp_path, settings)
    assert torch.get_num_threads() == threads  # the demo's one-thread setting does not leak to the caller
    for name in ("loss_curves.png", "feature_fields.png", "sft_curves.png", "results.md", "results.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["scenes"] == 8
    assert set(report["results"]) == set(VARIANTS)
    counts = {name: result["num_questions"] for name, result in report["results"].items()}
    assert len(set(counts.values())) == 1 and counts["Spa3-VLM"] > 0
    for result in report["results"].values():  # tasks present depend on the tiny split; overall always
        assert "overall" in result["results"] and set(result["results"]) - {"overall", "micro_average"}
    table = (tmp_path / "results.md").read_text()
    assert ("| task | n | chance | blind prior | ceiling (4 frames) | Spa3-VLM [95 % CI] | VLM without geometry [95 % CI] "
            "| text-only LM [95 % CI] |") in table
    assert "| overall (macro mean of " in table and "top answer share" in table
    assert (tmp_path / "results.png").stat().st_size > 0
    rows = {row["key"]: row for row in report["table"]["rows"]}
    assert rows["overall"]["n"] == counts["Spa3-VLM"]
    ceiling = report["frames_ceiling"]  # a perfect perceiver of the models' 4 frames, beside the priors
    assert ceiling["num_frames"] == settings.eval_frames == report["table"]["ceiling_frames"]
    assert {key: row["ceiling"] for key, row in rows.items() if row["n"]} == {
        key: ceiling["tasks"][key] for key, row in rows.items() if row["n"]}
    for name in VARIANTS:  # the table's scores are the eval runner's own
        assert rows["overall"]["scores"][name] == pytest.approx(report["results"][name]["results"]["overall"])
    assert set(report["held_out_field_cosine"]) == {"geometry", "semantics", "geometry mean-field baseline",
                                                    "semantics mean-field baseline"}  # fmt: skip
    readout = report["room_size_readout"]  # the tiny split's two validation rooms each have a room-size question
    assert readout["n"] == rows["room_size_estimation_MRA:.5:.95:.05"]["n"] > 0
    assert "## Room Size from the Spa3R latent by a linear probe" in table
    controls = report["input_controls"]  # each variant answered again with another room's frames / Spa3R views
    assert [(c["model"], c["swapped"]) for c in controls] == [("Spa3-VLM", "frames"), ("Spa3-VLM", "geometry"),
                                                              ("VLM without geometry", "frames")]  # fmt: skip
    for control in controls:
        assert control["rows"][-1]["n"] == counts[control["model"]]
        assert control["rows"][-1]["own"] == pytest.approx(report["results"][control["model"]]["results"]["overall"])
    assert "## Do the VLMs use what they see?" in table and "| VLM without geometry | frames |" in table
    for slug, swapped in (("spa3-vlm", "geometry"), ("spa3-vlm", "frames"), ("no-geometry", "frames")):
        lines = (tmp_path / f"eval-{slug}-other-{swapped}" / "predictions.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == counts["Spa3-VLM"]
        assert all(Path(r[f"{swapped}_video"]).stem != r["scene_name"] for r in records)
    for name, sft in report["sft_losses"].items():  # SFT's held-out answer loss: before training, then during it
        history = json.loads((tmp_path / f"sft-{VARIANTS[name][0]}" / "trainer_state.json").read_text())["log_history"]
        assert sft["held_out"] == [[e["epoch"], e["eval_own_loss"]] for e in history if "eval_own_loss" in e]
        assert sft["held_out"][0][0] == 0 and len(sft["held_out"]) >= 2 and sft["train"]
        if name == "text-only LM":  # no video, so no other room's either
            assert sft["held_out_other_scene"] is None and "eval_other_scene_loss" not in str(history)
        else:
            assert [p[0] for p in sft["held_out_other_scene"]] == [p[0] for p in sft["held_out"]]
    own, other = (json.loads((tmp_path / "data" / "sft" / f"synthvsi_val_sft{suffix}.json").read_text())
                  for suffix in ("", "_other_scene"))  # fmt: skip
    assert [r["conversations"] for r in own] == [r["conversations"] for r in other]  # the same questions and answers
    assert all(a["video"] != b["video"] for a, b in zip(own, other))  # each with another room's video
    assert "## Fine-tuning: train vs held-out answer loss" in table and "another − own" in table
    curves = report["pretraining_loss_first_last"]  # train and held-out-room curves of the PSFM stage
    assert {"representation_loss", "probe_loss", "eval_representation_loss", "eval_probe_loss"} <= set(curves)
    # the no-geometry twin never sees Spa3R inputs; the text-only LM sees no video: not in training, not when asked
    for slug in ("no-geometry", "text-only"):
        assert json.loads((tmp_path / f"sft-{slug}" / "processor_config.json").read_text())["use_geometry"] is False
    text_only = json.loads((tmp_path / "data" / "sft" / "synthvsi_train_sft_text_only.json").read_text())
    with_videos = json.loads((tmp_path / "data" / "sft" / "synthvsi_train_sft.json").read_text())
    assert len(text_only) == len(with_videos) and not any("video" in r for r in text_only)
    assert [r["conversations"][1:] for r in text_only] == [r["conversations"][1:] for r in with_videos]
    assert [r["conversations"][0]["value"] for r in text_only] == [
        r["conversations"][0]["value"].replace("<video>\n", "") for r in with_videos]
    blind = [json.loads(line) for line in (tmp_path / "eval-text-only" / "predictions.jsonl").read_text().splitlines()]
    assert len(blind) == counts["Spa3-VLM"] and all(r["num_frames"] == 0 for r in blind)
    _second_training_seed(tmp_path, report, table)
    _other_tools_load_the_outputs(tmp_path, capsys)


def _second_training_seed(out, report, table):
    """`vlm_seeds=2`: both VLMs trained again with seed 1 in vlm-seed-1 (no controls); the spread section's scores are
    seed 0's table and seed 1's own evaluations."""
    spread = report["across_seeds"]
    assert spread["seeds"] == [0, 1] and "## Across training seeds (2 seeds: 0, 1)" in table
    overall = spread["rows"][-1]
    for name, (slug, _) in VARIANTS.items():
        again = json.loads((out / "vlm-seed-1" / f"eval-{slug}" / "results.json").read_text())
        assert overall["scores"][name] == pytest.approx([report["results"][name]["results"]["overall"],
                                                         again["results"]["overall"]])  # fmt: skip
        assert not list((out / "vlm-seed-1").glob(f"eval-{slug}-other-*"))  # no input controls for extra seeds
        state = json.loads((out / "vlm-seed-1" / f"sft-{slug}" / "trainer_state.json").read_text())
        assert spread["held_out_loss_end"][name][1] == [e["eval_own_loss"] for e in state["log_history"]
                                                        if "eval_own_loss" in e][-1]  # fmt: skip
    assert "Held-out answer loss at the end of SFT (nats), per seed" in table


def _other_tools_load_the_outputs(out, capsys):
    """`spa3r ask`, `visualize`, the app's answer function and `eval` on the demo's checkpoints, as they are."""
    capsys.readouterr()
    room = sorted((out / "data" / "scenes").iterdir())[-1]
    frames = [str(p) for p in sorted((room / "color").iterdir())[:3]]
    assert cli.main(["ask", str(out / "sft-spa3-vlm"), "How many chairs are in the room?", "--images", *frames,
                     "--max-new-tokens", "4", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["num_frames"] == 3
    # the demo's Spa3R was pretrained on rendered targets: visualize builds them from the room's maps
    assert json.loads((out / "spa3r" / "config.json").read_text())["pretraining_targets"] == "rendered"
    png = out / "visualize.png"
    assert cli.main(["visualize", str(out / "spa3r"), "--scene", str(room), "--num-views", "4", "--out", str(png)]) == 0
    assert "geometry" not in capsys.readouterr().err and png.stat().st_size > 0
    spec = importlib.util.spec_from_file_location("spa3_demo_app", Path(__file__).resolve().parents[1] / "app" / "app.py")
    app_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_module)
    app = app_module.Spa3App(str(out / "sft-spa3-vlm"), pretraining=str(out / "spa3r"), num_frames=3, max_new_tokens=4)
    text, picture = app.run(frames, "How many chairs are in the room?")
    assert picture is not None and "pretrained on rendered targets" in text and not text.startswith("Error")
    assert cli.main(["eval", "--model", str(out / "sft-no-geometry"), "--data", str(out / "data" / "synthvsi_val.jsonl"),
                     "--video-root", str(out / "data"), "--output-dir", str(out / "eval-again"), "--num-frames", "2",
                     "--limit", "3", "--no-progress"]) == 0  # fmt: skip
    assert len((out / "eval-again" / "predictions.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    "latent, intervals, verdict, vlms",
    [((0.30, 0.40), {"a": (0.2, 0.3), "b": (0.1, 0.3)}, "does not beat the blind prior", None),
     ((0.40, 0.50), {"a": (0.2, 0.3), "b": (0.1, 0.3)}, "neither VLM reads it out", None),
     ((0.40, 0.50), {"a": (0.36, 0.5), "b": (0.1, 0.3)}, "and a beats the blind prior on it", None),
     ((0.40, 0.50), {"a": (0.36, 0.5), "b": (0.1, 0.3)}, "neither VLM reads it out", ["b"])],  # a: not a VLM
)  # fmt: skip
def test_readout_section_says_where_room_size_is_lost(latent, intervals, verdict, vlms):
    from modeling_spa3r.probe import RoomSizeReadout
    from modeling_spa3r.report import ResultsReport, TaskRow

    row = TaskRow("room_size_estimation_MRA:.5:.95:.05", "Room Size", 18, 0.25, 0.35, {"a": 0.25, "b": 0.2}, intervals)
    table = ResultsReport([row], ["a", "b"], "", 1000, 0, 0.8)
    scores = {"checkpoint": sum(latent) / 2, "random init (seed 0)": 0.3, "random init (seed 1)": 0.32, "thumbnails": 0.3}
    section = demo.readout_section(RoomSizeReadout(18, 75, scores, latent), table, vlms)
    assert verdict in section and "fitted on the 75 train rooms" in section
    assert f"checkpoint: {100 * sum(latent) / 2:.1f} [{100 * latent[0]:.1f}, {100 * latent[1]:.1f}]" in section
    assert "random init: 31.0 ± 1.0 (2 seeds)" in section and "blind prior: 35.0; the models: a 25.0, b 20.0" in section


@pytest.mark.parametrize(
    "backbone, sentence",
    [(None, "Its interval clears every random-encoder baseline (random init 31.0): PSFM training put it there."),
     (0.45, "Its interval clears random init 31.0 but not random encoder, trained backbone 45.0: the same probe"),
     (0.40, "Its interval clears random init 31.0 but not random encoder, trained backbone 40.0:")],  # ties do not clear
)  # fmt: skip
def test_readout_section_compares_the_latent_with_random_encoders(backbone, sentence):
    from modeling_spa3r.probe import RoomSizeReadout
    from modeling_spa3r.report import ResultsReport, TaskRow

    row = TaskRow("room_size_estimation_MRA:.5:.95:.05", "Room Size", 18, 0.25, 0.35, {"a": 0.25}, {"a": (0.1, 0.3)})
    table = ResultsReport([row], ["a"], "", 1000, 0, 0.8)
    scores = {"checkpoint": 0.45, "random init (seed 0)": 0.3, "random init (seed 1)": 0.32, "thumbnails": 0.3}
    if backbone is not None:
        scores["random encoder, trained backbone (seed 0)"] = backbone
    section = demo.readout_section(RoomSizeReadout(18, 75, scores, (0.40, 0.50)), table)
    assert sentence in section
    # without the room size in the latent there is nothing for training to have put there
    below = demo.readout_section(RoomSizeReadout(18, 75, scores, (0.30, 0.50)), table)
    assert "does not beat the blind prior" in below and "random-encoder baseline" not in below and "clears" not in below
    everything = demo.readout_section(RoomSizeReadout(18, 75, {**scores, "random init (seed 0)": 0.5,
                                                               "random init (seed 1)": 0.5}, (0.40, 0.50)), table)
    listed = "random init 50.0" + ("" if backbone is None else f"; random encoder, trained backbone {100 * backbone:.1f}")
    assert f"clears no random-encoder baseline ({listed}):" in everything


def _trainer_state(folder: Path, train: list, held_out: list, other_scene: list | None = None) -> Path:
    """A trainer state; the held-out loss with another room's video is `other_scene` (default: the own one's)."""
    folder.mkdir()
    history = [{"epoch": e, "loss": v} for e, v in train]
    history += [{"epoch": e, "eval_own_loss": v} for e, v in held_out]
    history += [{"epoch": e, "eval_other_scene_loss": v} for e, v in (held_out if other_scene is None else other_scene)]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return folder


def test_sft_losses_and_section(tmp_path):
    """Exact curves and summary from the trainer state; the section names an overfitting run and a still-improving one."""
    runs = {"a": _trainer_state(tmp_path / "a", [[0.5, 2.0], [1.0, 1.0]], [[0, 6.0], [0.5, 1.5], [1.0, 1.8]],
                                [[0, 6.09], [0.5, 1.59], [1.0, 1.89]]),
            "b": _trainer_state(tmp_path / "b", [[0.5, 2.2], [1.0, 1.2]], [[0, 6.0], [0.5, 1.7], [1.0, 1.6]]),
            "c": _trainer_state(tmp_path / "c", [[1.0, 1.1]], [[0, 6.0], [0.5, 1.60], [1.0, 1.62]],
                                [[0, 6.0], [0.5, 1.6], [1.0, 1.6038]])}
    curves = demo.sft_losses(runs)
    assert curves["a"] == {"train": [[0.5, 2.0], [1.0, 1.0]], "held_out": [[0, 6.0], [0.5, 1.5], [1.0, 1.8]],
                           "held_out_other_scene": [[0, 6.09], [0.5, 1.59], [1.0, 1.89]], "held_out_start": 6.0,
                           "held_out_lowest": [0.5, 1.5], "held_out_end": 1.8, "held_out_other_scene_end": 1.89}  # fmt: skip
    section = demo.sft_section(curves)
    assert "| a | 2.000 → 1.000 | 6.000 → 1.500 (0.5) → 1.800 | +0.300 | 1.890 | +0.0900 |" in section
    assert "| b | 2.200 → 1.200 | 6.000 → 1.600 (1.0) → 1.600 | +0.000 | 1.600 | +0.0000 |" in section
    assert "a: the held-out loss is lowest at epoch 0.5 and ends 20 % above it" in section
    assert "a: another room's video raises its held-out loss by 0.090 nats per answer token (5.0 %)" in section
    assert "b: another room's video leaves its held-out loss unchanged" in section
    assert "c: another room's video lowers its held-out loss by 0.016 nats per answer token (1.0 %)" in section
    assert "b: the held-out loss is at its lowest at the end, still falling (1.600; train 1.200)." in section
    assert "c: the held-out loss ends within 2 % of its lowest (epoch 0.5): flat at the end (1.620; train 1.100)." in section
    for pair, difference in (("a − b", "+0.200"), ("a − c", "+0.180"), ("b − c", "-0.020")):  # every pair, in order
        assert f"Held-out loss at the end, {pair}: {difference} nats per answer token" in section
    # a run without videos (the text-only LM) has no held-out set with another room's video
    runs["t"] = _trainer_state(tmp_path / "t", [[1.0, 1.3]], [[0, 6.0], [1.0, 1.7]], other_scene=[])
    curves = demo.sft_losses(runs, without_video=["t"])
    assert curves["t"]["held_out_other_scene"] is None and curves["t"]["held_out_other_scene_end"] is None
    section = demo.sft_section(curves)
    assert "| t | 1.300 → 1.300 | 6.000 → 1.700 (1.0) → 1.700 | +0.000 | no video | - |" in section
    assert "t: another room's video" not in section and "Held-out loss at the end, a − t: +0.100" in section
    with pytest.raises(ValueError, match=r"t/trainer_state.json: no eval_other_scene_loss logged"):
        demo.sft_losses({"t": tmp_path / "t"})  # a run with videos must log it
    demo.plot_sft_losses(curves, tmp_path / "sft.png")
    assert (tmp_path / "sft.png").stat().st_size > 0
    _trainer_state(tmp_path / "d", [[1.0, 1.0]], [])
    with pytest.raises(ValueError, match=r"d/trainer_state.json: no eval_own_loss, eval_other_scene_loss logged"):
        demo.sft_losses({"d": tmp_path / "d"})


def test_demo_names_missing_training_packages(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(SystemExit) as error:
        demo.main(["--quick"])
    assert error.value.code == 2
    assert "needs trl" in capsys.readouterr().err
