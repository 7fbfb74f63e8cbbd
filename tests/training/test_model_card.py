"""Training outputs are Hub-ready: a README.md card (data, losses, hyperparameters, usage), `auto_map` and the module
files, so a fresh process without the package loads them with trust_remote_code."""

import json
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from ..fixtures_training import log_history, run_script
from ..test_remote_code import BLOCK_IMPORTS

TINY = ["--image_width", "56", "--views", "2", "4", "--images_per_device", "8", "--samples_per_scene", "4",
        "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]  # fmt: skip


def test_pretraining_output_has_card_auto_map_and_code(training_synth_root, tmp_path):
    output = tmp_path / "run"
    run_script(["training/pretrain.py", "--preset", "spa3r-synthetic-tiny", "--train_data", f"synthetic:{training_synth_root}",
                "--output_dir", str(output), "--max_steps", "4", "--logging_steps", "2", "--save_steps", "4", *TINY])  # fmt: skip
    config = json.loads((output / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_spa3r.Spa3RConfig",
        "AutoModelForPreTraining": "modeling_spa3r.Spa3RForPretraining",
    }
    for folder in (output, output / "checkpoint-4"):
        assert {"configuration_spa3r.py", "modeling_spa3r.py", "modeling_vggt.py"} <= {p.name for p in folder.glob("*.py")}

    card = (output / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: image-feature-extraction\n")
    assert "`Spa3RForPretraining` trained with `spa3r pretrain`" in card and "for 4 optimizer steps" in card
    assert f"- train_data: `['synthetic:{training_synth_root}']`" in card
    history = [entry for entry in log_history(output) if "loss" in entry]
    first, last = history[0], history[-1]
    assert f"| loss | {first['loss']:.4g} | {last['loss']:.4g} | {first['step']}–{last['step']} |" in card
    for term in ("geo/cos", "geo/l1", "sem/cos", "sem/l1", "depth_prob", "representation_loss"):
        assert f"| {term} | {first[term]:.4g} | {last[term]:.4g} |" in card
    assert "- learning_rate: 0.002" in card
    assert 'AutoModelForPreTraining.from_pretrained("run", trust_remote_code=True)' in card

    expected = load_file(str(output / "model.safetensors"))
    script = BLOCK_IMPORTS + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForPreTraining
        model = AutoModelForPreTraining.from_pretrained({str(output)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        torch.save({{k: v for k, v in model.state_dict().items()}}, "state.pt")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
