"""VSI-Bench questions through `datasets.load_dataset`, and the video root resolved as lmms-eval does.

Questions (``--data``) come from

* the Hub dataset ``nyu-visionx/VSI-Bench`` (any ``owner/name`` that is not a local path), split ``test``,
  config ``full`` or ``debiased``;
* a local copy of it: a folder whose ``README.md`` declares ``configs`` is loaded like the Hub dataset; another
  folder by its question file (``test_debiased.parquet`` / ``.jsonl`` for ``debiased``, else ``test.parquet``,
  ``test-00000-of-00001.parquet``, ``test.jsonl``, or the first ``test-*.parquet``);
* one ``.parquet`` / ``.jsonl`` / ``.json`` question file.

``debiased`` without a ``debiased`` config or file keeps the rows with ``pruned == False`` (newer revisions of the
``full`` config) or those not listed in a ``pruned_ids.txt`` next to the questions.

Videos: ``<video root>/<dataset>/<scene_name>.mp4``. lmms-eval's ``vsibench`` task puts them under
``$HF_HOME/vsibench`` (``HF_HOME`` defaulting to ``~/.cache/huggingface``), extracting every ``*.zip`` of the
dataset snapshot there and keeping files that already exist. The root used here is ``--video-root`` if given;
else the question folder if the videos are extracted in it (``arkitscenes/``, ``scannet/``, ``scannetpp/``); else
lmms-eval's root, into which the ``<dataset>.zip`` files of the local copy (or, for a Hub id, of the dataset
snapshot) are extracted when videos the questions need are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import yaml

from . import io as dio

HUB_DATASET = "nyu-visionx/VSI-Bench"
VIDEO_SOURCES = ("arkitscenes", "scannet", "scannetpp")
FULL_FILES = ("test.parquet", "test-00000-of-00001.parquet", "test.jsonl")
DEBIASED_FILES = ("test_debiased.parquet", "test_debiased.jsonl")
_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def lmms_eval_video_root() -> Path:
    """lmms-eval's VSI-Bench video folder: ``$HF_HOME/vsibench`` (``HF_HOME`` default ``~/.cache/huggingface``)."""
    return Path(os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface/"))) / "vsibench"


def _readme_configs(folder: Path) -> list[str]:
    """Config names declared in a dataset folder's README front matter ([] if none)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return []
    match = re.match(r"---\n(.*?)\n---", readme.read_text(encoding="utf-8"), re.S)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as err:
        raise dio.DataError(readme, f"invalid YAML front matter ({err})") from err
    configs = meta.get("configs") if isinstance(meta, dict) else None
    return [c["config_name"] for c in configs if isinstance(c, dict) and "config_name" in c] if configs else []


def _question_file(folder: Path, debiased: bool) -> tuple[Path, bool]:
    """(question file of a folder without configs, whether it is already the debiased subset)."""
    if debiased:
        for name in DEBIASED_FILES:
            if (folder / name).is_file():
                return folder / name, True
    for name in FULL_FILES:
        if (folder / name).is_file():
            return folder / name, False
    shards = sorted(folder.glob("test-*.parquet"))
    if shards:
        return shards[0], False
    expected = (DEBIASED_FILES if debiased else ()) + FULL_FILES
    raise FileNotFoundError(f"no VSI-Bench question file in {folder}: expected a README.md with configs or one of "
                            f"{', '.join(expected)}")


def _load(source, *args, **kwargs):
    """``datasets.load_dataset(*args, **kwargs)``; a file that does not parse is a DataError naming ``source``."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # datasets wraps parse errors of bad files in its own exception types
        cause = f"; {type(err.__cause__).__name__}: {err.__cause__}" if err.__cause__ else ""
        raise dio.DataError(source, f"datasets.load_dataset failed ({type(err).__name__}: {err}{cause})") from err


def load_vsibench(data, debiased: bool = False):
    """``(datasets.Dataset of the questions, name of their source)``; see the module docstring."""
    path = Path(data)
    subset_done = False  # the table already holds only the debiased questions
    if path.is_file():
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: unsupported question file type {path.suffix!r} (use .parquet, .jsonl or .json)")
        table, source = _load(path, builder, data_files=str(path), split="train"), path
    elif path.is_dir():
        configs = _readme_configs(path)
        if configs:
            name = "debiased" if debiased and "debiased" in configs else ("full" if "full" in configs else None)
            subset_done = name == "debiased"
            table, source = _load(path, str(path), name=name, split="test"), path / "README.md"
        else:
            source, subset_done = _question_file(path, debiased)
            table = _load(source, _BUILDERS[source.suffix], data_files=str(source), split="train")
    elif _HUB_ID.match(str(data)):
        table, source = None, str(data)
        if debiased:
            try:
                table, subset_done = _load(data, str(data), name="debiased", split="test"), True
            except ValueError as err:  # an older revision without the debiased config
                if "BuilderConfig" not in str(err):
                    raise
        if table is None:
            table = _load(data, str(data), split="test")
    else:
        raise FileNotFoundError(f"VSI-Bench data not found: {data} (a local folder or file, or a Hub id such as "
                                f"{HUB_DATASET})")
    if debiased and not subset_done:
        table = _debiased(table, source)
    return table, str(source)


def _debiased(table, source):
    """The VSI-Bench-Debiased rows of a full table: ``pruned == False``, or ids not in ``pruned_ids.txt``."""
    if "pruned" in table.column_names:
        return table.filter(lambda pruned: not pruned, input_columns="pruned")
    pruned_file = Path(source).parent / "pruned_ids.txt"
    if pruned_file.is_file():
        pruned = set(pruned_file.read_text().split())
        return table.filter(lambda question_id: str(question_id) not in pruned, input_columns="id")
    raise ValueError(f"--debiased: {source} has no 'pruned' column, no debiased config or file and no "
                     "pruned_ids.txt next to it; use a VSI-Bench revision from 2025-11 or later")


def missing_videos(root: Path, questions: list[dict]) -> list[Path]:
    """Videos (``<dataset>/<scene_name>.mp4``, or a frame folder of that name) the questions need, absent from root."""
    missing = set()
    for question in questions:
        if question.get("video"):
            path = root / question["video"]
            if not path.exists():
                missing.add(path)
            continue
        base = root / str(question["dataset"]) / str(question["scene_name"])
        if not (base.with_name(base.name + ".mp4").is_file() or base.is_dir()):
            missing.add(base.with_name(base.name + ".mp4"))
    return sorted(missing)


def extract_videos(archives: list[Path], root, progress: bool = True) -> int:
    """Extract zip archives into ``root`` as lmms-eval does (existing files are kept); returns files written.

    Each member is written to ``<name>.partial`` and renamed, so an interrupted run leaves no truncated video.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    written = 0
    for archive in archives:
        try:
            bundle = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as err:
            raise dio.DataError(archive, f"not a readable zip archive ({err})") from err
        with bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            for member in tqdm(members, desc=f"extracting {Path(archive).name}", unit="file", disable=not progress):
                target = (root / member.filename).resolve()
                if root.resolve() not in target.parents:
                    raise dio.DataError(archive, f"member {member.filename!r} would be written outside {root}")
                if target.exists():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                with bundle.open(member) as source, open(partial, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                partial.replace(target)
                written += 1
    return written


def resolve_video_root(data, video_root, questions: list[dict], prepare: bool = True) -> Path:
    """The folder holding ``<dataset>/<scene_name>.mp4`` (see the module docstring).

    With ``prepare`` (the main process), archives are extracted into lmms-eval's root when videos the
    ``questions`` need are missing from it; other processes only compute the path.
    """
    if video_root:
        return Path(video_root)
    local = Path(data)
    local = local.parent if local.is_file() else local
    if local.is_dir() and any((local / name).is_dir() for name in VIDEO_SOURCES):
        return local
    if local.is_dir() and not any((local / f"{name}.zip").is_file() for name in VIDEO_SOURCES):
        return local
    root = lmms_eval_video_root()
    if prepare and missing_videos(root, questions):
        if local.is_dir():
            archives = [local / f"{name}.zip" for name in VIDEO_SOURCES if (local / f"{name}.zip").is_file()]
        else:
            from huggingface_hub import snapshot_download

            snapshot = Path(snapshot_download(repo_id=str(data), repo_type="dataset", allow_patterns=["*.zip"]))
            archives = sorted(snapshot.glob("**/*.zip"))
        extract_videos(archives, root)
    return root
