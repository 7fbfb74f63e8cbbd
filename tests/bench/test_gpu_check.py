"""bench/gpu_check.py runs end to end at tiny size on CPU, so it is ready for a device session."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def test_gpu_check_tiny_runs_both_checks(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    results = gpu_check.main(["--tiny", "--repeats", "1", "--json", str(tmp_path / "out.json")])
    printed = capsys.readouterr().out
    attention = results["attention"]
    assert [case["views"] for case in attention["cases"]] == [2, 4]
    for case in attention["cases"]:
        assert case["loss_diff"] < 1e-4  # mask-free and dense-mask steps compute the same loss
        assert case["ours_s"] > 0 and case["dense_s"] > 0
    assert attention["largest_views"] == {"ours": ">=4", "dense": ">=4"}  # nothing ran out of memory
    prefill = results["prefill"]
    assert 0 < prefill["geometry_s"] < prefill["prefill_s"] and 0 < prefill["geometry_share"] < 1
    assert prefill["sequence"] == 8 + 4 * (2 + 1) + 8  # text, 4 images of 1 merged token each, text
    assert "speed-up" in printed and "% of prefill" in printed
    assert json.loads((tmp_path / "out.json").read_text())["device"] == "CPU"
