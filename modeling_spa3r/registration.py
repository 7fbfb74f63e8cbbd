"""Registration of the Spa3R / VGGT / Spa3-VLM classes with the transformers Auto classes.

`import modeling_spa3r` does not import torch or transformers (so `spa3r --help` is instant); the classes are
registered as soon as transformers is imported (right away if it already is), so

    import modeling_spa3r
    from transformers import AutoModel   # registration happens here
    AutoModel.from_pretrained("path/to/spa3r-hf")

works in either import order. Saved models also get an `auto_map` and their module files (trust_remote_code).
"""

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import PathFinder

_registered = False


def register_auto_classes() -> None:
    """Register every configuration, model and processor class (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForImageTextToText,
        AutoModelForPreTraining,
        AutoProcessor,
    )

    from .configuration_spa3_vlm import Spa3VLMConfig
    from .configuration_spa3_vlm_qwen3 import Spa3VLMQwen3Config
    from .configuration_spa3r import Spa3RConfig, VGGTConfig
    from .modeling_spa3_vlm import Spa3VLMForConditionalGeneration, Spa3VLMModel
    from .modeling_spa3_vlm_qwen3 import Spa3VLMQwen3ForConditionalGeneration, Spa3VLMQwen3Model
    from .modeling_spa3r import Spa3RForPretraining, Spa3RModel
    from .modeling_vggt import VGGTModel
    from .processing_spa3_vlm import Spa3VLMProcessor
    from .processing_spa3_vlm_qwen3 import Spa3VLMQwen3Processor

    AutoConfig.register("vggt", VGGTConfig, exist_ok=True)
    AutoConfig.register("spa3r", Spa3RConfig, exist_ok=True)
    AutoConfig.register("spa3_vlm", Spa3VLMConfig, exist_ok=True)
    AutoModel.register(VGGTConfig, VGGTModel, exist_ok=True)
    AutoModel.register(Spa3RConfig, Spa3RModel, exist_ok=True)
    AutoModel.register(Spa3VLMConfig, Spa3VLMModel, exist_ok=True)
    AutoModelForPreTraining.register(Spa3RConfig, Spa3RForPretraining, exist_ok=True)
    AutoModelForImageTextToText.register(Spa3VLMConfig, Spa3VLMForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(Spa3VLMConfig, Spa3VLMProcessor, exist_ok=True)
    AutoConfig.register("spa3_vlm_qwen3", Spa3VLMQwen3Config, exist_ok=True)
    AutoModel.register(Spa3VLMQwen3Config, Spa3VLMQwen3Model, exist_ok=True)
    AutoModelForImageTextToText.register(Spa3VLMQwen3Config, Spa3VLMQwen3ForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(Spa3VLMQwen3Config, Spa3VLMQwen3Processor, exist_ok=True)
    # saved configs get an `auto_map` (and the module files are copied) so Hub repos work with trust_remote_code=True
    for config_class in (VGGTConfig, Spa3RConfig, Spa3VLMConfig, Spa3VLMQwen3Config):
        config_class.register_for_auto_class()
    VGGTModel.register_for_auto_class("AutoModel")
    Spa3RModel.register_for_auto_class("AutoModel")
    Spa3RForPretraining.register_for_auto_class("AutoModelForPreTraining")
    Spa3VLMForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    Spa3VLMProcessor.register_for_auto_class("AutoProcessor")
    Spa3VLMQwen3ForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    Spa3VLMQwen3Processor.register_for_auto_class("AutoProcessor")


class _RegistrationTrigger(MetaPathFinder):
    """
    Registers the classes right after an import completes, once transformers is imported and none of this
    package's modules is half-way through its own import (registration imports them all, so doing it earlier would
    be circular, e.g. when `configuration_spa3r` is the module that imports transformers).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers" and not fullname.startswith(f"{__package__}."):
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader

        def exec_module(module):
            del loader.exec_module  # back to the class's method
            loader.exec_module(module)
            _register_if_ready(fullname)

        loader.exec_module = exec_module
        return spec


def _initializing(module) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_if_ready(just_imported: str) -> None:
    if _registered or "transformers" not in sys.modules:
        return
    busy = [
        name
        for name, module in list(sys.modules.items())
        if name.startswith(f"{__package__}.") and name != just_imported and _initializing(module)
    ]
    if not busy:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegistrationTrigger)]
        register_auto_classes()


def register_when_transformers_is_imported() -> None:
    """Register now if transformers is imported, else right after it (or the module importing it) is."""
    if "transformers" in sys.modules:
        register_auto_classes()
    elif not any(isinstance(finder, _RegistrationTrigger) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegistrationTrigger())
