#!/usr/bin/env python
"""Evaluate a Spa3-VLM or Qwen2.5-VL checkpoint on VSI-Bench (see ``python eval/vsibench.py --help``).

Thin launcher of :func:`modeling_spa3r.eval_vsibench.main`; works with ``python`` and
``accelerate launch`` from a source checkout or an installed package.
"""

import sys
from pathlib import Path

try:
    from modeling_spa3r.eval_vsibench import main
except ModuleNotFoundError:  # running from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from modeling_spa3r.eval_vsibench import main

if __name__ == "__main__":
    sys.exit(main())
