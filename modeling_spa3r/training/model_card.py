"""The `README.md` model card of a training output folder: what was trained, on what, the losses, how to load it.

`spa3r pretrain` and `spa3r sft` call `write_training_card(trainer, data=...)` after saving; with the `auto_map` and
module files that `save_pretrained` writes, the folder is ready for `hf upload`.
"""

import json
import math
from pathlib import Path

from transformers.modelcard import extract_hyperparameters_from_trainer

PIPELINE_TAGS = {"Spa3RForPretraining": "image-feature-extraction", "Spa3RModel": "image-feature-extraction"}
COMMANDS = {"Spa3RForPretraining": "spa3r pretrain", "Spa3RModel": "spa3r pretrain"}


# logged values that are bookkeeping, not losses or metrics
NOT_METRICS = {"epoch", "step", "grad_norm", "learning_rate", "total_flos", "num_tokens", "eval_runtime",
               "eval_samples_per_second", "eval_steps_per_second"}  # fmt: skip


def metric_table(log_history: list[dict]) -> list[tuple[str, float, float, int, int]]:
    """(name, first value, last value, first step, last step) of every logged loss term / metric, train then `eval_*`."""
    first, last = {}, {}
    for entry in log_history:
        for name, value in entry.items():
            if name in NOT_METRICS or name.startswith("train_") or not isinstance(value, (int, float)):
                continue
            first.setdefault(name, (value, entry.get("step", 0)))
            last[name] = (value, entry.get("step", 0))
    names = sorted(first, key=lambda n: (n.startswith("eval_"), n not in ("loss", "eval_loss"), n))
    return [(n, first[n][0], last[n][0], first[n][1], last[n][1]) for n in names]


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def training_card(trainer, data: dict | None = None) -> str:
    """The card text for a trained `trainer` (its model saved in `trainer.args.output_dir`)."""
    output_dir = Path(trainer.args.output_dir)
    model = trainer.model
    base = getattr(model, "get_base_model", lambda: model)()  # a PEFT model wraps the trained one
    class_name = type(base).__name__
    is_adapter = (output_dir / "adapter_config.json").is_file()
    config_file = output_dir / "config.json"
    auto_map = json.loads(config_file.read_text()).get("auto_map", {}) if config_file.is_file() else {}
    auto_class = next((name for name in auto_map if name != "AutoConfig"), "AutoModel")
    pipeline_tag = PIPELINE_TAGS.get(class_name, "image-text-to-text")
    command = COMMANDS.get(class_name, "spa3r sft")
    tags = ["spa3r", "custom_code", "spatial-reasoning", "3d"] + (["peft", "lora"] if is_adapter else [])

    lines = ["---", "library_name: " + ("peft" if is_adapter else "transformers"), f"pipeline_tag: {pipeline_tag}"]
    lines += ["tags:"] + [f"- {tag}" for tag in tags] + ["---", "", f"# {output_dir.name}", ""]
    lines += [
        f"`{class_name}` trained with `{command}` (this repository's HF Trainer recipe) for "
        f"{trainer.state.global_step} optimizer steps.",
        "",
    ]
    if data:
        lines += ["## Training data", ""] + [f"- {key}: `{value}`" for key, value in data.items() if value] + [""]
    table = metric_table(trainer.state.log_history)
    if table:
        lines += ["## Losses and metrics", "", "| term | first logged | last logged | steps |", "|---|---:|---:|---|"]
        lines += [f"| {n} | {_number(a)} | {_number(b)} | {s}–{t} |" for n, a, b, s, t in table] + [""]
    lines += ["## Usage", "", "```python"]
    if is_adapter:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForImageTextToText",
            "",
            'base = AutoModelForImageTextToText.from_pretrained("BASE_MODEL", trust_remote_code=True)',
            f'model = PeftModel.from_pretrained(base, "{output_dir.name}")',
        ]
    else:
        lines += [
            f"from transformers import {auto_class}",
            "",
            f'model = {auto_class}.from_pretrained("{output_dir.name}", trust_remote_code=True)',
        ]
    lines += ["```", "", "## Training hyperparameters", ""]
    lines += [f"- {key}: {value}" for key, value in extract_hyperparameters_from_trainer(trainer).items()] + [""]
    return "\n".join(lines)


def write_training_card(trainer, data: dict | None = None) -> Path | None:
    """Write `README.md` into the output folder (main process only); returns its path."""
    if not trainer.is_world_process_zero():
        return None
    path = Path(trainer.args.output_dir) / "README.md"
    path.write_text(training_card(trainer, data))
    return path
