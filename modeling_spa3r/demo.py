"""`spa3r demo`: the whole method end to end on a CPU, offline; the end of the run prints the measured time per stage.

1. render synthetic rooms with exact geometry and SynthVSI questions (train/val splits by disjoint seeds);
2. pretrain a small Spa3R with room-level PSFM (`spa3r-synthetic-room`) on the train rooms, with the held-out loss
   on the validation rooms; plot train and held-out loss curves and the predicted vs target feature fields of
   held-out views of a validation room; answer SynthVSI-val's room-size questions from the latent by a linear probe
   (what the latent holds, apart from whether a VLM reads it);
3. build a small Qwen2.5-VL (real classes, a tokenizer trained offline on the synthetic text) and from it a Spa3-VLM
   with the pretrained Spa3R, plus the same VLM without geometry and the same model without videos (the text-only
   LM: what the same training learns from the question text alone);
4. fine-tune the three on SynthVSI-train with the SFT pipeline (`spa3-vlm-sft-cpu`), with the answer loss on
   SynthVSI-val's conversations (held-out rooms) before and during training;
5. evaluate them on SynthVSI-val with the VSI-Bench scorer (the text-only LM blind, `--num-frames 0`) and print the
   per-task table side by side.

With `vlm_seeds` > 1 (`--vlm-seeds`), stages 3-5 run again for each extra training seed (`vlm-seed-<s>/`, without
the input controls), and `results.md` gets each task's spread over seeds.

Everything lands in `--out` (default `runs/demo`): `loss_curves.png`, `feature_fields.png`, `sft_curves.png`,
`results.md` (the table, then the fine-tuning losses, the input controls, the spread over training seeds and the
room-size readout), `results.json`, the checkpoints and the predictions.
"""

import argparse
import contextlib
import itertools
import json
import math
import re
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

#: the models compared: name → (folder suffix, what each sees beside the question: its video's frames, Spa3R views of
#: them). The text-only LM is the no-geometry twin's initial model fine-tuned and asked without the videos: what the
#: same training learns from the question text alone.
VARIANTS = {"Spa3-VLM": ("spa3-vlm", ("frames", "geometry")), "VLM without geometry": ("no-geometry", ("frames",)),
            "text-only LM": ("text-only", ())}  # fmt: skip
SFT_BATCH_SIZE = 4
PARALLEL_RUNS = 2  # SFT runs at a time in stage 4, one core each
SFT_EVALUATIONS = 4  # held-out loss evaluations per SFT run, plus one before training
#: SFT's train conversations (relative to the data folder)
TRAIN_CONVERSATIONS = "sft/synthvsi_train_sft.json"
#: SFT's held-out sets (relative to the data folder): SynthVSI-val's conversations with each question's own video,
#: and the same with another room's (written by `other_scene_conversations`)
HELD_OUT = {"own": "sft/synthvsi_val_sft.json", "other_scene": "sft/synthvsi_val_sft_other_scene.json"}
#: the text-only LM's train and held-out conversations: the same, without videos (written by `text_only_conversations`)
TEXT_ONLY = {"train": "sft/synthvsi_train_sft_text_only.json", "own": "sft/synthvsi_val_sft_text_only.json"}
#: the SFT losses the demo reads from each run's log: train, and the two held-out sets
SFT_LOGGED = {"train": "loss", "held_out": "eval_own_loss", "held_out_other_scene": "eval_other_scene_loss"}


@dataclass(frozen=True)
class DemoSettings:
    scenes: int = 100
    frames: int = 32
    width: int = 112
    height: int = 84
    pretrain_steps: int = 400
    sft_epochs: float = 6.0
    eval_frames: int = 4
    vocab_size: int = 512
    llm_hidden_size: int = 128
    llm_heads: int = 8
    vlm_seeds: int = 1  # the models of stage 4 trained and evaluated this many times (training seeds seed, seed + 1, ...)


QUICK = DemoSettings(scenes=12, frames=16, pretrain_steps=100, sft_epochs=10.0)


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
    summary = generate_dataset(out, settings.scenes, seed=seed, config=config, workers=2, val_fraction=0.25,
                               test_fraction=0.0)  # fmt: skip
    other_scene_conversations(out)
    text_only_conversations(out)
    return summary


def pretrain(data: Path, summary: dict, out: Path, settings: DemoSettings, seed: int) -> Path:
    """PSFM on the train rooms only; the validation rooms (unseen) give the held-out loss and the feature fields."""
    from .training.pretrain import main as pretrain_main

    rooms = {}
    for split in ("train", "val"):
        rooms[split] = out / f"{split}_rooms"
        rooms[split].mkdir(parents=True, exist_ok=True)
        for name in summary["splits"][split]:
            link = rooms[split] / name
            if not link.exists():
                link.symlink_to((data / "scenes" / name).resolve(), target_is_directory=True)
    output_dir = out / "spa3r"
    steps = settings.pretrain_steps
    pretrain_main(
        ["--preset", "spa3r-synthetic-room", "--train_data", f"synthetic:{rooms['train']}", "--eval_data",
         f"synthetic:{rooms['val']}", "--eval_fraction", "0", "--eval_views", str(min(6, settings.frames)),
         "--output_dir", str(output_dir), "--max_steps", str(steps), "--save_steps", str(steps),
         "--logging_steps", str(max(1, steps // 40)), "--eval_steps", str(max(1, steps // 10)), "--report_to", "none",
         "--seed", str(seed), "--disable_tqdm", "false"]
    )  # fmt: skip
    return output_dir


def plot_pretraining_losses(run_dir: Path, png: Path) -> dict:
    """
    Train and held-out loss curves of the PSFM run → PNG. Left: the representation-shaping loss and the detached
    depth probe, train (lines) vs held-out rooms (markers); right: every loss term one by one. Returns the first
    and last logged value of each train and held-out curve (`loss`, `eval_loss`, ...).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    train = [entry for entry in history if "loss" in entry]
    held_out = [entry for entry in history if "eval_loss" in entry]
    terms = sorted(k for k in train[0] if "/" in k)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, names in ((left, ["representation_loss", "probe_loss"]), (right, terms)):
        for colour, name in zip(colours, names):
            label = {"representation_loss": "representation (trains the model)", "probe_loss": "depth probe (detached)"}
            axis.plot([e["step"] for e in train], [e[name] for e in train], color=colour, linewidth=1.8,
                      label=f"train: {label.get(name, name)}")  # fmt: skip
            axis.plot([e["step"] for e in held_out], [e[f"eval_{name}"] for e in held_out], "o--", color=colour,
                      markersize=4, linewidth=1, label=f"held-out rooms: {label.get(name, name)}")  # fmt: skip
        axis.set_xlabel("step")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the curves, not over them
    left.set_ylabel("loss")
    left.set_title("representation-shaping loss vs detached probe")
    right.set_title("loss terms one by one (backbone_geo: backbone supervision,\nnot part of the representation loss)")
    figure.suptitle("Spa3R PSFM pretraining on synthetic rooms: train (lines) vs held-out rooms (dashed, dots)")
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
    names = ["loss", "representation_loss", "probe_loss"] + terms
    curves = {name: (train[0][name], train[-1][name]) for name in names}
    curves.update({f"eval_{name}": (held_out[0][f"eval_{name}"], held_out[-1][f"eval_{name}"]) for name in names if held_out})
    return curves


def plot_feature_fields(run_dir: Path, scene: Path, settings: DemoSettings, png: Path) -> dict:
    """Predicted vs rendered fields of an unseen room: 6 views spread along its path, the 3 with most objects held
    out (never the reference view 0), the other 3 the context. Colours: a PCA fitted on the targets only; beside
    each cosine, the mean-field baseline's. Returns the cosines per held-out view and their baselines."""
    from .modeling_spa3r import Spa3RForPretraining
    from .visualize import fields_figure, predict_fields, rendered_inputs, views_with_objects

    model = Spa3RForPretraining.from_pretrained(run_dir).eval()
    pixel_values, inputs = rendered_inputs(model, scene, min(6, settings.frames), settings.width)
    held_out = views_with_objects(inputs["semantic_targets"], pixel_values.shape[1] // 2)
    result = predict_fields(model, pixel_values, held_out, inputs)
    fields = {"geometry": result["fields"]["geo"], "semantics": result["fields"]["sem"]}  # normals ‖ depth; class mix
    cosines = fields_figure(
        fields, png, images=pixel_values[0, held_out], grid_hw=result["grid_hw"],
        view_labels=[f"held-out view {i}" for i in held_out],
        title=f"{scene.name}: views the encoder never saw (the most objects of 6 spread views)\ngeometry = normals ‖ "
              "depth, semantics = class mix per patch; colours: PCA fitted on the target\n'mean field' = cosine of "
              "the target's mean feature everywhere (the baseline a prediction must beat)",
    )  # fmt: skip
    return {name: [round(float(c), 3) for c in values] for name, values in cosines.items()}


def sft_losses(run_dirs: dict[str, Path], without_video: Collection[str] = ()) -> dict[str, dict]:
    """Per run, from its SFT `trainer_state.json`, as [[epoch, loss], ...]: the train answer-token loss, the
    SynthVSI-val one with each question's own video (`held_out`) and with another room's (`held_out_other_scene`;
    None for the runs named in `without_video`); and the own-video held-out loss before training, at its lowest (with
    the epoch) and at the end."""
    curves = {}
    for name, run_dir in run_dirs.items():
        state = run_dir / "trainer_state.json"
        history = json.loads(state.read_text())["log_history"]
        logged = {key: column for key, column in SFT_LOGGED.items()
                  if name not in without_video or key != "held_out_other_scene"}  # fmt: skip
        series = {key: [[entry["epoch"], entry[column]] for entry in history if column in entry]
                  for key, column in logged.items()}  # fmt: skip
        missing = [logged[key] for key, points in series.items() if not points]
        if missing:
            raise ValueError(f"{state}: no {', '.join(missing)} logged")
        own, other = series["held_out"], series.get("held_out_other_scene")
        curves[name] = {**series, "held_out_start": own[0][1], "held_out_lowest": min(own, key=lambda point: point[1]),
                        "held_out_end": own[-1][1], "held_out_other_scene": other,
                        "held_out_other_scene_end": other[-1][1] if other else None}  # fmt: skip
    return curves


def variant_sft_losses(folder: Path) -> dict[str, dict]:
    """`sft_losses` of every variant trained into `folder`."""
    return sft_losses({name: sft_dir(folder, name) for name in VARIANTS},
                      without_video=[name for name in VARIANTS if not sees_frames(name)])  # fmt: skip


def plot_sft_losses(curves: dict[str, dict], png: Path) -> None:
    """Train (lines) and SynthVSI-val (dashed, dots) answer-token loss of each variant's SFT, by epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (name, curve) in zip(colours, curves.items()):
        axis.plot(*zip(*curve["train"]), color=colour, linewidth=1.5, label=f"{name}: train")
        axis.plot(*zip(*curve["held_out"]), "o--", color=colour, markersize=4, linewidth=1,
                  label=f"{name}: held-out rooms (end {curve['held_out_end']:.3f})")  # fmt: skip
        if curve["held_out_other_scene"]:
            axis.plot(*zip(*curve["held_out_other_scene"]), "x:", color=colour, markersize=5, linewidth=1,
                      label=f"{name}: held-out, another room's video (end {curve['held_out_other_scene_end']:.3f})")  # fmt: skip
    axis.set_xlabel("epoch")
    axis.set_ylabel("answer-token loss (nats)")
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 1, 2, 5 rather than 10^0 · 2
    axis.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("SFT on SynthVSI-train: train (lines) vs SynthVSI-val conversations\n(dashed: own video, none for "
                   "the text-only LM; dotted: another room's video)")
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)


def sft_section(curves: dict[str, dict]) -> str:
    """Markdown: each variant's train and held-out answer loss, whether the held-out loss still fell at the end, and
    how another room's video changes the held-out loss at the end (the likelihood version of the input controls)."""
    lines = ["## Fine-tuning: train vs held-out answer loss", "",
             "Answer-token cross-entropy (nats) of the SFT runs: on SynthVSI-train, and on SynthVSI-val's conversations "
             "(held-out rooms) before and during training, with each question's own video and with another room's "
             "(`sft_curves.png`); the text-only LM's without videos.", "",
             "| model | train, first → last logged | held-out, before → lowest (epoch) → end | end − lowest "
             "| held-out at the end, another room's video | another − own |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    notes = []
    for name, curve in curves.items():
        first, last = curve["train"][0][1], curve["train"][-1][1]
        epoch, lowest = curve["held_out_lowest"]
        start, end, other = curve["held_out_start"], curve["held_out_end"], curve["held_out_other_scene_end"]
        swapped = "no video | -" if other is None else f"{other:.3f} | {other - end:+.4f}"
        lines.append(f"| {name} | {first:.3f} → {last:.3f} | {start:.3f} → {lowest:.3f} ({epoch:.1f}) → {end:.3f} "
                     f"| {end - lowest:+.3f} | {swapped} |")  # fmt: skip
        if end > lowest * 1.02:
            notes.append(f"{name}: the held-out loss is lowest at epoch {epoch:.1f} and ends "
                         f"{100 * (end / lowest - 1):.0f} % above it: the later epochs fit the train answers, not what "
                         f"carries over to new rooms.")  # fmt: skip
        elif end > lowest:
            notes.append(f"{name}: the held-out loss ends within 2 % of its lowest (epoch {epoch:.1f}): flat at the end "
                         f"({end:.3f}; train {last:.3f}).")  # fmt: skip
        else:
            notes.append(f"{name}: the held-out loss is at its lowest at the end, still falling ({end:.3f}; train "
                         f"{last:.3f}).")  # fmt: skip
        if other is not None and abs(other - end) < 0.001:
            notes.append(f"{name}: another room's video leaves its held-out loss unchanged (within 0.001 nats): its "
                         f"answers' likelihood does not depend on what it sees.")  # fmt: skip
        elif other is not None:
            notes.append(f"{name}: another room's video {'raises' if other > end else 'lowers'} its held-out loss by "
                         f"{abs(other - end):.3f} nats per answer token ({100 * abs(other / end - 1):.1f} %)"
                         + (": its own room's video helps it." if other > end else
                            ": what it takes from its video does not carry over to new rooms."))  # fmt: skip
    for a, b in itertools.combinations(curves, 2):
        difference = curves[a]["held_out_end"] - curves[b]["held_out_end"]
        notes.append(f"Held-out loss at the end, {a} − {b}: {difference:+.3f} nats per answer token (one training run "
                     f"each; `--vlm-seeds` measures the spread between training seeds).")  # fmt: skip
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def room_size_readout(spa3r_dir: Path, data: Path, out: Path, settings: DemoSettings, seed: int):
    """SynthVSI-val's Room Size answered from the Spa3R latent of `eval_frames` spread views by a ridge probe fitted
    on the train rooms (`modeling_spa3r.probe.readout_room_size`), against random encoders and thumbnails: what the
    latent holds of a question the VLMs are asked, apart from whether they learn to read it. None without
    room-size questions."""
    from .probe import readout_room_size

    records = [json.loads(line) for line in (data / "synthvsi_val.jsonl").read_text().splitlines() if line.strip()]
    questions = [r for r in records if r["question_type"] == "room_size_estimation"]
    if not questions:
        return None
    train_rooms = sorted((out / "train_rooms").iterdir())
    return readout_room_size(spa3r_dir, train_rooms, questions, data / "scenes", num_views=settings.eval_frames,
                             seed=seed, progress=False)  # fmt: skip


def build_vlms(data: Path, spa3r_dir: Path, out: Path, settings: DemoSettings, seed: int) -> dict[str, Path]:
    """A small Qwen2.5-VL + the pretrained Spa3R → initial Spa3-VLM; the no-geometry twin and the text-only LM differ
    only in their processor (no Spa3R inputs, so the model runs as the base Qwen2.5-VL) and, the text-only LM, in
    their data (no videos)."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    from .modeling_spa3_vlm import Spa3VLMForConditionalGeneration
    from .processing_spa3_vlm import Spa3VLMProcessor
    from .small_models import build_tokenizer, small_qwen_config

    sft_records = json.loads((data / TRAIN_CONVERSATIONS).read_text())
    texts = [turn["value"].replace("<video>", "") for record in sft_records for turn in record["conversations"]]
    tokenizer = build_tokenizer(texts, vocab_size=settings.vocab_size)
    torch.manual_seed(seed)
    config = small_qwen_config(tokenizer, hidden_size=settings.llm_hidden_size, num_heads=settings.llm_heads)
    qwen = Qwen2_5_VLForConditionalGeneration(config)
    qwen.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    qwen.generation_config.pad_token_id = tokenizer.pad_token_id
    qwen.save_pretrained(out / "qwen-small")
    vlm = Spa3VLMForConditionalGeneration.from_qwen_and_spa3r(out / "qwen-small", spa3r_dir)
    vlm.generation_config = qwen.generation_config
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=16 * 28 * 28, patch_size=14, merge_size=2)
    directories = {}
    for name, (slug, inputs) in VARIANTS.items():
        directory = out / f"init-{slug}"
        processor = Spa3VLMProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
            geometry_size=settings.width, num_frames=settings.eval_frames, min_frames=2, max_frames=8,
            use_geometry="geometry" in inputs,
        )  # fmt: skip
        vlm.save_pretrained(directory)
        processor.save_pretrained(directory)
        directories[name] = directory
    return directories


def other_scene_conversations(data: Path) -> None:
    """SynthVSI-val's SFT conversations, each with the next room's video instead of its own (the donor rule of
    `spa3r eval --frames-from other-scene`) → HELD_OUT["other_scene"]: the held-out loss of a model that does not use
    what it sees is the same on both."""
    from .eval_vsibench import next_videos

    records = json.loads((data / HELD_OUT["own"]).read_text())
    donor = next_videos((record["video"] for record in records), "the SFT held-out control")
    swapped = [{**record, "video": donor[record["video"]]} for record in records]
    (data / HELD_OUT["other_scene"]).write_text(json.dumps(swapped, indent=1))


def text_only_conversations(data: Path) -> None:
    """SynthVSI-train's and -val's SFT conversations without their videos (record and placeholder) → TEXT_ONLY."""
    for source, target in ((TRAIN_CONVERSATIONS, TEXT_ONLY["train"]), (HELD_OUT["own"], TEXT_ONLY["own"])):
        records = json.loads((data / source).read_text())
        for record in records:
            del record["video"]
            for turn in record["conversations"]:
                turn["value"] = re.sub(r"<video>\n?", "", turn["value"])
        (data / target).write_text(json.dumps(records, indent=1))


def sees_frames(name: str) -> bool:
    """Whether a variant is trained and asked with its questions' videos (the text-only LM is not)."""
    return "frames" in VARIANTS[name][1]


def sft_dir(out: Path, name: str) -> Path:
    """A variant's SFT output folder (its log is the same path + `.log`)."""
    return out / f"sft-{VARIANTS[name][0]}"


def evaluation_dirs(out: Path) -> dict[str, Path]:
    """Each variant's SynthVSI-val evaluation folder (the controls go beside it, `control_dir`)."""
    return {name: out / f"eval-{slug}" for name, (slug, _) in VARIANTS.items()}


def fine_tune(name: str, init_dir: Path, data: Path, output_dir: Path, settings: DemoSettings, seed: int,
              callbacks=None) -> Path:  # fmt: skip
    """SFT of variant `name` on SynthVSI-train; the answer-token loss on SynthVSI-val's conversations, with each
    question's own video and with another room's (the text-only LM: without videos), is logged before training and
    SFT_EVALUATIONS times during it (`sft_curves.png`)."""
    from .training.sft import main as sft_main

    train, held_out = (TRAIN_CONVERSATIONS, HELD_OUT) if sees_frames(name) else (TEXT_ONLY["train"], {"own": TEXT_ONLY["own"]})
    eval_steps = math.ceil(sft_steps(data, settings) / SFT_EVALUATIONS)  # the last evaluation is the final step's
    sft_main(
        ["--preset", "spa3-vlm-sft-cpu", "--model_name_or_path", str(init_dir), "--train_file", str(data / train),
         "--eval_file", *[f"{key}={data / path}" for key, path in held_out.items()],
         "--eval_strategy", "steps", "--eval_steps", str(eval_steps), "--eval_on_start", "true",
         "--per_device_eval_batch_size", "8", "--media_root", str(data), "--output_dir", str(output_dir),
         "--max_steps", "-1", "--num_train_epochs", str(settings.sft_epochs), "--per_device_train_batch_size",
         str(SFT_BATCH_SIZE),
         "--learning_rate", "2e-3", "--video_cache_size", str(len(list((data / "scenes").iterdir()))),
         "--save_strategy", "no", "--activation_checkpointing", "false",
         "--logging_steps", str(min(10, eval_steps)), "--report_to", "none", "--seed", str(seed),
         "--disable_tqdm", "true"],
        callbacks=callbacks,
    )  # fmt: skip
    return output_dir


def evaluate(model_dir: Path, data: Path, output_dir: Path, num_frames: int, control: str | None = None) -> dict:
    """SynthVSI-val with the VSI-Bench runner on `num_frames` frames per question (0: blind, the question alone);
    `control` ("frames" or "geometry") gives each question that input from another room's video instead of its own."""
    import shutil

    from .eval_vsibench import main as eval_main

    shutil.rmtree(output_dir, ignore_errors=True)  # answers of an earlier demo run's model (the model was retrained)
    eval_main(
        ["--model", str(model_dir), "--data", str(data / "synthvsi_val.jsonl"), "--video-root", str(data),
         "--output-dir", str(output_dir), "--num-frames", str(num_frames), "--batch-size", "8",
         "--no-progress", *([f"--{control}-from", "other-scene"] if control else [])]
    )  # fmt: skip
    return json.loads((output_dir / "results.json").read_text())


def _train_and_evaluate(name: str, init_dir: Path, data: Path, out: Path, eval_dir: Path, settings, seed: int, queue,
                        controls: bool) -> dict:  # fmt: skip
    """One variant: SFT, then evaluation, and (with `controls`) again with another room's frames or Spa3R views, in a
    worker process on one CPU thread (these models are tiny: a second OpenMP thread makes each op slower, ~10x on a
    busy machine, and another variant runs on the other core)."""
    from transformers import TrainerCallback

    class ReportSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            queue.put((name, 1))

    run_dir = sft_dir(out, name)
    with one_thread(), open(f"{run_dir}.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        tuned = fine_tune(name, init_dir, data, run_dir, settings, seed, callbacks=[ReportSteps()])
        num_frames = settings.eval_frames if sees_frames(name) else 0
        result = evaluate(tuned, data, eval_dir, num_frames)
        for control in controlled_inputs(name) if controls else []:
            evaluate(tuned, data, control_dir(eval_dir, control), num_frames, control)
    queue.put((name, "done"))
    return result


def train_and_evaluate_variants(data: Path, init_dirs: dict, out: Path, eval_dirs: dict, settings, seed: int,
                                controls: bool = True) -> dict:  # fmt: skip
    """Every variant's SFT + evaluation (+ the input controls), two at a time, one process and one core each (the
    third starts when a core is free), with a progress bar per run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from queue import Empty

    from tqdm.auto import tqdm

    steps = sft_steps(data, settings)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(PARALLEL_RUNS, mp_context=context) as pool:
        queue = manager.Queue()
        futures = {}
        for i, name in enumerate(VARIANTS, 1):
            control = f" (then again with another room's {' / '.join(controlled_inputs(name))}: the controls)"
            sees = "" if sees_frames(name) else ", without videos"
            later = ", once a core is free" if i > PARALLEL_RUNS else ""
            print(f"-- run {i}/{len(VARIANTS)}: {name}, training seed {seed}, {steps} SFT steps "
                  f"({settings.sft_epochs:g} epochs{sees}{later}), then SynthVSI-val"
                  f"{control if controls and controlled_inputs(name) else ''}; log: {sft_dir(out, name)}.log",
                  flush=True)  # fmt: skip
            futures[name] = pool.submit(_train_and_evaluate, name, init_dirs[name], data, out, eval_dirs[name],
                                        settings, seed, queue, controls)  # fmt: skip
        bars = {name: tqdm(total=steps, desc=f"SFT {i}/{len(VARIANTS)} {name}, seed {seed}", unit="step", position=i - 1)
                for i, name in enumerate(VARIANTS, 1)}  # fmt: skip
        running = set(VARIANTS)
        while running:
            try:
                name, event = queue.get(timeout=1.0)
            except Empty:
                for future in futures.values():
                    if future.done() and future.exception() is not None:
                        raise future.exception()  # a failed run: stop at once, with its error
                continue
            if event == "done":
                running.discard(name)
                bars[name].set_postfix_str("evaluated")
            else:
                bars[name].update(event)
        for bar in bars.values():
            bar.close()
        return {name: future.result() for name, future in futures.items()}


def controlled_inputs(name: str) -> list[str]:
    """The inputs a variant is evaluated again without (another room's instead): its frames, and its Spa3R views."""
    return list(VARIANTS[name][1])


def control_dir(eval_dir: Path, control: str) -> Path:
    """Where the answers with another room's `control` input of the variant evaluated into `eval_dir` go."""
    return eval_dir.with_name(f"{eval_dir.name}-other-{control}")


def read_answers(eval_dir: Path) -> list[dict]:
    """The per-question prediction records of one evaluation folder."""
    from .eval_vsibench import read_predictions

    return list(read_predictions(eval_dir).values())


def input_controls(predictions: dict[str, list[dict]], eval_dirs: dict[str, Path], seed: int) -> list:
    """Each variant's answers (`predictions`) against its answers with another room's frames / Spa3R views, read
    from the control folders beside `eval_dirs` (`report.input_control`)."""
    from .report import input_control

    return [input_control(name, control, predictions[name], read_answers(control_dir(eval_dirs[name], control)),
                          seed=seed)
            for name in VARIANTS for control in controlled_inputs(name)]  # fmt: skip


def val_priors(data: Path) -> tuple:
    """SynthVSI-val's blind priors fitted on SynthVSI-train and on every candidate question of its rooms (the pool)."""
    from .data.priors import blind_priors
    from .data.synthetic import POOL_FILE

    train, val, pool = ([json.loads(line) for line in (data / name).read_text().splitlines() if line.strip()]
                        for name in ("synthvsi_train.jsonl", "synthvsi_val.jsonl", POOL_FILE))  # fmt: skip
    return blind_priors(train, val), blind_priors(pool, val)


def val_ceiling(data: Path, priors: tuple, num_frames: int):
    """What a perfect perceiver of the `num_frames` frames each model sees would score on SynthVSI-val
    (`data.answerability`); a question those frames cannot answer scores its type's best blind prior of `val_priors`
    (types without one, absent from the train split, are left out, as in the prior column)."""
    from .data.answerability import best_prior_per_type, frames_ceiling

    fallback = best_prior_per_type(fit.per_type for fit in priors)
    val = [json.loads(line) for line in (data / "synthvsi_val.jsonl").read_text().splitlines() if line.strip()]
    return frames_ceiling([r for r in val if r["question_type"] in fallback], data / "scenes", num_frames, fallback)


def results_table(predictions: dict[str, list[dict]], priors: tuple, seed: int, ceiling=None):
    """The evidence-carrying table of every variant (modeling_spa3r/report.py) from their per-question predictions,
    with chance, the blind priors of `val_priors` and the frames' ceiling of `val_ceiling`."""
    from .report import build_report

    split, pool = priors
    return build_report(predictions, split, pool_priors=pool, seed=seed, ceiling=ceiling)


def weak_result(table) -> bool:
    """True when a variant collapses on a task or its overall interval does not clear the blind prior."""
    overall = table.rows[-1]
    collapsed = any((share or 0) > table.collapse_threshold for row in table.rows for share in row.top_answer_share.values())
    return collapsed or any(overall.prior is None or overall.intervals[m][0] <= overall.prior for m in table.models)


def _points(fraction: float | None) -> str:
    return "none" if fraction is None else f"{100 * fraction:.1f}"


def readout_section(readout, table, vlms: Collection[str] | None = None) -> str:
    """Markdown: the Room Size row's blind prior and model scores beside the Spa3R latent's linear readout of the same
    questions, and what follows from them; `vlms`: the models that see the video (default: all)."""
    row = next(r for r in table.rows if r.key.startswith("room_size_estimation"))
    low = readout.interval[0]
    scores = ", ".join(f"{name} {100 * row.scores[name]:.1f}" for name in table.models)
    readers = [name for name in table.models if (vlms is None or name in vlms) and row.intervals[name]
               and row.intervals[name][0] > row.prior]  # fmt: skip
    if low <= row.prior:
        verdict = ("At this scale the latent's linear readout does not beat the blind prior: the room size is not "
                   "(linearly) in the latent, so no VLM on top of it can be expected to answer better.")
    elif not readers:
        verdict = ("The latent holds the room size (its linear readout beats the blind prior) but neither VLM reads "
                   "it out: at this scale the small language models, not Spa3R, are the bottleneck. "
                   + _training_adds(readout))  # fmt: skip
    else:
        verdict = (f"The latent holds the room size and {', '.join(readers)} beats the blind prior on it. "
                   + _training_adds(readout))  # fmt: skip
    lines = "\n".join(f"- {line}" for line in readout.lines())
    return (f"## Room Size from the Spa3R latent by a linear probe ({readout.n} questions)\n\n"
            f"A ridge probe of floor area on the pooled latent of the same number of spread frames, fitted on the "
            f"{readout.num_train} train rooms, scored with the VSI-Bench MRA (95 % bootstrap interval); random "
            f"baselines: mean ± std over init seeds.\n\n{lines}\n- blind prior: {100 * row.prior:.1f}; the models: {scores}\n\n{verdict}\n")


def _training_adds(readout) -> str:
    """Which random-encoder baselines (seed means) the readout's interval clears: whether PSFM training, rather than
    the architecture read out by the same probe, put the room size into the latent."""
    import numpy as np

    low = 100 * readout.interval[0]
    means = {group: 100 * float(np.mean(values)) for group, values in readout.groups().items()}
    above = "; ".join(f"{group} {mean:.1f}" for group, mean in means.items() if low > mean)
    within = "; ".join(f"{group} {mean:.1f}" for group, mean in means.items() if low <= mean)
    if not within:
        return f"Its interval clears every random-encoder baseline ({above}): PSFM training put it there."
    if not above:
        return (f"But its interval clears no random-encoder baseline ({within}): the same probe reads about as much "
                "through random-weight encoders, so this does not show that PSFM training put it there.")
    return (f"Its interval clears {above} but not {within}: the same probe reads about as much through those "
            "random-weight encoders, so this does not show that PSFM training put all of it there.")


def seed_dir(out: Path, seed: int) -> Path:
    """Where the VLMs of an extra training seed go (`--vlm-seeds`)."""
    return out / f"vlm-seed-{seed}"


def train_seed(data: Path, spa3r_dir: Path, out: Path, settings: DemoSettings, seed: int) -> dict:
    """Every variant again with training seed `seed` (initialisation and SFT order), on the same rooms and Spa3R, in
    `seed_dir`: their answers to SynthVSI-val and their SFT losses. No input controls."""
    folder = seed_dir(out, seed)
    init_dirs = build_vlms(data, spa3r_dir, folder, settings, seed)
    evaluations = evaluation_dirs(folder)
    train_and_evaluate_variants(data, init_dirs, folder, evaluations, settings, seed, controls=False)
    return {"predictions": {name: read_answers(path) for name, path in evaluations.items()},
            "sft_losses": variant_sft_losses(folder)}


def seeds_section(spread, held_out: dict[int, dict]) -> tuple[str, dict]:
    """Markdown and JSON of the scores across training seeds (`report.SeedSpread`), with each variant's held-out
    answer loss at the end of SFT per seed (`held_out`: seed → `sft_losses`)."""
    import numpy as np

    losses = {name: [held_out[s][name]["held_out_end"] for s in spread.seeds] for name in VARIANTS}
    (a, la), (b, lb) = list(losses.items())[:2]
    difference = np.asarray(la) - np.asarray(lb)
    per_seed = "; ".join(f"{name} {' / '.join(f'{v:.3f}' for v in values)}" for name, values in losses.items())
    line = (f"- Held-out answer loss at the end of SFT (nats), per seed: {per_seed}; {a} − {b} "
            f"{difference.mean():+.4f} ± {difference.std(ddof=1):.4f}.")  # fmt: skip
    return spread.markdown() + "\n" + line + "\n", {**spread.to_dict(), "held_out_loss_end": losses}


def sft_steps(data: Path, settings: DemoSettings) -> int:
    """Optimizer steps of one SFT run: ceil(train conversations / batch) × epochs."""
    records = len(json.loads((data / TRAIN_CONVERSATIONS).read_text()))
    return math.ceil(math.ceil(records / SFT_BATCH_SIZE) * settings.sft_epochs)


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside, the caller's thread count restored after. These models are tiny: a second
    OpenMP thread buys ~10 % on a quiet machine and costs up to 10x on a busy one; stage 4 runs the two variants
    side by side, one core each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run(out: Path, settings: DemoSettings, seed: int = 0) -> dict:
    with one_thread():
        return _run(out, settings, seed)


def _run(out: Path, settings: DemoSettings, seed: int) -> dict:
    from .report import across_seeds, controls_markdown, write_report

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
        readout = room_size_readout(spa3r_dir, data, out, settings, seed)
    with watch.stage("3/5 small Spa3-VLM, its no-geometry twin and the text-only LM"):
        init_dirs = build_vlms(data, spa3r_dir, out, settings, seed)
    evaluations = evaluation_dirs(out)
    with watch.stage("4/5 SFT on SynthVSI-train and 5/5 SynthVSI-val evaluation, three models, two at a time"):
        results = train_and_evaluate_variants(data, init_dirs, out, evaluations, settings, seed)
    extra_seeds = list(range(seed + 1, seed + settings.vlm_seeds))
    if extra_seeds:
        with watch.stage(f"4-5 again with training seeds {', '.join(map(str, extra_seeds))} (no controls)"):
            seed_runs = {s: train_seed(data, spa3r_dir, out, settings, s) for s in extra_seeds}
    sft_curves = variant_sft_losses(out)
    plot_sft_losses(sft_curves, out / "sft_curves.png")
    predictions = {name: read_answers(path) for name, path in evaluations.items()}
    priors = val_priors(data)
    ceiling = val_ceiling(data, priors, settings.eval_frames)
    table = results_table(predictions, priors, seed, ceiling)
    spread = None
    if extra_seeds:
        tables = {seed: table} | {s: results_table(run["predictions"], priors, seed, ceiling)
                                  for s, run in seed_runs.items()}  # fmt: skip
        held_out = {seed: sft_curves} | {s: run["sft_losses"] for s, run in seed_runs.items()}
        spread = seeds_section(across_seeds(tables), held_out)
    title = f"SynthVSI-val ({summary['questions']['val']} questions, {len(summary['splits']['val'])} rooms)"
    write_report(table, out, title)
    controls = input_controls(predictions, evaluations, seed)
    sections = [sft_section(sft_curves), controls_markdown(controls)] + ([spread[0]] if spread else [])
    if readout is not None:
        sections.append(readout_section(readout, table, vlms=[name for name in VARIANTS if sees_frames(name)]))
    with open(out / "results.md", "a") as results_md:
        results_md.writelines("\n" + section for section in sections)
    report = {
        "settings": asdict(settings),
        "pretraining_loss_first_last": losses,
        "held_out_field_cosine": cosines,
        "results": results,
        "table": table.to_dict(),
        "frames_ceiling": asdict(ceiling),
        "sft_losses": sft_curves,
        "input_controls": [control.to_dict() for control in controls],
        "across_seeds": spread[1] if spread else None,
        "room_size_readout": readout.to_json() if readout is not None else None,
        "seconds": {**watch.stages, "total": watch.total},
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\n{table.markdown(title)}")
    for section in sections:
        print(f"\n{section}")
    if weak_result(table):
        overall = table.rows[-1]
        scores = ", ".join(f"{name} {100 * overall.scores[name]:.1f}" for name in table.models)
        print(f"\nTHE RESULT IS WEAK: at least one variant collapses or does not beat the blind prior overall (see the "
              f"caption above). Overall: {scores}; blind prior {_points(overall.prior)}. Measured at this scale "
              "(README, 'What the demo shows'): the small language models, trained from scratch, learn little beyond "
              "the most frequent answers even from the question text alone (the text-only LM is the same training "
              "without videos), and greedy digit-by-digit decoding cuts or shifts their numbers; the sections above "
              "say whether the VLMs use their frames and geometry at all and whether the Spa3R latent holds an "
              "answer the VLMs fail to read. A stronger check: --scenes, --pretrain-steps, --sft-epochs; the spread "
              "between training runs: --vlm-seeds (see --help).")
    print(f"\nPSFM representation loss, train {losses['representation_loss'][0]:.3f} → {losses['representation_loss'][1]:.3f}"
          f", held-out rooms {losses['eval_representation_loss'][0]:.3f} → {losses['eval_representation_loss'][1]:.3f}; "
          f"held-out field cosine {cosines}")
    print("\nmeasured time per stage: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in watch.stages.items())
          + f"; total {watch.total:.0f} s")
    pictures = ", ".join(str(out / name) for name in ("loss_curves.png", "feature_fields.png", "sft_curves.png"))
    print(f"wrote {pictures}, {out / 'results.md'}, {out / 'results.png'}")
    return report


def missing_packages() -> list[str]:
    """Packages of the training/eval extras the demo needs that are not installed."""
    import importlib.util

    return [name for name in ("accelerate", "datasets", "trl") if importlib.util.find_spec(name) is None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spa3r demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help=f"smaller run ({QUICK.scenes} rooms, {QUICK.frames} "
                        f"frames, {QUICK.pretrain_steps} PSFM steps, {QUICK.sft_epochs:g} SFT epochs)")  # fmt: skip
    parser.epilog = ("Measured on 2 otherwise idle cores of an AMD EPYC machine (2026-12-07, with the whole-room "
                     "scans, and 2026-12-08): the default 392-480 s (377 s on 2026-12-07 with the earlier camera, "
                     "whose rooms gave 1266 SFT steps instead of 1716), --quick 94 s, --vlm-seeds 3 1170 s (each "
                     "extra seed 374 s). Earlier, with the earlier camera: --scenes 300 --pretrain-steps 1200 "
                     "--sft-epochs 8 1759 s on a slower machine (before the controls and the held-out losses). The "
                     "end of every run prints its own seconds per stage.")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    scale = parser.add_argument_group(
        "scaling up (for a stronger check than the default; each overrides the default or --quick value)",
        "Cost: stage 1 and the SFT/eval stages grow linearly with --scenes (SFT questions scale with rooms); "
        "stage 2 linearly with --pretrain-steps; stage 4 linearly with --sft-epochs (three runs, two at a time); stage 5 linearly "
        "with --eval-frames. The end of every run prints the measured seconds per stage to extrapolate from.",
    )  # fmt: skip
    scale.add_argument("--scenes", type=int, help=f"synthetic rooms, 3/4 train, 1/4 validation (default "
                       f"{DemoSettings.scenes}, --quick {QUICK.scenes})")  # fmt: skip
    scale.add_argument("--pretrain-steps", type=int, help=f"PSFM steps (default {DemoSettings.pretrain_steps})")
    scale.add_argument("--sft-epochs", type=float, help=f"SFT epochs per model (default {DemoSettings.sft_epochs:g})")
    scale.add_argument("--vlm-seeds", type=int, help="train and evaluate the three models this many times, with training "
                       "seeds --seed, --seed + 1, ... (same rooms, Spa3R and questions), and report each task's mean ± "
                       "std over seeds and the Spa3-VLM − no-geometry difference per seed (default 1). Cost: each "
                       "extra seed repeats stages 3-5 without the input controls")  # fmt: skip
    scale.add_argument("--eval-frames", type=int, help=f"frames per question for SFT-time processor and evaluation "
                       f"(default {DemoSettings.eval_frames}); what they can answer is the table's ceiling column "
                       "(a perfect perceiver of the default run's validation questions: 4 frames 74.6, 8 frames 96.0, "
                       "16 frames 99.2)")  # fmt: skip
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        parser.error(f"the demo trains and evaluates models and needs {', '.join(missing)}: pip install -e \".[dev]\"")
    overrides = {name: value for name, value in (("scenes", args.scenes), ("pretrain_steps", args.pretrain_steps),
                 ("sft_epochs", args.sft_epochs), ("eval_frames", args.eval_frames),
                 ("vlm_seeds", args.vlm_seeds)) if value is not None}  # fmt: skip
    for name, value in overrides.items():
        if value <= 0 or (name == "scenes" and value < 4):
            parser.error(f"--{name.replace('_', '-')} must be {'>= 4' if name == 'scenes' else '> 0'}, got {value}")
    run(args.out, replace(QUICK if args.quick else DemoSettings(), **overrides), args.seed)
    return 0
