"""Training pipelines: PSFM pretraining of Spa3R on `transformers.Trainer` and Spa3-VLM SFT on TRL's `SFTTrainer`.

`pretrain.main(argv)` and `sft.main(argv)` are the entry points behind `training/pretrain.py` and `training/sft.py`;
presets (`--preset NAME` or a YAML/JSON path) live in the repository's `configuration/` folder, installed with the
package as `modeling_spa3r/configuration/` (`presets.configuration_dir()`, `spa3r config`).
"""
