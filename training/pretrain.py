"""PSFM pretraining of Spa3R (HF Trainer). See `modeling_spa3r/training/pretrain.py` and `--help`.

    python training/pretrain.py --preset spa3r-synthetic-tiny --train_data synthetic:data/synth --output_dir runs/tiny
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.training.pretrain import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
