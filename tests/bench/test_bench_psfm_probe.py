"""bench/bench_psfm_probe.py runs end to end at tiny size (rooms, pretraining, both property families, latent usage)."""

import importlib.util
import json
from pathlib import Path

from modeling_spa3r.probe import FAMILIES, PROPERTIES

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_psfm_probe.py"


def test_bench_psfm_probe_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_psfm_probe", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--data", str(tmp_path / "rooms"), "--out", str(tmp_path / "run"), "--train-rooms", "8", "--heldout-rooms", "4",
            "--frames", "8", "--width", "56", "--height", "42", "--steps", "2", "--views", "2", "--seeds", "0",
            "--pretrain-args", "--image_width", "56", "--eval_steps", "1"]  # fmt: skip
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "run" / "probe.json").read_text())
    assert result["properties"] == {family: list(props) for family, props in FAMILIES.items()}
    wins = {family: sum(result["summary"][p]["beats_random"] for p in props) for family, props in FAMILIES.items()}
    counts = ", ".join(f"{wins[family]}/{len(props)} {family}" for family, props in FAMILIES.items())
    assert f"on {sum(wins.values())}/{len(PROPERTIES)} properties ({counts}; target: a clear majority, at least two thirds)" in printed
    assert ("TARGET NOT MET" in printed) == (3 * sum(wins.values()) < 2 * len(PROPERTIES))
    assert "random encoders on its own trained backbone" in printed and "latent usage on 4 held-out rooms" in printed
    assert set(result["seconds"]) == {"rooms", "pretrain", "probe", "total"}
