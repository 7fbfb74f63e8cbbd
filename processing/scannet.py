"""Export ScanNet `.sens` files to scene folders the pretraining loader reads (color/, depth/ uint16 mm, pose/, intrinsic/).

    python processing/scannet.py --scans /data/scannet/scans --out /data/scannet/export --frame-skip 1 --workers 8

Finished scenes are skipped on a rerun; frames with invalid poses are left out and counted. Same as `spa3r prepare scannet ...`; `--help` lists the options.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["scannet", *sys.argv[1:]]))
