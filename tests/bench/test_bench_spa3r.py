"""bench/bench_spa3r.py runs every case at tiny size, and the cases that must agree compute the same loss."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_spa3r.py"


def test_bench_spa3r_tiny_runs_every_case(capsys):
    spec = importlib.util.spec_from_file_location("bench_spa3r", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cases = ["dense", "ours", "ours_cached"]  # one process each (ours_bf16 is `ours` with another config value)
    threads = torch.get_num_threads()
    try:
        results = bench.main(["--preset", "tiny", "--views", "4", "--encode_views", "--cases", *cases, "--repeats", "1",
                              "--threads", "1"])  # fmt: skip
    finally:  # main sets this process's thread count; later tests compare bit-exactly with fresh processes
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    expected = {(case, 4, what) for case in ("dense", "ours") for what in ("encode", "asymmetric", "symmetric")}
    assert set(results) == expected | {("ours_cached", 4, "symmetric")}
    assert all(row["seconds"] > 0 for row in results.values())
    for what in ("asymmetric", "symmetric"):  # exact work avoidance: the dense-mask baseline's loss
        assert abs(results["ours", 4, what]["value"] - results["dense", 4, what]["value"]) < 1e-5
    # the cached targets and cameras give the uncached symmetric step's loss
    assert abs(results["ours_cached", 4, "symmetric"]["value"] - results["ours", 4, "symmetric"]["value"]) < 1e-6
    assert "V= 4 symmetric  time ours / ours_cached" in printed and "V= 4 encode     peak ours / dense" in printed
