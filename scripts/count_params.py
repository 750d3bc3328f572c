#!/usr/bin/env python
"""Print total and trainable parameter counts of a model config, built on the meta device (no weights).

    python scripts/count_params.py configs/model/usam-8b.yaml [--stage 1|2]
"""
from __future__ import annotations

import argparse

import torch

from usam import USAMConfig, USAMModel


def count(config_path: str, stage: int = 2) -> dict[str, int]:
    config = USAMConfig.from_yaml(config_path).without_weights()
    config.llm.dtype = "float32"
    with torch.device("meta"):
        model = USAMModel(config)
    model.set_stage(stage)
    parts = {"total": model.num_parameters(), "trainable": model.num_parameters(only_trainable=True)}
    for name, module in [("encoders", model.encoders), ("qformer", model.qformer), ("projector", model.projector),
                         ("llm", model.llm)] + ([("sacl", model.sacl)] if model.sacl is not None else []):
        parts[name] = sum(p.numel() for p in module.parameters())
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="model YAML (every section needs its architecture values)")
    parser.add_argument("--stage", type=int, default=2, choices=(1, 2),
                        help="1: LLM frozen; 2: LLM LoRA trained too (default)")
    args = parser.parse_args()
    for name, n in count(args.config, args.stage).items():
        print(f"{name:>10}: {n:>15,d}")


if __name__ == "__main__":
    main()
