"""Synthetic multi-view indoor scenes, SynthVSI questions and multi-view data loaders.

Public API (imported lazily, so ``import modeling_spa3r.data`` stays cheap):

* :func:`generate_dataset` — render scenes + SynthVSI + SFT files (``synthetic``);
* :class:`SynthConfig` — rendering settings;
* :class:`MultiViewDataset`, :class:`ViewBudgetBatchSampler`, :func:`collate_views` — torch loaders
  for synthetic, ScanNet and ScanNet++ scene folders (``datasets``);
* :func:`write_contact_sheet` / :func:`write_rooms_sheet` — PNG overviews of one scene / several rooms
  (``contact_sheet``);
* :func:`blind_priors` — text-only baselines of SynthVSI / VSI-Bench records (``priors``);
* :class:`DataError` — raised for bad input files, naming the file (``io``).
"""

from importlib import import_module

_EXPORTS = {
    "generate_dataset": "synthetic", "SynthConfig": "synthetic", "render_scene_folder": "synthetic",
    "rebuild_questions": "synthetic",
    "generate_scene": "scenes", "render": "render", "pack_scene": "render", "make_trajectory": "trajectory",
    "build_questions": "synthvsi", "build_sft": "synthvsi", "question_pool": "synthvsi",
    "MultiViewDataset": "datasets", "SceneFolder": "datasets", "ViewBudgetBatchSampler": "datasets",
    "collate_views": "datasets", "PRESETS": "datasets",
    "write_contact_sheet": "contact_sheet", "write_rooms_sheet": "contact_sheet", "DataError": "io",
    "blind_priors": "priors", "cross_fitted_priors": "priors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
