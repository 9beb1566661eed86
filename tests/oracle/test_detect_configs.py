"""detect --json on the verbatim configs of published models, checked against the exact
totals in data/configs/README.md (parsed from the table, so the doc and the test agree)."""
import re

import pytest

from conftest import REPO, detect_json

CONFIGS = REPO / "data" / "configs"


def readme_rows():
    rows = {}
    for line in (CONFIGS / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not (CONFIGS / cells[0].split(" ")[0]).is_dir():
            continue
        folder = cells[0].split(" ")[0]
        total = int(cells[2].replace(",", ""))
        active = None
        m = re.match(r"([\d,]+) / ([\d.]+)B", cells[3])
        if m:
            active = (int(m.group(1).replace(",", "")), float(m.group(2)))
        rows[folder] = (total, active)
    return rows


ROWS = readme_rows()

FAMILY = {
    "Qwen__Qwen3-30B-A3B": "moe",
    "mistralai__Mixtral-8x7B-v0.1": "moe",
    "deepseek-ai__DeepSeek-V3": "moe",
    "openai__gpt-oss-20b": "moe",
    "nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": "hybrid_mamba_moe",
}

ATTENTION = {  # kind, GQA ratio
    "HuggingFaceTB__SmolLM2-135M-Instruct": ("grouped_query", 3),
    "Qwen__Qwen2.5-7B-Instruct": ("grouped_query", 7),
    "Qwen__Qwen3-0.6B": ("grouped_query", 2),
    "Qwen__Qwen3-8B": ("grouped_query", 4),
    "Qwen__Qwen3-30B-A3B": ("grouped_query", 8),
    "meta-llama__Meta-Llama-3.1-8B": ("grouped_query", 4),
    "mistralai__Mistral-7B-v0.1": ("grouped_query", 4),
    "mistralai__Mixtral-8x7B-v0.1": ("grouped_query", 4),
    "deepseek-ai__DeepSeek-V3": ("multi_head_latent", 1),
    "openai__gpt-oss-20b": ("grouped_query", 8),
    "google__gemma-3-1b-it": ("multi_query", 4),
    "nvidia__NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": ("grouped_query", 16),
}


def test_readme_table_parsed():
    assert len(ROWS) == 12


@pytest.mark.parametrize("folder", sorted(ROWS))
def test_exact_counts(folder):
    total, active = ROWS[folder]
    a = detect_json(CONFIGS / folder)["architecture"]
    assert a["params"]["total"] == total
    assert a["family"] == FAMILY.get(folder, "dense_decoder")
    kind, ratio = ATTENTION[folder]
    assert a["attention"]["kind"] == kind
    assert a["attention"]["gqa_ratio"] == ratio
    if active is None:
        assert a["moe"] is None and a["params"]["active"] == total
    else:
        incl, excl_b = active
        assert a["params"]["active"] == incl
        assert round(a["params"]["active_without_embedding"] / 1e9, 3) == excl_b
