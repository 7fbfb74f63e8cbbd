"""The `spa3r` command: one front door to the demo, inference, conversion, data, training and evaluation tools.

Each subcommand forwards its arguments to the tool's own parser, so `spa3r <command> --help` shows that tool's
options. Tools are imported only when their command runs, so `spa3r --help` stays fast.
"""

import argparse
import importlib
import os
import re
import sys
import traceback
from pathlib import Path

# command → (module, function, one-line help)
COMMANDS = {
    "demo": ("modeling_spa3r.demo", "main", "offline end-to-end demo: synthetic scenes → PSFM pretraining → VLM SFT → SynthVSI eval"),
    "ask": ("modeling_spa3r.inference", "ask_main", "answer a question about a video or images with a Spa3-VLM checkpoint"),
    "encode": ("modeling_spa3r.inference", "encode_main", "write Spa3R latents of a set of views to safetensors"),
    "visualize": ("modeling_spa3r.visualize", "main", "predicted vs target feature fields of held-out views (PNG)"),
    "probe": ("modeling_spa3r.probe", "main", "linear probes of room-level properties from a checkpoint's latents"),
    "convert": ("modeling_spa3r.cli", "convert_main", "convert official checkpoints (spa3r | vggt | vlm)"),
    "synth": ("modeling_spa3r.data.cli", "main", "generate synthetic rooms, SynthVSI questions and SFT files"),
    "prepare": ("modeling_spa3r.data.prepare", "main", "real data: ScanNet .sens export, ScanNet++ check, SFT annotations, VSI-Bench videos"),
    "pretrain": ("modeling_spa3r.training.pretrain", "main", "PSFM pretraining of Spa3R on HF Trainer"),
    "cache-teachers": ("modeling_spa3r.training.teacher_cache", "main", "run the frozen teachers once per fixed view set for `pretrain --teacher_cache`"),
    "sft": ("modeling_spa3r.training.sft", "main", "Spa3-VLM supervised fine-tuning on TRL's SFTTrainer"),
    "eval": ("modeling_spa3r.eval_vsibench", "main", "VSI-Bench evaluation (resumable, per-question output)"),
    "config": ("modeling_spa3r.training.presets", "main", "list the shipped presets / accelerate configs, or print a path"),
}


#: Options naming local files or folders (checked before the tool runs: "not found: PATH").
LOCAL_PATH_OPTIONS = {
    "--train_file", "--eval_file", "--media_root", "--config_name", "--teachers_path", "--checkpoint",
    "--vggt-checkpoint", "--config", "--input", "--geometry-config", "--reference-json", "--video", "--images",
    "--scene", "--video-root", "--teacher_cache",
}  # fmt: skip
#: Path options that a command creates (not checked for that command).
CREATED_PATH_OPTIONS = {"prepare": {"--video-root"}, "cache-teachers": {"--teacher_cache"}}  # the folders they write
#: Options that take a local path or a Hub id; a missing path that cannot be a Hub id is "not found".
PATH_OR_HUB_OPTIONS = {"--model", "--model_name_or_path", "--qwen_model_path", "--spa3r_model_path",
                       "--processor_name_or_path", "--data"}  # fmt: skip
#: Options naming a checkpoint folder (its weight files are checked for truncation before anything loads them).
CHECKPOINT_OPTIONS = {"--model", "--model_name_or_path", "--qwen_model_path", "--spa3r_model_path", "--teachers_path"}
#: Commands whose first positional argument is a checkpoint (local path or Hub id).
POSITIONAL_MODEL = {"ask", "encode", "visualize"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Exceptions that mean "the input is wrong" (DataError and HF's repo-id errors are ValueErrors; missing and
#: unreadable files are OSErrors): one line and exit status 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError)


def could_be_hub_id(value: str) -> bool:
    """True for `org/name`-shaped strings whose first part is not a local folder (and when the Hub is reachable)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or not _HUB_ID.match(value):
        return False
    return not Path(value.split("/")[0]).is_dir() or "/" not in value


def check_paths(command: str, argv: list[str]) -> None:
    """`FileNotFoundError("not found: PATH")` for a path option whose local path is missing (before any Hub lookup);
    `DataError` for a truncated or corrupt weight file in a local checkpoint folder."""
    from .validation import check_weight_files

    created = CREATED_PATH_OPTIONS.get(command, set())
    option, candidates = None, []
    for index, token in enumerate(argv):
        if token.startswith("--"):
            option, _, value = token.partition("=")
            if value and option not in created:
                candidates.append((option, value))
            continue
        if option in created:
            pass
        elif option in LOCAL_PATH_OPTIONS or option in PATH_OR_HUB_OPTIONS:
            candidates.append((option, token))
        elif index == 0 and command in POSITIONAL_MODEL:
            candidates.append(("--model", token))
        if option not in ("--images", "--train_file", "--eval_file", "--train_data"):
            option = None  # single-valued options take one token
    if command == "ask" and candidates and candidates[-1][0] == "--images" and argv[-1] == candidates[-1][1]:
        if sum(option == "--images" for option, _ in candidates) > 1 and not Path(argv[-1]).expanduser().exists():
            candidates.pop()  # `ask --images a.jpg b.jpg "question"`: the question, as `spa3r ask` reads it
    for option, value in candidates:
        if option in CHECKPOINT_OPTIONS and Path(value).expanduser().is_dir():
            check_weight_files(Path(value).expanduser())  # a truncated download or save, named before loading
        if Path(value).expanduser().exists():
            continue
        if option in PATH_OR_HUB_OPTIONS and could_be_hub_id(value):
            continue
        raise FileNotFoundError(f"not found: {value} ({option})")


def error_line(error: BaseException) -> str:
    """One line naming the problem: a missing file's name, else the message with its lines joined."""
    if isinstance(error, FileNotFoundError) and error.filename and not str(error).startswith("not found"):
        return f"not found: {error.filename}"
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.strerror}: {error.filename}"
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def run_command(command: str, argv: list[str], debug: bool = False) -> int:
    """Run one tool; user errors → one line on stderr and status 2 (`--debug`: the traceback too)."""
    module, function, _ = COMMANDS[command]
    try:
        check_paths(command, argv)
        result = getattr(importlib.import_module(module), function)(argv)
    except USER_ERRORS as error:
        if debug:
            traceback.print_exc()
        print(f"spa3r {command}: error: {error_line(error)}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0  # some tools return their metrics


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded(int, text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded(int, text, 0)


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = _bounded(float, text, None)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = _bounded(float, text, 0.0)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _bounded(kind, text: str, minimum):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
    return value


def convert_main(argv: list[str]) -> int:
    """`spa3r convert spa3r|vggt ...` (Spa3R / VGGT) or `spa3r convert vlm ...` (official Spa3-VLM directory)."""
    if argv and argv[0] == "vlm":
        from .convert_spa3_vlm import main as vlm_main

        return vlm_main(argv[1:])
    from .convert import main as spa3r_main

    return spa3r_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [token for token in argv if token != "--debug"]
    parser = argparse.ArgumentParser(
        prog="spa3r",
        description="Spa3R / Spa3-VLM tools. Run `spa3r <command> --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<10} {spec[2]}" for name, spec in COMMANDS.items()),
    )
    parser.add_argument("command", choices=COMMANDS, metavar="command", help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    return run_command(args.command, argv[1:], debug)


if __name__ == "__main__":
    raise SystemExit(main())
