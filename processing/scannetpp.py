"""Check a ScanNet++ release folder as the pretraining loader reads it (DSLR undistorted images, split files).

    python processing/scannetpp.py --root /data/scannetpp [--poses]

No export: `--train_data scannetpp:/data/scannetpp` reads the release layout directly. Same as `spa3r prepare scannetpp ...`; `--help` lists the options.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("modeling_spa3r") is None:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_spa3r.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["scannetpp", *sys.argv[1:]]))
