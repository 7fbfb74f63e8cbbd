"""Argument parsing with presets: a YAML/JSON file of arguments gives the defaults, the command line overrides them."""

import argparse
import json
from pathlib import Path

import yaml
from transformers import HfArgumentParser

#: Preset folder of a source checkout (`configuration/` next to the package).
PRESET_DIR = Path(__file__).resolve().parents[2] / "configuration"
#: Preset keys holding paths; relative paths are resolved against the preset's folder when they exist there.
PATH_KEYS = ("config_name", "deepspeed")


def find_preset(name_or_path: str) -> Path:
    """A preset file by path, or by name in `configuration/` (`spa3r-base` → `configuration/spa3r-base.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for suffix in (".yaml", ".yml", ".json"):
        candidate = PRESET_DIR / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in PRESET_DIR.glob("*.y*ml")) if PRESET_DIR.is_dir() else []
    raise FileNotFoundError(f"preset {name_or_path!r} is neither a file nor one of {known} in {PRESET_DIR}")


def load_preset(name_or_path: str) -> dict:
    """The arguments of a preset as a flat dict."""
    path = find_preset(name_or_path)
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"preset {path} is not valid {path.suffix[1:].upper()}: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"preset {path} must be a mapping of argument names to values, got {type(values).__name__}")
    for key in PATH_KEYS:
        if isinstance(values.get(key), str) and (path.parent / values[key]).exists():
            values[key] = str(path.parent / values[key])
    return values


def parse_arguments(dataclass_types: tuple, argv: list[str] | None, description: str) -> tuple:
    """Parse `argv` into the dataclasses; `--preset NAME|PATH` supplies defaults, explicit flags win."""
    parser = HfArgumentParser(
        dataclass_types, description=f"{description} Start from a preset with --preset NAME|PATH (configuration/)."
    )
    preset_parser = argparse.ArgumentParser(add_help=False)
    preset_parser.add_argument("--preset")
    known, argv = preset_parser.parse_known_args(argv)
    if known.preset:
        values = load_preset(known.preset)
        destinations = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - destinations)
        if unknown:
            raise ValueError(f"preset {known.preset!r} has unknown arguments: {unknown}")
        parser.set_defaults(**values)
    return tuple(parser.parse_args_into_dataclasses(args=argv))
