"""`spa3r demo`: the whole method end to end on a CPU, offline, in about four minutes (`--quick`: under one).

1. render synthetic rooms with exact geometry and SynthVSI questions (train/val splits by disjoint seeds);
2. pretrain a small Spa3R with PSFM (`spa3r-synthetic-tiny`) on the train rooms; plot its loss terms and the
   predicted vs target feature fields of held-out views of a validation room;
3. build a small Qwen2.5-VL (real classes, a tokenizer trained offline on the synthetic text) and from it a Spa3-VLM
   with the pretrained Spa3R, plus the same VLM without geometry;
4. fine-tune both on SynthVSI-train with the SFT pipeline (`spa3-vlm-sft-cpu`);
5. evaluate both on SynthVSI-val with the VSI-Bench scorer and print the per-task table side by side.

Everything lands in `--out` (default `runs/demo`): `loss_curves.png`, `feature_fields.png`, `results.md`,
`results.json`, the checkpoints and the predictions.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

#: the two VLMs compared: name → (folder suffix, whether the processor feeds Spa3R)
VARIANTS = {"Spa3-VLM": ("spa3-vlm", True), "VLM without geometry": ("no-geometry", False)}


@dataclass(frozen=True)
class DemoSettings:
    scenes: int = 40
    frames: int = 32
    width: int = 112
    height: int = 84
    pretrain_steps: int = 600
    sft_epochs: float = 8.0
    eval_frames: int = 4
    vocab_size: int = 512
    llm_hidden_size: int = 64


QUICK = DemoSettings(scenes=12, frames=16, pretrain_steps=150, sft_epochs=4.0)


class Stopwatch:
    """Prints each stage with its duration and keeps the durations."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}

    def stage(self, name: str):
        watch = self

        class _Stage:
            def __enter__(self):
                print(f"\n== {name}", flush=True)
                self.begin = time.perf_counter()

            def __exit__(self, *exc):
                watch.stages[name] = time.perf_counter() - self.begin
                print(f"== {name}: {watch.stages[name]:.0f} s", flush=True)

        return _Stage()

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start


def generate_data(out: Path, settings: DemoSettings, seed: int) -> dict:
    from .data import SynthConfig, generate_dataset

    config = SynthConfig(width=settings.width, height=settings.height, frames=settings.frames, fps=4, max_objects=12)
    return generate_dataset(out, settings.scenes, seed=seed, config=config, workers=2, val_fraction=0.25, test_fraction=0.0)


def pretrain(data: Path, summary: dict, out: Path, settings: DemoSettings, seed: int) -> Path:
    """PSFM on the train rooms only (the validation rooms stay unseen for the feature-field picture)."""
    from .training.pretrain import main as pretrain_main

    train_rooms = out / "train_rooms"
    train_rooms.mkdir(parents=True, exist_ok=True)
    for name in summary["splits"]["train"]:
        link = train_rooms / name
        if not link.exists():
            link.symlink_to((data / "scenes" / name).resolve(), target_is_directory=True)
    output_dir = out / "spa3r"
    pretrain_main(
        ["--preset", "spa3r-synthetic-tiny", "--train_data", f"synthetic:{train_rooms}", "--output_dir", str(output_dir),
         "--max_steps", str(settings.pretrain_steps), "--save_steps", str(settings.pretrain_steps), "--logging_steps",
         str(max(1, settings.pretrain_steps // 40)), "--report_to", "none", "--seed", str(seed), "--disable_tqdm", "false"]
    )  # fmt: skip
    return output_dir


def plot_pretraining_losses(run_dir: Path, png: Path) -> dict:
    """Loss terms of the PSFM run against the step → PNG; returns the first and last logged values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "loss" in entry]
    names = ["loss"] + sorted(k for k in logged[0] if "/" in k or k == "depth_prob")
    figure, axis = plt.subplots(figsize=(7, 4))
    for name in names:
        axis.plot([e["step"] for e in logged], [e[name] for e in logged], label="total" if name == "loss" else name,
                  linewidth=2.5 if name == "loss" else 1.2)  # fmt: skip
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.set_title("Spa3R PSFM pretraining on synthetic rooms")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
    return {name: (logged[0][name], logged[-1][name]) for name in names}


def plot_feature_fields(run_dir: Path, scene: Path, settings: DemoSettings, png: Path) -> dict:
    """Predicted vs rendered fields of the last two of four views of an unseen room (one shared PCA per field)."""
    from .data import MultiViewDataset
    from .modeling_spa3r import Spa3RForPretraining
    from .training.pretrain import PretrainingCollator
    from .visualize import fields_figure

    model = Spa3RForPretraining.from_pretrained(run_dir).eval()
    sample = MultiViewDataset([scene], views=(4, 4), stride=(3, 3), width=settings.width, seed=0)[0]
    sample["view_mask"] = torch.tensor([False, False, True, True])
    collator = PretrainingCollator(model.config.vggt_config.patch_size, "rendered", "ground_truth", model.config.semantic_size)
    batch = collator([sample])
    with torch.inference_mode():
        out = model(**batch)
    patch = model.config.vggt_config.patch_size
    grid_hw = (batch["pixel_values"].shape[-2] // patch, batch["pixel_values"].shape[-1] // patch)
    held_out = [2, 3]
    fields = {
        "geometry": (out.pred_geo[0, held_out], out.target_geo[0, held_out]),  # normals ‖ depth
        "semantics": (out.pred_sem[0, held_out], out.target_sem[0, held_out]),  # class histogram per patch
    }
    cosines = fields_figure(
        fields, png, images=batch["pixel_values"][0, held_out], grid_hw=grid_hw,
        view_labels=[f"held-out view {i}" for i in held_out],
        title=f"{scene.name}: views the encoder never saw\ngeometry = normals ‖ depth\nsemantics = class mix per patch",
    )  # fmt: skip
    return {name: [round(float(c), 3) for c in values] for name, values in cosines.items()}


def build_vlms(data: Path, spa3r_dir: Path, out: Path, settings: DemoSettings, seed: int) -> dict[str, Path]:
    """A small Qwen2.5-VL + the pretrained Spa3R → initial Spa3-VLM; the no-geometry twin differs only in its
    processor (no Spa3R inputs, so the model runs as the base Qwen2.5-VL)."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    from .modeling_spa3_vlm import Spa3VLMForConditionalGeneration
    from .processing_spa3_vlm import Spa3VLMProcessor
    from .small_models import build_tokenizer, small_qwen_config

    sft_records = json.loads((data / "sft" / "synthvsi_train_sft.json").read_text())
    texts = [turn["value"].replace("<video>", "") for record in sft_records for turn in record["conversations"]]
    tokenizer = build_tokenizer(texts, vocab_size=settings.vocab_size)
    torch.manual_seed(seed)
    qwen = Qwen2_5_VLForConditionalGeneration(small_qwen_config(tokenizer, hidden_size=settings.llm_hidden_size))
    qwen.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    qwen.generation_config.pad_token_id = tokenizer.pad_token_id
    qwen.save_pretrained(out / "qwen-small")
    vlm = Spa3VLMForConditionalGeneration.from_qwen_and_spa3r(out / "qwen-small", spa3r_dir)
    vlm.generation_config = qwen.generation_config
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=16 * 28 * 28, patch_size=14, merge_size=2)
    directories = {}
    for name, (slug, use_geometry) in VARIANTS.items():
        directory = out / f"init-{slug}"
        processor = Spa3VLMProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
            geometry_size=settings.width, num_frames=settings.eval_frames, min_frames=2, max_frames=8,
            use_geometry=use_geometry,
        )  # fmt: skip
        vlm.save_pretrained(directory)
        processor.save_pretrained(directory)
        directories[name] = directory
    return directories


def fine_tune(init_dir: Path, data: Path, output_dir: Path, settings: DemoSettings, seed: int) -> Path:
    from .training.sft import main as sft_main

    sft_main(
        ["--preset", "spa3-vlm-sft-cpu", "--model_name_or_path", str(init_dir), "--train_file",
         str(data / "sft" / "synthvsi_train_sft.json"), "--media_root", str(data), "--output_dir", str(output_dir),
         "--max_steps", "-1", "--num_train_epochs", str(settings.sft_epochs), "--per_device_train_batch_size", "4",
         "--learning_rate", "2e-3", "--save_strategy", "no", "--activation_checkpointing", "false",
         "--logging_steps", "10", "--report_to", "none", "--seed", str(seed), "--disable_tqdm", "false"]
    )  # fmt: skip
    return output_dir


def evaluate(model_dir: Path, data: Path, output_dir: Path, settings: DemoSettings) -> dict:
    from .eval_vsibench import main as eval_main

    eval_main(
        ["--model", str(model_dir), "--data", str(data / "synthvsi_val.jsonl"), "--video-root", str(data),
         "--output-dir", str(output_dir), "--num-frames", str(settings.eval_frames), "--batch-size", "8"]
    )  # fmt: skip
    return json.loads((output_dir / "results.json").read_text())


TASK_NAMES = {
    "object_counting_MRA:.5:.95:.05": "object count",
    "object_abs_distance_MRA:.5:.95:.05": "absolute distance",
    "object_size_estimation_MRA:.5:.95:.05": "object size",
    "room_size_estimation_MRA:.5:.95:.05": "room size",
    "object_rel_distance_accuracy": "relative distance",
    "object_rel_direction_accuracy": "relative direction",
    "route_planning_accuracy": "route plan",
    "obj_appearance_order_accuracy": "appearance order",
    "overall": "overall",
}


def comparison_table(results: dict[str, dict]) -> str:
    """Markdown table: a row per task present, a column per model (scores in %)."""
    names = list(results)
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label in TASK_NAMES.items():
        if key in results[names[0]]["results"]:
            lines.append(f"| {label} | " + " | ".join(f"{100 * results[n]['results'][key]:.1f}" for n in names) + " |")
    return "\n".join(lines)


def run(out: Path, settings: DemoSettings, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    watch = Stopwatch()
    data = out / "data"
    with watch.stage("1/5 synthetic rooms and SynthVSI"):
        summary = generate_data(data, settings, seed)
        print(f"{len(summary['splits']['train'])} train rooms ({summary['questions']['train']} questions), "
              f"{len(summary['splits']['val'])} validation rooms ({summary['questions']['val']} questions)")  # fmt: skip
    with watch.stage("2/5 PSFM pretraining of Spa3R"):
        spa3r_dir = pretrain(data, summary, out, settings, seed)
        losses = plot_pretraining_losses(spa3r_dir, out / "loss_curves.png")
        val_room = data / "scenes" / sorted(summary["splits"]["val"])[0]
        cosines = plot_feature_fields(spa3r_dir, val_room, settings, out / "feature_fields.png")
    with watch.stage("3/5 small Spa3-VLM and its no-geometry twin"):
        init_dirs = build_vlms(data, spa3r_dir, out, settings, seed)
    results = {}
    with watch.stage("4/5 SFT on SynthVSI-train"):
        tuned = {name: fine_tune(init_dirs[name], data, out / f"sft-{slug}", settings, seed)
                 for name, (slug, _) in VARIANTS.items()}  # fmt: skip
    with watch.stage("5/5 SynthVSI-val evaluation"):
        for name, path in tuned.items():
            results[name] = evaluate(path, data, out / f"eval-{path.name[4:]}", settings)
    table = comparison_table(results)
    report = {
        "settings": asdict(settings),
        "pretraining_loss_first_last": losses,
        "held_out_field_cosine": cosines,
        "results": results,
        "seconds": {**watch.stages, "total": watch.total},
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(f"# SynthVSI-val ({summary['questions']['val']} questions)\n\n{table}\n")
    print(f"\nSynthVSI-val, {summary['questions']['val']} questions, scores in %:\n{table}")
    print(f"\nPSFM loss {losses['loss'][0]:.3f} → {losses['loss'][1]:.3f}; held-out field cosine {cosines}")
    print(f"wrote {out / 'loss_curves.png'}, {out / 'feature_fields.png'}, {out / 'results.md'} in {watch.total:.0f} s")
    return report


def missing_packages() -> list[str]:
    """Packages of the training/eval extras the demo needs that are not installed."""
    import importlib.util

    return [name for name in ("accelerate", "datasets", "trl") if importlib.util.find_spec(name) is None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spa3r demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="smaller run (under a minute on 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        parser.error(f"the demo trains and evaluates models and needs {', '.join(missing)}: pip install -e \".[dev]\"")
    run(args.out, QUICK if args.quick else DemoSettings(), args.seed)
    return 0
