"""Argument parsing with presets: a YAML/JSON file of arguments gives the defaults, the command line overrides them.

Presets, model configs and the accelerate / DeepSpeed files live in the repository's `configuration/` folder, which
is installed as package data (`modeling_spa3r/configuration/`), so `--preset NAME` works from any directory and
from a wheel install. `spa3r config` lists them or prints the path of one.
"""

import argparse
import json
from importlib import resources
from pathlib import Path

#: Preset keys holding paths; relative paths are resolved against the preset's folder when they exist there.
PATH_KEYS = ("config_name", "deepspeed")
PRESET_SUFFIXES = (".yaml", ".yml", ".json")


def configuration_dir() -> Path:
    """The shipped `configuration/` folder: package data of an installed wheel, else the source checkout's."""
    installed = Path(str(resources.files("modeling_spa3r") / "configuration"))
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "configuration"


def preset_names() -> list[str]:
    """Names accepted by `--preset` (the YAML files at the top of `configuration/`)."""
    folder = configuration_dir()
    return sorted(p.stem for p in folder.iterdir() if p.suffix in PRESET_SUFFIXES[:2]) if folder.is_dir() else []


def find_preset(name_or_path: str) -> Path:
    """A preset file by path, or by name in `configuration/` (`spa3r-base` → `configuration/spa3r-base.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    folder = configuration_dir()
    for suffix in PRESET_SUFFIXES:
        candidate = folder / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"preset {name_or_path!r} is neither a file nor one of {preset_names()} in {folder}")


def load_preset(name_or_path: str) -> dict:
    """The arguments of a preset as a flat dict."""
    import yaml

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
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        dataclass_types,
        description=f"{description} Start from a preset: --preset NAME|PATH.",
        usage="%(prog)s [--preset NAME|PATH] [--ARGUMENT VALUE ...]",
    )
    preset_action = parser.add_argument(
        "--preset",
        metavar="NAME|PATH",
        default=argparse.SUPPRESS,  # read by the pre-parser below, never part of the parsed dataclasses
        help=f"YAML/JSON file of defaults, or a shipped preset: {', '.join(preset_names())} (`spa3r config` lists "
        "them with their paths); flags given on the command line override it",
    )
    # list --preset right after -h in the help text, before the hundreds of TrainingArguments flags
    for actions in (parser._actions, parser._optionals._group_actions):
        actions.insert(1, actions.pop(actions.index(preset_action)))
    preset_parser = argparse.ArgumentParser(add_help=False)
    preset_parser.add_argument("--preset")
    known, argv = preset_parser.parse_known_args(argv)
    if known.preset:
        values = load_preset(known.preset)
        destinations = {action.dest for action in parser._actions} - {"preset"}
        unknown = sorted(set(values) - destinations)
        if unknown:
            raise ValueError(f"preset {known.preset!r} has unknown arguments: {unknown}")
        parser.set_defaults(**values)
    return tuple(parser.parse_args_into_dataclasses(args=argv))


def main(argv: list[str] | None = None) -> int:
    """`spa3r config [NAME]`: list the shipped configuration files, or print the absolute path of one."""
    parser = argparse.ArgumentParser(
        prog="spa3r config",
        description="List the shipped presets and accelerate/DeepSpeed configs, or print one's absolute path, e.g. "
        "`accelerate launch --config_file $(spa3r config accelerate/8gpu_zero2.yaml) -m modeling_spa3r.training.pretrain`.",
    )
    parser.add_argument("name", nargs="?", help="a preset name (spa3r-base) or a file under configuration/")
    args = parser.parse_args(argv)
    folder = configuration_dir()
    if args.name is None:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in PRESET_SUFFIXES:
                print(path.relative_to(folder))
        return 0
    candidate = folder / args.name
    path = candidate if candidate.is_file() else find_preset(args.name)
    print(path.resolve())
    return 0
