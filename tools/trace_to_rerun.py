#!/usr/bin/env python3
"""Convert a qwm plan trace (docs/TRACE.md) into a rerun recording (.rrd).

    pip install rerun-sdk numpy
    python tools/trace_to_rerun.py traces/wall3 wall3.rrd
    rerun wall3.rrd

For users who live in rerun: each run becomes an entity tree (`fp/...`, `w4/...`) on two
timelines, `mpc_iter` (the observation, real and decoded imagined frames, executed path,
elites and plan in the scene's pixel coordinates, distance to goal, imagination error) and
`opt_step` (objective statistics, counted over the whole episode). The safetensors files are
read with the standard library and numpy (their header is JSON), so nothing but rerun-sdk and
numpy is needed. It adds nothing to the Rust build.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import rerun as rr

DTYPES = {"U8": np.uint8, "F32": np.float32}


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


def agent_px(env, state, size):
    """The agent's pixel position in a `size` frame (the Env::agent_uv of each environment)."""
    x, y = float(state[0]), float(state[1])
    if env == "wall":
        u, v = (x + 0.5) / 65.0, (y + 0.5) / 65.0
    elif env == "pointmaze":
        lo, span = 1.8 - 4.142136, 2 * 4.142136
        u, v = (x - lo) / span, (y - lo) / span
    else:  # pusht
        u, v = x / 512.0, y / 512.0
    return [u * size, v * size]


def set_time(timeline, value):
    if hasattr(rr, "set_time"):
        rr.set_time(timeline, sequence=value)
    else:  # rerun-sdk < 0.23
        rr.set_time_sequence(timeline, value)


def scalar(v):
    return rr.Scalars(v) if hasattr(rr, "Scalars") else rr.Scalar(v)


def main(trace_dir, out_path):
    d = Path(trace_dir)
    meta = json.loads((d / "trace.json").read_text())
    if meta.get("format") != "qwm-trace":
        sys.exit(f"{d / 'trace.json'}: not a qwm trace")
    if meta.get("version", 0) > 1:
        sys.exit(f"{d / 'trace.json'}: trace version {meta['version']} is newer than this script reads (1)")
    env, size = meta["env"], meta["image_size"]
    rr.init("qwm_trace", spawn=False)
    rr.save(out_path)
    goal = read_safetensors(d / "goal.safetensors")["goal"]
    rr.log("goal", rr.Image(goal), static=True)
    for r, run in enumerate(meta["runs"]):
        root = run["label"] or f"run{r}"
        path = [agent_px(env, meta["start"], size)]
        step = 0
        for k, it in enumerate(run["iterations"]):
            a = read_safetensors(d / f"r{r}" / f"iter{k:04d}.safetensors")
            for s in it["opt_steps"]:
                set_time("opt_step", step)
                for key in ("best", "mean", "elite_mean", "elite_min", "elite_max", "spread"):
                    rr.log(f"{root}/objective/{key}", scalar(s[key]))
                step += 1
            set_time("mpc_iter", k)
            rr.log(f"{root}/scene/obs", rr.Image(a["obs"]))
            path += [agent_px(env, s, size) for s in a["executed_states"][1:]]
            rr.log(f"{root}/scene/obs/path", rr.LineStrips2D([path]))
            sd = len(meta["start"])
            elites = [
                [agent_px(env, e[i : i + sd], size) for i in range(0, len(e), sd)]
                for e in a["elite_states"]
            ]
            rr.log(f"{root}/scene/obs/elites", rr.LineStrips2D(elites, radii=0.3))
            plan = [agent_px(env, s, size) for s in a["real_states"]]
            rr.log(f"{root}/scene/obs/plan", rr.LineStrips2D([plan], radii=0.8))
            for t, f in enumerate(a["real"]):
                rr.log(f"{root}/imagination/real/{t}", rr.Image(f))
            for t, f in enumerate(a.get("imagined", [])):
                rr.log(f"{root}/imagination/imagined/{t}", rr.Image(f))
            rr.log(f"{root}/distance_to_goal", scalar(it["distance"]))
            for t, e in enumerate(it["latent_err"]):
                rr.log(f"{root}/latent_err/step{t}", scalar(e))
            if it["divergence"]:
                rr.log(f"{root}/divergence", scalar(float(np.mean(it["divergence"][1:]))))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
