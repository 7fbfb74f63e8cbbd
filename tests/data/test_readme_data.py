"""The README's "Data" commands, from the released files to a training run, executed at fixture size.

Tiny files in the released formats stand in for /data/...; the `spa3r` lines run as written, with the fixture
paths substituted and fixture-size model/step settings appended (FIXTURE_SIZE). Download lines are not run (no
network): the test checks they are the only lines left out.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ..fixtures_real_data import sens_scene, write_annotation_media, write_sens, write_scannetpp, write_vsibench_release

REPO = Path(__file__).resolve().parents[2]
SECTION = re.search(r"^## Data\n(.*?)^## ", (REPO / "README.md").read_text(), re.S | re.M).group(1)
COMMANDS = [
    " ".join(part.strip() for part in block.replace("\\\n", "\n").splitlines() if part.strip())
    for code in re.findall(r"^```bash\n(.*?)^```", SECTION, re.S | re.M)
    for block in re.split(r"\n(?=\S)", code.strip())
]
DOWNLOADS = re.compile(r"^(python download-scannet\.py|hf download|python -m dslr\.undistort) ")
FIXTURE_SIZE = {
    "pretrain": ["--max_steps", "1", "--bf16", "false", "--image_width", "56", "--views", "2", "2",
                 "--images_per_device", "4", "--dataloader_num_workers", "0", "--save_strategy", "no",
                 "--report_to", "none", "--disable_tqdm", "true"],
    "sft": ["--preset", "spa3-vlm-sft-cpu", "--max_steps", "1", "--save_strategy", "no", "--report_to", "none",
            "--disable_tqdm", "true"],
    "eval": ["--question-types", "object_counting,room_size_estimation", "--max-new-tokens", "1", "--no-progress"],
}  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme_data")
    for number in range(2):
        write_sens(root / "data/scannet/scans" / f"scene000{number}_00" / f"scene000{number}_00.sens",
                   sens_scene(num_frames=4))
    write_scannetpp(root / "data/scannetpp", {"train": ["0a5c013435", "1b2e3f4a5c"], "val": ["9f8e7d6c5b"]})
    records = write_annotation_media(root / "data/vsi590k")
    (root / "data/vsi590k/vsi_590k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_vsibench_release(root / "data/VSI-Bench")
    return root


def test_section_lists_every_step():
    tools = [c.split()[1] for c in COMMANDS if c.startswith("spa3r ")]
    assert tools == ["prepare", "pretrain", "prepare", "pretrain", "prepare", "sft", "prepare", "eval"]
    assert all(c.startswith("spa3r ") or DOWNLOADS.match(c) for c in COMMANDS), COMMANDS


def test_commands_run_from_release_files_to_training(data_root, teacher_checkpoint, training_vlm_dir):
    paths = {"/data/": f"{data_root}/data/", "runs/": f"{data_root}/runs/", "path/to/spa3r-teachers": str(teacher_checkpoint),
             "path/to/spa3-vlm-hf": str(training_vlm_dir), "nyu-visionx/VSI-Bench": f"{data_root}/data/VSI-Bench"}
    env = {**os.environ, "HF_HOME": str(data_root / "hf"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for command in COMMANDS:
        if DOWNLOADS.match(command):
            continue
        for placeholder, path in paths.items():
            command = command.replace(placeholder, path)
        args = shlex.split(command)[1:]
        args += FIXTURE_SIZE.get(args[0], [])
        if args[0] == "pretrain":
            args += ["--config_name", str(teacher_checkpoint / "train_config.json")]
        result = subprocess.run([sys.executable, "-m", "modeling_spa3r.cli", *args], cwd=data_root, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    export = data_root / "data/scannet/export"
    assert json.loads((export / "scene0001_00" / "export.json").read_text())["exported"] == 4
    assert json.loads((data_root / "runs/spa3r-base/trainer_state.json").read_text())["global_step"] == 1
    assert json.loads((data_root / "runs/spa3-vlm-sft/trainer_state.json").read_text())["global_step"] == 1
    assert len((data_root / "data/sft/vsi590k.jsonl").read_text().splitlines()) == 4
    results = json.loads((data_root / "runs/vsibench/results.json").read_text())
    assert results["num_questions"] == 2
    assert (data_root / "hf/vsibench/arkitscenes/41069025.mp4").is_file()  # extracted where lmms-eval looks


@pytest.mark.parametrize("tool", ["scannet", "scannetpp", "annotations", "vsibench"])
def test_processing_scripts_are_thin_entry_points_with_help(tool):
    result = subprocess.run([sys.executable, f"processing/{tool}.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: spa3r prepare {tool} "), result.stderr
