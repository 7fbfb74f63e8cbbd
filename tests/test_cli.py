import json
import subprocess
import sys

import pytest

from modeling_spa3r.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as error:
        main(["frobnicate"])
    assert error.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["convert", "synth", "eval"])
def test_subcommand_help_is_the_tool_help(command, capsys):
    with pytest.raises(SystemExit) as error:
        main([command, "--help"])
    assert error.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_installed_console_script_generates_synthetic_scenes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "modeling_spa3r.cli", "synth", "--scenes", "1", "--out", str(tmp_path),
         "--width", "56", "--height", "42", "--frames", "6", "--min-objects", "4", "--max-objects", "4"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "dataset.json").read_text())
    (scene,) = summary["splits"]["train"]
    assert len(list((tmp_path / "scenes" / scene / "color").glob("*.jpg"))) == 6


def test_path_check_skips_folders_a_command_creates(tmp_path):
    from modeling_spa3r.cli import check_paths

    data = tmp_path / "VSI-Bench"
    data.mkdir()
    new_root = tmp_path / "videos-to-extract"
    check_paths("prepare", ["vsibench", "--data", str(data), "--video-root", str(new_root)])
    check_paths("prepare", ["vsibench", "--data", str(data), f"--video-root={new_root}"])
    with pytest.raises(FileNotFoundError, match=f"not found: {new_root} \\(--video-root\\)"):
        check_paths("eval", ["--data", str(data), "--video-root", str(new_root)])
    with pytest.raises(FileNotFoundError, match="not found: .*missing"):
        check_paths("prepare", ["vsibench", "--data", str(tmp_path / "missing"), "--video-root", str(new_root)])
