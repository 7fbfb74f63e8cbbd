"""`import modeling_spa3r` is cheap, and the Auto classes are registered whatever the import order."""

import subprocess
import sys

import pytest

CHECK_REGISTERED = """
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_PRETRAINING_MAPPING_NAMES, MODEL_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers import AutoModelForPreTraining
import modeling_spa3r.configuration_spa3r as c
import modeling_spa3r.modeling_spa3r as m
from modeling_spa3r.configuration_spa3_vlm import Spa3VLMConfig
from modeling_spa3r.configuration_spa3_vlm_qwen3 import Spa3VLMQwen3Config
assert all(t in CONFIG_MAPPING for t in ("vggt", "spa3r", "spa3_vlm", "spa3_vlm_qwen3"))
assert PROCESSOR_MAPPING[Spa3VLMQwen3Config].__name__ == "Spa3VLMQwen3Processor"
assert MODEL_MAPPING[Spa3VLMQwen3Config].__name__ == "Spa3VLMQwen3Model"
assert MODEL_MAPPING[c.Spa3RConfig] is m.Spa3RModel
assert AutoModelForPreTraining._model_mapping[c.Spa3RConfig] is m.Spa3RForPretraining
assert PROCESSOR_MAPPING[Spa3VLMConfig].__name__ == "Spa3VLMProcessor"
print("registered")
"""


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_package_import_and_cli_help_import_neither_torch_nor_transformers():
    out = _run(
        "import sys, io, contextlib\n"
        "import modeling_spa3r\n"
        "from modeling_spa3r.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as help_text:\n"
        "    assert main(['--help']) == 0\n"
        "assert 'pretrain' in help_text.getvalue()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "first_import",
    [
        "import modeling_spa3r",  # then transformers: registration happens when it is imported
        "import transformers; import modeling_spa3r",
        "from modeling_spa3r.configuration_spa3r import Spa3RConfig",  # the module that imports transformers first
        "from modeling_spa3r.modeling_spa3_vlm import Spa3VLMForConditionalGeneration",
    ],
)
def test_auto_classes_registered_in_any_import_order(first_import):
    assert _run(first_import + "\n" + CHECK_REGISTERED).strip() == "registered"
