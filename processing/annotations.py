"""Convert VSI-590K / Spa3R-VLM annotation files into a checked SFT JSONL file (every media file must exist).

    python processing/annotations.py vsi_590k.jsonl --media-root /data/vsi590k --out data/sft/vsi590k.jsonl

Missing media are listed in <out>.missing.jsonl; --drop-missing leaves those records out. Same as `spa3r prepare annotations ...`; `--help` lists the options.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["annotations", *sys.argv[1:]]))
