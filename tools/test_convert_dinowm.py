#!/usr/bin/env python3
"""Tests of tools/convert_dinowm.py.

  python3 tools/test_convert_dinowm.py          # plain python3: the checks that need no torch
                                                # (run by tests/convert_dinowm.rs in CI)
  python3 tools/test_convert_dinowm.py --torch  # also convert the fixture run (torch, safetensors,
                                                # pyyaml installed; by hand)

The torch-free part feeds hydra settings and module lists to the converter's checks and
asserts the errors name what is unsupported. The torch part converts tests/fixtures/dinowm_run
(both checkpoint layouts) and compares with the committed tests/fixtures/dinowm_converted
.safetensors, and feeds it broken checkpoints.
"""
import copy
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import convert_dinowm as cd  # noqa: E402

RUN = os.path.join(HERE, "..", "tests", "fixtures", "dinowm_run")

HYDRA = {
    "env": {"name": "wall", "dataset": {"data_path": "/data/wall_single"}},
    "encoder": {"_target_": "models.dino.DinoV2Encoder", "name": "dinov2_vits14",
                "feature_key": "x_norm_patchtokens"},
    "action_encoder": {"_target_": "models.proprio.ProprioceptiveEmbedding", "tubelet_size": 1},
    "proprio_encoder": {"_target_": "models.proprio.ProprioceptiveEmbedding", "tubelet_size": 1},
    "decoder": {"_target_": "models.vqvae.VQVAE"},
    "predictor": {"_target_": "models.vit.ViTPredictor"},
    "img_size": 224, "frameskip": 5, "concat_dim": 1, "normalize_action": True,
    "action_emb_dim": 10, "num_action_repeat": 1, "proprio_emb_dim": 10, "num_proprio_repeat": 1,
    "num_hist": 3, "num_pred": 1, "has_decoder": True,
}

failures = []


def expect_error(what, fn, *needles):
    try:
        fn()
    except cd.ConvertError as e:
        msg = str(e)
        missing = [n for n in needles if n not in msg]
        if missing:
            failures.append(f"{what}: error lacks {missing}: {msg}")
        else:
            print(f"ok   {what}: {msg}")
        return
    except Exception as e:  # anything else is a crash, not a clear error
        failures.append(f"{what}: raised {type(e).__name__}: {e}")
        return
    failures.append(f"{what}: no error")


def with_(path, value):
    cfg = copy.deepcopy(HYDRA)
    node = cfg
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


def torch_free():
    st = cd.check_hydra(HYDRA)
    assert st["img_size"] == 224 and st["encoder"] == "dinov2_vits14" and st["env"] == "wall", st
    print("ok   check_hydra accepts DINO-WM's defaults")
    expect_error("concat_dim 0", lambda: cd.check_hydra(with_("concat_dim", 0)), "concat_dim = 0", "not supported")
    expect_error("ResNet encoder", lambda: cd.check_hydra(with_("encoder._target_", "models.resnet.ResNet18")),
                 "models.resnet.ResNet18", "not supported")
    expect_error("register-token DINOv2", lambda: cd.check_hydra(with_("encoder.name", "dinov2_vits14_reg")),
                 "dinov2_vits14_reg", "not supported")
    expect_error("CLS features", lambda: cd.check_hydra(with_("encoder.feature_key", "x_norm_clstoken")),
                 "x_norm_clstoken")
    expect_error("action repeat", lambda: cd.check_hydra(with_("num_action_repeat", 2)), "num_action_repeat = 2")
    expect_error("predictor class", lambda: cd.check_hydra(with_("predictor._target_", "models.x.Other")),
                 "models.x.Other")
    expect_error("tubelet", lambda: cd.check_hydra(with_("action_encoder.tubelet_size", 2)), "tubelet_size = 2")
    expect_error("img_size", lambda: cd.check_hydra(with_("img_size", 100)), "img_size = 100")
    expect_error("missing key", lambda: cd.check_hydra(with_("frameskip", None)), "'frameskip'")
    assert cd.check_modules(["epoch", "predictor", "action_encoder", "proprio_encoder", "decoder"]) == \
        {"encoder": False, "decoder": True}
    print("ok   check_modules accepts DINO-WM's saved keys")
    expect_error("missing predictor", lambda: cd.check_modules(["epoch", "action_encoder", "proprio_encoder"]),
                 "missing module", "predictor")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "norm.json")
        with open(p, "w") as f:
            json.dump({"action_mean": [0, 0], "action_std": [1, 1], "proprio_mean": [0], "proprio_std": [1]}, f)
        expect_error("norm sizes", lambda: cd.load_norm_json(p, 2, 2), "proprio_mean", "2 numbers")
        with open(p, "w") as f:
            json.dump({"action_mean": [0, 0], "action_std": [1, 0], "proprio_mean": [0], "proprio_std": [1]}, f)
        expect_error("norm std 0", lambda: cd.load_norm_json(p, 2, 1), "action_std", "> 0")


def with_torch():
    import torch
    from safetensors.torch import load_file

    want = load_file(os.path.join(RUN, "..", "dinowm_converted.safetensors"))
    dinov2 = os.path.join(RUN, "dinov2_vits14_pretrain.pth")
    norm = os.path.join(RUN, "norm.json")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "m.safetensors")
        for ckpt, extra in [("model_latest.pth", {"dinov2": dinov2}), ("model_with_encoder.pth", {})]:
            cd.convert(RUN, out, ckpt_path=os.path.join(RUN, "checkpoints", ckpt), norm_json=norm,
                       name="fixture-dinowm", **extra)
            got = load_file(out)
            assert sorted(got) == sorted(want), (ckpt, set(got) ^ set(want))
            bad = [k for k in want if not torch.equal(got[k], want[k])]
            assert not bad, (ckpt, bad)
            print(f"ok   {ckpt} converts to the committed tensors ({len(want)} tensors)")
        expect_error("no DINOv2 weights", lambda: cd.convert(RUN, out, norm_json=norm, dinov2=os.path.join(d, "none.pth")),
                     "has no encoder", "--dinov2")
        expect_error("no statistics", lambda: cd.convert(RUN, out, dinov2=dinov2), "--norm", "--dataset")
        # Statistics from a DINO-WM Wall dataset directory (datasets/wall_dset.py's layout).
        ds = os.path.join(d, "wall_single")
        os.makedirs(ds)
        states, actions = torch.randn(5, 7, 2) * 9 + 30, torch.randn(5, 7, 2) * 0.4
        torch.save(states, os.path.join(ds, "states.pth"))
        torch.save(actions, os.path.join(ds, "actions.pth"))
        st = cd.dataset_stats(ds, "wall", 2, 2, True)
        assert torch.allclose(torch.tensor(st["action_std"]), actions.reshape(-1, 2).std(0)), st
        assert torch.allclose(torch.tensor(st["proprio_mean"]), states.reshape(-1, 2).mean(0)), st
        print("ok   --dataset: Wall statistics as wall_dset.py computes them (torch.std, k - 1)")
        expect_error("pusht --dataset", lambda: cd.dataset_stats(ds, "pusht", 2, 4, True), "pusht", "--norm")
        # Checkpoints with a module missing, or modules of other classes.
        p = os.path.join(d, "ckpt.pth")
        torch.save({"epoch": 1, "action_encoder": torch.nn.Linear(2, 2), "proprio_encoder": torch.nn.Linear(2, 2)}, p)
        expect_error("checkpoint without predictor", lambda: cd.convert(RUN, out, ckpt_path=p, dinov2=dinov2, norm_json=norm),
                     "missing module", "predictor")
        torch.save({"predictor": torch.nn.Linear(2, 2), "action_encoder": torch.nn.Linear(2, 2),
                    "proprio_encoder": torch.nn.Linear(2, 2)}, p)
        expect_error("unknown predictor class", lambda: cd.convert(RUN, out, ckpt_path=p, dinov2=dinov2, norm_json=norm),
                     "torch.nn.modules.linear.Linear", "not supported")
        # An encoder of another class inside the checkpoint (train_encoder = True layout).
        ck = cd.load_checkpoint(os.path.join(RUN, "checkpoints", "model_latest.pth"))
        ck["encoder"] = torch.nn.Conv2d(3, 4, 3)
        expect_error("unknown encoder class", lambda: cd.encoder_weights(ck, cd.check_hydra(HYDRA), None),
                     "torch.nn.modules.conv.Conv2d", "not supported")
        # The restricted unpickler builds placeholders and never runs the pickle's classes.
        ck = cd.load_checkpoint(os.path.join(RUN, "checkpoints", "model_latest.pth"))
        assert cd.class_of(ck["predictor"]) == cd.PREDICTOR_CLASS
        assert type(ck["predictor"]).__module__ != "models.vit"
        print("ok   restricted unpickler: placeholders keep class names and state")


if __name__ == "__main__":
    torch_free()
    if "--torch" in sys.argv:
        with_torch()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("all convert_dinowm tests passed" + ("" if "--torch" in sys.argv else " (torch-free part)"))
