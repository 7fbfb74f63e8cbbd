"""Package layout that setup.cfg cannot express: the top-level `configuration/` folder (presets, model configs,
accelerate and DeepSpeed files) is installed as package data under `modeling_spa3r/configuration/`."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["modeling_spa3r", "modeling_spa3r.*"]) + ["modeling_spa3r.configuration"],
    package_dir={"modeling_spa3r.configuration": "configuration"},
)
