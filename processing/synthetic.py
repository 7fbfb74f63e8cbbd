"""Generate synthetic rooms, their ScanNet-like scene folders, videos, SynthVSI and SFT files.

    python processing/synthetic.py --scenes 20 --out data/synth --seed 0 [--width 320 --height 240 --frames 120]
    python processing/synthetic.py contact-sheet data/synth/scenes/<scene_name> --out sheet.png

Same as `spa3r synth ...`; the same arguments give byte-identical outputs (whatever ``--workers`` is).
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.data.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
