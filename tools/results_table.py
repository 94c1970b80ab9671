#!/usr/bin/env python3
"""Markdown table of `qwm eval` JSON reports (docs/RESULTS.md).

    python3 tools/results_table.py results/wall_*.json

Columns: quantization, episodes, success with its Wilson 95% interval, mean final state
distance, Spearman(objective, distance), latent divergence from the float model, linear-layer
bytes relative to f32, median seconds per plan, backend.
"""
import json
import os
import re
import sys


def order(spec):
    if spec == "fp":
        return (0, 0, 0, "")
    bits = int(spec[1]) if spec[1].isdigit() else 0
    act = "a" in spec
    group = 0 if "g" not in spec else int(spec.split("g")[1].split("a")[0])
    return (1 + act, -bits, -group if group else -1000, spec)


def fmt(x, f="{:.3f}"):
    return "-" if x is None else f.format(x)


def main(paths):
    rows = []
    for p in paths:
        with open(p) as fh:
            r = json.load(fh)
        if not isinstance(r, dict) or "config" not in r:
            continue  # not an eval report (e.g. a benchmark JSON beside them)
        # A run stopped before its end has no byte counts yet; `qwm eval` logs them first.
        log = os.path.splitext(p)[0] + ".log"
        if not r.get("linear_bytes") and os.path.exists(log):
            m = re.search(r"\(([0-9.]+) of f32\)", open(log).read())
            if m:
                r["linear_bytes"] = [float(m.group(1)), 1.0]
        rows.append(r)
    rows.sort(key=lambda r: (r["config"]["env"], order(r["config"]["quant"])))
    print("| env | quant | episodes | success | 95% CI | mean dist | Spearman | latent div | linear bytes / f32 | s/plan | backend |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lb = r.get("linear_bytes")
        ratio = None if not lb else lb[0] / lb[1]
        print(
            f"| {r['config']['env']} | {r['config']['quant']} | {r['finished']} | {r['success_rate']:.2f} "
            f"| {r['success_ci95'][0]:.2f}-{r['success_ci95'][1]:.2f} "
            f"| {fmt(r['mean_state_dist'], '{:.2f}')} "
            f"| {fmt(r.get('spearman_objective_vs_distance'), '{:.2f}')} "
            f"| {fmt(r.get('latent_divergence'), '{:.2e}')} "
            f"| {('1.000' if r['config']['quant'] == 'fp' else '-') if ratio is None else f'{ratio:.3f}'} "
            f"| {fmt(r.get('plan_seconds_median'), '{:.3f}')} "
            f"| {r['config']['backend']} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
