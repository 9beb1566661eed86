#!/usr/bin/env python3
"""Count parameters the way transformers builds each model, for the configs in
data/configs-extra/, and write data/configs-extra/expected.json (a committed fixture the
Rust tests check our config-only counts against).

The models are instantiated on torch's meta device: no memory, no weights, the exact
module tree. One-off: needs torch + transformers (not part of the test environment).
Usage: python scripts/param_oracle.py"""
import json
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1] / "data" / "configs-extra"


def count(cfg_path: Path) -> dict:
    raw = json.loads(cfg_path.read_text())
    cfg = AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k not in ("model_type",)})
    arch = raw["architectures"][0]
    cls = getattr(transformers, arch)
    with torch.device("meta"):
        model = cls(cfg)
    seen, total = set(), 0
    for p in model.parameters():  # parameters() already skips tied duplicates
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return {"class": arch, "total": total, "transformers": transformers.__version__}


def main():
    out = {}
    for cfg in sorted(ROOT.glob("*/config.json")):
        out[cfg.parent.name] = count(cfg)
        print(cfg.parent.name, out[cfg.parent.name]["total"])
    (ROOT / "expected.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
