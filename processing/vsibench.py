"""Load VSI-Bench through datasets and extract its videos where the evaluation (and lmms-eval) finds them.

    python processing/vsibench.py --data nyu-visionx/VSI-Bench [--video-root DIR]

Videos already extracted are kept. Same as `spa3r prepare vsibench ...`; `--help` lists the options.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["vsibench", *sys.argv[1:]]))
