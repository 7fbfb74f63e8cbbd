"""Spa3R and Spa3-VLM for transformers.

Importing the package is cheap (no torch, no transformers); the classes below load on first use, and they are
registered with the transformers Auto classes as soon as transformers is imported (see `registration`).
"""

from importlib import import_module

from .registration import register_auto_classes, register_when_transformers_is_imported

_EXPORTS = {
    "Spa3RConfig": "configuration_spa3r",
    "VGGTConfig": "configuration_spa3r",
    "Spa3RForPretraining": "modeling_spa3r",
    "Spa3RModel": "modeling_spa3r",
    "Spa3RPreTrainedModel": "modeling_spa3r",
    "VGGTModel": "modeling_vggt",
    "Spa3VLMConfig": "configuration_spa3_vlm",
    "Spa3VLMForConditionalGeneration": "modeling_spa3_vlm",
    "Spa3VLMModel": "modeling_spa3_vlm",
    "Spa3VLMProcessor": "processing_spa3_vlm",
    "Spa3VLMQwen3Config": "configuration_spa3_vlm_qwen3",
    "Spa3VLMQwen3ForConditionalGeneration": "modeling_spa3_vlm_qwen3",
    "Spa3VLMQwen3Model": "modeling_spa3_vlm_qwen3",
    "Spa3VLMQwen3Processor": "processing_spa3_vlm_qwen3",
}

__all__ = sorted(_EXPORTS) + ["register_auto_classes"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


register_when_transformers_is_imported()
