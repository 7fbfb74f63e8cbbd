"""The `spa3r` command: one front door to the demo, inference, conversion, data, training and evaluation tools.

Each subcommand forwards its arguments to the tool's own parser, so `spa3r <command> --help` shows that tool's
options. Tools are imported only when their command runs, so `spa3r --help` stays fast.
"""

import argparse
import importlib
import sys

# command → (module, function, one-line help)
COMMANDS = {
    "demo": ("modeling_spa3r.demo", "main", "offline end-to-end demo: synthetic scenes → PSFM pretraining → VLM SFT → SynthVSI eval"),
    "ask": ("modeling_spa3r.inference", "ask_main", "answer a question about a video or images with a Spa3-VLM checkpoint"),
    "encode": ("modeling_spa3r.inference", "encode_main", "write Spa3R latents of a set of views to safetensors"),
    "visualize": ("modeling_spa3r.visualize", "main", "predicted vs target feature fields of held-out views (PNG)"),
    "convert": ("modeling_spa3r.cli", "convert_main", "convert official checkpoints (spa3r | vggt | vlm)"),
    "synth": ("modeling_spa3r.data.cli", "main", "generate synthetic rooms, SynthVSI questions and SFT files"),
    "prepare": ("modeling_spa3r.data.prepare", "main", "real data: ScanNet .sens export, ScanNet++ check, SFT annotations, VSI-Bench videos"),
    "pretrain": ("modeling_spa3r.training.pretrain", "main", "PSFM pretraining of Spa3R on HF Trainer"),
    "sft": ("modeling_spa3r.training.sft", "main", "Spa3-VLM supervised fine-tuning on TRL's SFTTrainer"),
    "eval": ("modeling_spa3r.eval_vsibench", "main", "VSI-Bench evaluation (resumable, per-question output)"),
    "config": ("modeling_spa3r.training.presets", "main", "list the shipped presets / accelerate configs, or print a path"),
}


def convert_main(argv: list[str]) -> int:
    """`spa3r convert spa3r|vggt ...` (Spa3R / VGGT) or `spa3r convert vlm ...` (official Spa3-VLM directory)."""
    if argv and argv[0] == "vlm":
        from .convert_spa3_vlm import main as vlm_main

        return vlm_main(argv[1:])
    from .convert import main as spa3r_main

    return spa3r_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="spa3r",
        description="Spa3R / Spa3-VLM tools. Run `spa3r <command> --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<10} {spec[2]}" for name, spec in COMMANDS.items()),
    )
    parser.add_argument("command", choices=COMMANDS, metavar="command", help="one of: " + ", ".join(COMMANDS))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module, function, _ = COMMANDS[args.command]
    result = getattr(importlib.import_module(module), function)(argv[1:])
    return result if isinstance(result, int) else 0  # some tools return their metrics


if __name__ == "__main__":
    raise SystemExit(main())
