"""VSI-Bench ``evaluate`` metric (the module ``vsibench.py`` in this folder is what ``evaluate.load`` reads)."""
