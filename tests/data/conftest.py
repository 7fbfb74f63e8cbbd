"""Shared fixtures: one small rendered synthetic dataset per test session."""

import pytest

from modeling_spa3r.data.synthetic import SynthConfig, generate_dataset

SMALL = SynthConfig(width=128, height=96, frames=48, fps=8)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """Three rendered scenes (train / val / test) with SynthVSI files."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 3, seed=2, config=SMALL, progress=False)
    return root
