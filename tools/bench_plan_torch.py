#!/usr/bin/env python3
"""PyTorch eager peer of `qwm bench plan`: one CEM step (rollout of N samples over horizon H plus
the planning objective) of the same model, on this machine's CPU.

Run by hand (not in CI):
    pip install torch safetensors
    qwm model random --config tiny --out /tmp/tiny.safetensors     # or any qwm model file
    python3 tools/bench_plan_torch.py /tmp/tiny.safetensors [--samples 300] [--horizon 5]

The modules come from tools/make_fixtures.py (the PyTorch mirror of DINO-WM that the parity
fixtures are made with); the weights are loaded from the qwm file, whose tensor names are the
DINO-WM state_dict names.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import WorldModel  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with safe_open(a.model, "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    cfg = json.loads(meta["config"])
    m = WorldModel(cfg).eval()
    missing, unexpected = m.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"weights do not match the modules: missing {missing}, unexpected {unexpected}")
    s = cfg["image_size"]
    ain = cfg["frameskip"] * cfg["action_dim"]
    with torch.no_grad():
        frames = torch.randint(0, 256, (2, s, s, 3)).float()
        z = m.encoder(m.preprocess(frames))  # obs and goal, encoded once per plan
        z0, goal = z[:1], z[1]
        p0 = torch.zeros(1, cfg["proprio_dim"])
        goal_p = m.proprio_encoder(torch.zeros(1, 1, cfg["proprio_dim"]))[0, 0]
        acts = torch.randn(a.samples, a.horizon, ain)
        times, cpu = [], []
        for i in range(a.reps + 1):
            t, c = time.perf_counter(), time.process_time()
            roll = m.rollout(z0.expand(a.samples, -1, -1), p0.expand(a.samples, -1), acts)
            cost = m.objective(roll, goal, goal_p, 1.0, "last")
            assert cost.shape == (a.samples,)
            if i > 0:
                times.append(time.perf_counter() - t)
                # Process CPU seconds (all threads): steadier than wall time on a shared box.
                cpu.append(time.process_time() - c)
    print(json.dumps({
        "peer": f"pytorch {torch.__version__} eager, {a.threads} threads",
        "model": cfg.get("name"),
        "samples": a.samples,
        "horizon": a.horizon,
        "seconds_per_cem_step": statistics.median(times),
        "process_cpu_s_per_cem_step": statistics.median(cpu),
    }, indent=2))


if __name__ == "__main__":
    main()
