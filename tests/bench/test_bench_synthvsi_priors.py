"""bench/bench_synthvsi_priors.py runs end to end at tiny size and prints the question pool's priors."""

import importlib.util
import json
from pathlib import Path

from modeling_spa3r.data.priors import blind_priors
from modeling_spa3r.data.synthetic import POOL_FILE

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_synthvsi_priors.py"


def test_bench_synthvsi_priors_tiny(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_synthvsi_priors", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "synth"
    monkeypatch.setattr("sys.argv", [str(SCRIPT), "--scenes", "4", "--out", str(out), "--width", "48", "--height",
                                     "36", "--frames", "8", "--workers", "1"])  # fmt: skip
    bench.main()
    printed = capsys.readouterr().out
    read = lambda name: [json.loads(x) for x in (out / name).read_text().splitlines()]  # noqa: E731
    pool, held_out = read(POOL_FILE), read("synthvsi_val.jsonl") + read("synthvsi_test.jsonl")
    heading = f"## train rooms' question pool -> val + test ({len(pool)} / {len(held_out)} questions)"
    assert heading in printed and blind_priors(pool, held_out).table() in printed.split(heading)[1]
    (out / POOL_FILE).unlink()  # a dataset generated before the pool existed: said, not a crash
    monkeypatch.setattr("sys.argv", [str(SCRIPT), "--data", str(out)])
    bench.main()
    assert f"(no {POOL_FILE}: generated before the question pool existed" in capsys.readouterr().out
