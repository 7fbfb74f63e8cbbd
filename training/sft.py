"""Spa3-VLM SFT (TRL SFTTrainer). See `modeling_spa3r/training/sft.py` and `--help`.

    python training/sft.py --preset spa3-vlm-sft-cpu --model_name_or_path DIR --train_file FILE --media_root DIR
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.training.sft import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
