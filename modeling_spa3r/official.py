"""The authors' released files, loaded in one call and never silently as something else.

- `Spa3RModel.from_pretrained` / `Spa3RForPretraining.from_pretrained` (and `AutoModel` /
  `AutoModelForPreTraining` with `config=Spa3RConfig(...)`) accept a folder or Hub repo holding the Lightning
  `spa3r.ckpt` of hustvl/Spa3R (e.g. the root of `hustvl/Spa3-VLM`), or the `.ckpt` file itself: it is converted in
  memory with `convert.convert_spa3r_checkpoint`, and the report is logged and kept in `model.conversion_report`.

The official Spa3-VLM folder is converted by `Spa3VLMForConditionalGeneration.from_pretrained` (modeling_spa3_vlm.py),
which also makes the Qwen2.5-VL / Auto classes refuse it.
"""

import os
from pathlib import Path

from transformers.utils import logging
from transformers.utils.hub import cached_file

logger = logging.get_logger(__name__)

#: Name of the authors' Lightning checkpoint in their release.
OFFICIAL_SPA3R_FILENAME = "spa3r.ckpt"
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
# set by the Auto classes; nothing to do for a converted checkpoint
_AUTO_KWARGS = ("_from_auto", "adapter_kwargs", "trust_remote_code", "_commit_hash", "code_revision")


def _hub_kwargs(kwargs: dict) -> dict:
    return {name: kwargs[name] for name in _HUB_KWARGS if name in kwargs}


def official_spa3r_checkpoint(pretrained_model_name_or_path, kwargs: dict) -> str | None:
    """
    The local path of an official `spa3r.ckpt` to convert, or `None` for a transformers checkpoint. Pops `filename`
    (another name for the `.ckpt` file) from `kwargs`. A folder with a `config.json` is a transformers checkpoint.
    """
    filename = kwargs.pop("filename", None)
    if pretrained_model_name_or_path is None:
        return None
    path = Path(os.fspath(pretrained_model_name_or_path))
    if path.is_file():
        if path.suffix not in (".ckpt", ".pt", ".pth"):
            raise ValueError(f"{path} is a file but not a Lightning checkpoint (.ckpt); pass its folder instead")
        return str(path)
    hub = _hub_kwargs(kwargs)
    if filename is None:
        if cached_file(pretrained_model_name_or_path, "config.json", _raise_exceptions_for_missing_entries=False, **hub):
            return None
        filename = OFFICIAL_SPA3R_FILENAME
    checkpoint = cached_file(
        pretrained_model_name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub
    )
    if checkpoint is None and filename != OFFICIAL_SPA3R_FILENAME:
        raise FileNotFoundError(f"{pretrained_model_name_or_path} has no file {filename!r}")
    return checkpoint


def load_official_spa3r(model_class, checkpoint: str, **kwargs):
    """
    Convert the Lightning checkpoint into `model_class` (`Spa3RModel` keeps the encoder, `Spa3RForPretraining` also
    the decoder, heads and teachers). Options: `config` (a `Spa3RConfig`; default: the released architecture),
    `dtype`, `strict` (default True: any unexpected, missing or mis-shaped key raises, with the report).
    """
    from .configuration_spa3r import Spa3RConfig
    from .convert import convert_spa3r_checkpoint
    from .modeling_spa3r import Spa3RForPretraining

    config = kwargs.pop("config", None)
    dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
    strict = kwargs.pop("strict", True)
    attn_implementation = kwargs.pop("attn_implementation", None)
    for name in _HUB_KWARGS + _AUTO_KWARGS:
        kwargs.pop(name, None)
    if kwargs:
        raise ValueError(f"unsupported arguments for converting the official {checkpoint}: {sorted(kwargs)}")
    if config is None:
        config = Spa3RConfig()
    elif isinstance(config, (str, os.PathLike)):
        config = Spa3RConfig.from_pretrained(config)
    elif not isinstance(config, Spa3RConfig):
        raise ValueError(f"config must be a Spa3RConfig for an official Spa3R checkpoint, got {type(config).__name__}")
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    pretraining = issubclass(model_class, Spa3RForPretraining)
    model, report = convert_spa3r_checkpoint(checkpoint, config=config, pretraining=pretraining, strict=strict)
    if type(model) is not model_class:
        raise ValueError(f"official Spa3R checkpoints load as Spa3RModel or Spa3RForPretraining, not {model_class.__name__}")
    if dtype not in (None, "auto"):
        import torch

        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    model.conversion_report = report
    logger.warning(f"converted the official Spa3R checkpoint {checkpoint} in memory:\n{report.summary()}")
    return model.eval()
