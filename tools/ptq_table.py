#!/usr/bin/env python3
"""Markdown table of examples/ptq_table.rs's JSON lines: per method and spec, latent divergence
from the float model / summed relative layer output error (in-sample) / quantize CPU seconds.

    python3 tools/ptq_table.py docs/results/vm-cpu/ptq/wall_ptq_table.jsonl
"""
import json
import sys

rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["cell"]] = r
specs = ["w4", "w3", "w4g32", "w8a8", "w4a8"]
methods = ["rtn", "gptq", "gptq:act-order", "awq", "omniquant", "smoothquant"]
print("| method | " + " | ".join(specs) + " |")
print("|---|" + "---|" * len(specs))
for m in methods:
    cells = []
    for s in specs:
        r = rows.get(f"{m}:{s}")
        cells.append(
            "-"
            if r is None
            else f"{r['latent_divergence']:.2e} / {r['layer_error_sum']:.2e} / {r['quantize_cpu_s']:.2f}"
        )
    print(f"| {m} | " + " | ".join(cells) + " |")
