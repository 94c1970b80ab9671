#!/usr/bin/env python3
"""Convert a DINO-WM run (checkpoints/model_latest.pth + hydra.yaml) and DINOv2 weights into a
qwm model file (docs/MODEL_FORMAT.md). Run by hand:

  pip install torch safetensors pyyaml
  python3 tools/convert_dinowm.py --run RUN_DIR --norm norm.json --out wall_dinowm.safetensors
  python3 tools/convert_dinowm.py --run RUN_DIR --dataset DATA_DIR/wall_single --out ...

RUN_DIR is the DINO-WM output directory holding hydra.yaml and checkpoints/model_latest.pth
(--ckpt picks another checkpoint file). DINO-WM does not save its frozen encoder; the DINOv2
weights come from the checkpoint if it has an "encoder", else from --dinov2 (the state dict
torch.hub caches as ~/.cache/torch/hub/checkpoints/dinov2_vits14_pretrain.pth, looked up there
by default). Nothing is downloaded.

The checkpoint holds whole pickled modules. Without DINO-WM's code it is read with a restricted
unpickler: tensors are rebuilt by torch, every class is replaced by an inert placeholder that
keeps the object's attributes (nn.Module's _parameters / _buffers / _modules), and nothing of
the pickle is executed. With --dinowm-repo PATH the real classes are imported from PATH instead.

The positional embedding is resized offline with the exact call DINOv2 makes at run time
(bicubic, scale_factor = (G + interpolate_offset) / M, the model's interpolate_antialias), so
qwm stores it at the model's grid. The model file records resize_filter "bilinear_antialias"
(torchvision's Resize, which DINO-WM uses, antialiases when shrinking) and the DINO-WM settings
under config.source.

Errors (class ConvertError) name what is unsupported. The checks of hydra.yaml and of the
checkpoint's module list need no torch (tools/test_convert_dinowm.py runs them with python3).
"""
import argparse
import json
import math
import os
import sys

# DINOv2 hub models qwm can run: heads of each (their state dicts do not record it).
DINOV2_HEADS = {"dinov2_vits14": 6, "dinov2_vitb14": 12, "dinov2_vitl14": 16, "dinov2_vitg14": 24}
ENCODER_CLASS = "models.dino.DinoV2Encoder"
PREDICTOR_CLASS = "models.vit.ViTPredictor"
EMBEDDING_CLASS = "models.proprio.ProprioceptiveEmbedding"
DECODER_CLASS = "models.vqvae.VQVAE"
REQUIRED_MODULES = ("predictor", "action_encoder", "proprio_encoder")


class ConvertError(Exception):
    pass


# ------------------------------------------------------------------------------ config (no torch)
def check_hydra(cfg, where="hydra.yaml"):
    """The run's settings from DINO-WM's hydra.yaml (a dict); refuses what qwm cannot run."""

    def get(path, default=KeyError):
        node = cfg
        for k in path.split("."):
            if not isinstance(node, dict) or k not in node:
                if default is KeyError:
                    raise ConvertError(f"{where}: missing key '{path}' (is this a DINO-WM run's hydra.yaml?)")
                return default
            node = node[k]
        return node

    enc_target = get("encoder._target_")
    if enc_target != ENCODER_CLASS:
        raise ConvertError(
            f"{where}: encoder._target_ = '{enc_target}' is not supported: qwm runs DINO-WM's DINOv2 "
            f"encoder ({ENCODER_CLASS}); ResNet, R3M and other encoders have no qwm implementation")
    name = get("encoder.name")
    if name not in DINOV2_HEADS:
        raise ConvertError(
            f"{where}: encoder.name = '{name}' is not supported: qwm converts {sorted(DINOV2_HEADS)} "
            "(register-token variants '*_reg' are not implemented)")
    fk = get("encoder.feature_key", "x_norm_patchtokens")
    if fk != "x_norm_patchtokens":
        raise ConvertError(
            f"{where}: encoder.feature_key = '{fk}' is not supported: qwm uses the patch tokens "
            "(x_norm_patchtokens), not the CLS token")
    concat = get("concat_dim")
    if concat != 1:
        raise ConvertError(
            f"{where}: concat_dim = {concat} is not supported: qwm implements concat_dim = 1 (proprio and "
            "action embeddings tiled onto every patch); concat_dim = 0 (extra tokens) is not implemented")
    for k in ("num_action_repeat", "num_proprio_repeat"):
        v = get(k, 1)
        if v != 1:
            raise ConvertError(f"{where}: {k} = {v} is not supported: qwm implements {k} = 1")
    if get("num_pred", 1) != 1:
        raise ConvertError(f"{where}: num_pred = {get('num_pred')} is not supported (DINO-WM supports only 1)")
    pt = get("predictor._target_")
    if pt != PREDICTOR_CLASS:
        raise ConvertError(f"{where}: predictor._target_ = '{pt}' is not supported: qwm runs {PREDICTOR_CLASS}")
    for m in ("action_encoder", "proprio_encoder"):
        t = get(f"{m}._target_")
        if t != EMBEDDING_CLASS:
            raise ConvertError(f"{where}: {m}._target_ = '{t}' is not supported: qwm runs {EMBEDDING_CLASS}")
        ts = get(f"{m}.tubelet_size", 1)
        if ts != 1:
            raise ConvertError(f"{where}: {m}.tubelet_size = {ts} is not supported: qwm implements 1")
    img = get("img_size")
    if not isinstance(img, int) or img <= 0 or img % 16:
        raise ConvertError(f"{where}: img_size = {img!r} must be a positive multiple of 16 (the decoder's scale)")
    has_dec = bool(get("has_decoder", True))
    dec_target = get("decoder._target_", None) if has_dec else None
    return {
        "env": get("env.name", "unknown"),
        "encoder": name,
        "img_size": img,
        "frameskip": get("frameskip"),
        "num_hist": get("num_hist"),
        "concat_dim": concat,
        "action_emb_dim": get("action_emb_dim"),
        "proprio_emb_dim": get("proprio_emb_dim"),
        "normalize_action": bool(get("normalize_action", True)),
        "decoder": dec_target,
        "data_path": get("env.dataset.data_path", None),
    }


def check_modules(keys, where="checkpoint"):
    """Which modules the checkpoint has; refuses one without the modules qwm needs."""
    keys = set(keys)
    missing = [m for m in REQUIRED_MODULES if m not in keys]
    if missing:
        raise ConvertError(
            f"{where}: missing module(s) {missing}: a DINO-WM checkpoint for planning holds "
            f"{list(REQUIRED_MODULES)} (saved when train_predictor is on); found {sorted(keys)}")
    return {"encoder": "encoder" in keys, "decoder": "decoder" in keys}


def load_yaml(path):
    try:
        import yaml
    except ImportError:
        raise ConvertError("reading hydra.yaml needs PyYAML: pip install pyyaml")
    if not os.path.isfile(path):
        raise ConvertError(f"{path}: not found; --run must be the DINO-WM run directory holding hydra.yaml")
    with open(path) as f:
        return yaml.safe_load(f)


def load_norm_json(path, action_dim, proprio_dim):
    with open(path) as f:
        norm = json.load(f)
    want = {"action_mean": action_dim, "action_std": action_dim,
            "proprio_mean": proprio_dim, "proprio_std": proprio_dim}
    for k, n in want.items():
        v = norm.get(k)
        if not isinstance(v, list) or len(v) != n:
            raise ConvertError(f"{path}: '{k}' must be a list of {n} numbers (the checkpoint's sizes)")
        if k.endswith("std") and not all(x > 0 for x in v):
            raise ConvertError(f"{path}: every '{k}' value must be > 0, got {v}")
    return {k: [float(x) for x in norm[k]] for k in want}


# ------------------------------------------------------------------------------ unpickling
def _placeholder_unpickler():
    import pickle

    import torch

    classes = {}
    safe = {
        ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
        ("builtins", "slice"), ("builtins", "complex"), ("torch", "Size"), ("torch", "device"),
        ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"), ("torch._utils", "_rebuild_tensor"),
        ("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter"),
    }

    class Placeholder:
        """Stands for a class of the pickle; keeps the object's state, runs nothing."""

        def __new__(cls, *args, **kwargs):
            return object.__new__(cls)

        def __init__(self, *args, **kwargs):
            self._qwm_args = args

        def __setstate__(self, state):
            if isinstance(state, tuple) and len(state) == 2:
                state = {**(state[0] or {}), **(state[1] or {})}
            if isinstance(state, dict):
                self.__dict__.update(state)
            else:
                self._qwm_state = state

        def __call__(self, *args, **kwargs):
            return self

    def placeholder(mod, name):
        key = f"{mod}.{name}"
        if key not in classes:
            classes[key] = type(name, (Placeholder,), {"_qwm_class": key})
        return classes[key]

    class Unpickler(pickle.Unpickler):
        def find_class(self, mod, name):
            if mod == "__builtin__":  # protocol 2 (torch.save) names builtins this way
                mod = "builtins"
            if mod in ("copyreg", "copy_reg") and name == "_reconstructor":
                return lambda cls, base, state: cls.__new__(cls)
            if (mod, name) in safe:
                return super().find_class(mod, name)
            if mod == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
            return placeholder(mod, name)

    class Module:  # what torch.load needs of a pickle module
        pass

    Module.Unpickler = Unpickler
    Module.load = pickle.load
    Module.__name__ = "qwm_restricted_pickle"
    return Module


def load_checkpoint(path, dinowm_repo=None):
    import torch

    if not os.path.isfile(path):
        raise ConvertError(f"{path}: checkpoint not found (DINO-WM writes RUN_DIR/checkpoints/model_latest.pth)")
    if dinowm_repo:
        sys.path.insert(0, dinowm_repo)
        return torch.load(path, map_location="cpu", weights_only=False)
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_placeholder_unpickler())


def class_of(obj):
    return getattr(type(obj), "_qwm_class", f"{type(obj).__module__}.{type(obj).__qualname__}")


def attr(obj, name, default=None):
    """An attribute of a real module or a placeholder (submodules live in _modules)."""
    d = getattr(obj, "__dict__", None)
    if not isinstance(d, dict):
        return default
    if name in d:
        return d[name]
    for store in ("_modules", "_parameters", "_buffers"):
        if name in (d.get(store) or {}):
            return d[store][name]
    return default


def state_dict(obj, prefix=""):
    """nn.Module.state_dict() of a real module or a placeholder (persistent buffers only)."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return {prefix + k: v for k, v in obj.state_dict().items()}
    out = {}
    for k, v in (attr(obj, "_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = v
    skip = attr(obj, "_non_persistent_buffers_set") or set()
    for k, v in (attr(obj, "_buffers") or {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = v
    for k, v in (attr(obj, "_modules") or {}).items():
        if v is not None:
            out.update(state_dict(v, prefix + k + "."))
    return out


def submodules(obj):
    yield obj
    for v in (attr(obj, "_modules") or {}).values():
        if v is not None:
            yield from submodules(v)


# ------------------------------------------------------------------------------ conversion
def interpolate_pos_embed(pos, grid, offset, antialias):
    """DINOv2's interpolate_pos_encoding for a grid x grid input, done once."""
    import torch
    import torch.nn.functional as F

    n = pos.shape[1] - 1
    m = int(math.sqrt(n))
    if m * m != n:
        raise ConvertError(f"encoder pos_embed has {n} patch positions, not a square grid")
    if m == grid:
        return pos
    d = pos.shape[-1]
    cls_pos, g = pos[:, :1].float(), pos[:, 1:].float().reshape(1, m, m, d).permute(0, 3, 1, 2)
    if offset:
        s = (grid + offset) / m
        g = F.interpolate(g, mode="bicubic", antialias=antialias, scale_factor=(s, s))
    else:
        g = F.interpolate(g, mode="bicubic", antialias=antialias, size=(grid, grid))
    if tuple(g.shape[-2:]) != (grid, grid):
        raise ConvertError(f"pos_embed interpolation gave {tuple(g.shape[-2:])}, expected {grid}x{grid}")
    return torch.cat([cls_pos, g.permute(0, 2, 3, 1).reshape(1, grid * grid, d)], dim=1)


def encoder_weights(ckpt, settings, dinov2_path):
    """(DINOv2 state dict, heads, interpolate offset, interpolate antialias, eps, source)."""
    import torch

    name = settings["encoder"]
    if "encoder" in ckpt:
        enc = ckpt["encoder"]
        if class_of(enc) != ENCODER_CLASS:
            raise ConvertError(f"checkpoint: encoder is a {class_of(enc)}, not supported: qwm runs {ENCODER_CLASS}")
        fk = attr(enc, "feature_key", "x_norm_patchtokens")
        if fk != "x_norm_patchtokens":
            raise ConvertError(f"checkpoint: encoder feature_key '{fk}' is not supported (qwm uses x_norm_patchtokens)")
        base = attr(enc, "base_model")
        if base is None:
            raise ConvertError("checkpoint: the encoder has no base_model (DINOv2 ViT)")
        if attr(base, "num_register_tokens", 0):
            raise ConvertError("checkpoint: DINOv2 with register tokens is not supported")
        norm = attr(base, "norm")
        eps = attr(norm, "eps", 1e-6) if norm is not None else 1e-6
        return (state_dict(base), attr(base, "num_heads", DINOV2_HEADS[name]),
                attr(base, "interpolate_offset", 0.1), attr(base, "interpolate_antialias", False), eps,
                "checkpoint")
    path = dinov2_path
    if path is None:
        hub = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
        path = os.path.join(hub, "hub", "checkpoints", f"{name}_pretrain.pth")
    if not os.path.isfile(path):
        raise ConvertError(
            f"the checkpoint has no encoder (DINO-WM does not save the frozen DINOv2) and {path} does not "
            f"exist: pass --dinov2 with the {name} state dict ({name}_pretrain.pth, as torch.hub caches it)")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or "pos_embed" not in sd:
        raise ConvertError(f"{path}: not a DINOv2 state dict (no 'pos_embed')")
    # torch.hub's dinov2_* models: interpolate_offset 0.1, interpolate_antialias False, eps 1e-6.
    return sd, DINOV2_HEADS[name], 0.1, False, 1e-6, os.path.basename(path)


def convert(run_dir, out, ckpt_path=None, dinov2=None, norm_json=None, dataset=None,
            dinowm_repo=None, no_decoder=False, name=None):
    import torch
    from safetensors.torch import save_file

    hydra_path = os.path.join(run_dir, "hydra.yaml")
    st = check_hydra(load_yaml(hydra_path), hydra_path)
    ckpt_path = ckpt_path or os.path.join(run_dir, "checkpoints", "model_latest.pth")
    ckpt = load_checkpoint(ckpt_path, dinowm_repo)
    if not isinstance(ckpt, dict):
        raise ConvertError(f"{ckpt_path}: expected DINO-WM's dict of modules, got {class_of(ckpt)}")
    has = check_modules(ckpt.keys(), ckpt_path)
    for m, want in (("predictor", PREDICTOR_CLASS), ("action_encoder", EMBEDDING_CLASS),
                    ("proprio_encoder", EMBEDDING_CLASS)):
        if class_of(ckpt[m]) != want:
            raise ConvertError(f"{ckpt_path}: {m} is a {class_of(ckpt[m])}, not supported: qwm runs {want}")
    out_t = {}

    # Encoder (DINOv2).
    esd, heads, offset, antialias, eps, enc_src = encoder_weights(ckpt, st, dinov2)
    for k in esd:
        if k.startswith("register_tokens"):
            raise ConvertError("DINOv2 with register tokens is not supported")
        if k.startswith("blocks.") and k.split(".")[2].isdigit():
            raise ConvertError("DINOv2 with chunked blocks (block_chunks > 0) is not supported")
    width = esd["pos_embed"].shape[-1]
    patch = esd["patch_embed.proj.weight"].shape[-1]
    depth = len({k.split(".")[1] for k in esd if k.startswith("blocks.")})
    mlp = esd["blocks.0.mlp.fc1.weight"].shape[0]
    grid = st["img_size"] // 16  # DINO-WM: num_side_patches = img_size // decoder_scale
    for k, v in esd.items():
        if k != "mask_token":
            out_t["encoder." + k] = v
    out_t["encoder.pos_embed"] = interpolate_pos_embed(esd["pos_embed"], grid, offset, antialias)
    n = grid * grid

    # Predictor.
    psd = state_dict(ckpt["predictor"])
    attn0 = None
    for sm in submodules(ckpt["predictor"]):
        if class_of(sm) == "models.vit.Attention":
            attn0 = sm
            break
    p_heads = attr(attn0, "heads") if attn0 is not None else None
    if not p_heads:
        raise ConvertError(f"{ckpt_path}: predictor has no models.vit.Attention with 'heads'")
    pos = psd["pos_embedding"]
    dim = pos.shape[-1]
    emb_a = ckpt["action_encoder"]
    emb_p = ckpt["proprio_encoder"]
    asd, prsd = state_dict(emb_a), state_dict(emb_p)
    a_emb, a_in, a_k = asd["patch_embed.weight"].shape
    p_emb, p_in, p_k = prsd["patch_embed.weight"].shape
    if a_k != 1 or p_k != 1:
        raise ConvertError(f"{ckpt_path}: action/proprio encoder kernel sizes {a_k}/{p_k}; qwm implements tubelet_size 1")
    if dim != width + a_emb + p_emb:
        raise ConvertError(
            f"{ckpt_path}: predictor width {dim} != encoder width {width} + action_emb {a_emb} + proprio_emb "
            f"{p_emb}: not a concat_dim = 1 model (qwm implements concat_dim = 1 only)")
    if pos.shape[1] % n:
        raise ConvertError(f"{ckpt_path}: predictor pos_embedding has {pos.shape[1]} tokens, not a multiple of "
                           f"{n} patches (img_size {st['img_size']})")
    num_hist = pos.shape[1] // n
    p_depth = len({k.split(".")[2] for k in psd if k.startswith("transformer.layers.")})
    inner = psd["transformer.layers.0.0.to_qkv.weight"].shape[0] // 3
    p_mlp = psd["transformer.layers.0.1.net.1.weight"].shape[0]
    p_eps = 1e-5
    for sm in submodules(ckpt["predictor"]):
        if class_of(sm) == "torch.nn.modules.normalization.LayerNorm":
            p_eps = attr(sm, "eps", 1e-5)
            break
    for k, v in psd.items():
        out_t["predictor." + k] = v
    for i in range(p_depth):
        pre = f"predictor.transformer.layers.{i}.0.to_out.0."
        if pre + "weight" not in out_t:  # heads == 1 and dim_head == dim: DINO-WM has no to_out
            out_t[pre + "weight"] = torch.eye(dim)
            out_t[pre + "bias"] = torch.zeros(dim)
    if st["frameskip"] <= 0 or a_in % st["frameskip"]:
        raise ConvertError(f"{ckpt_path}: action encoder input {a_in} is not a multiple of frameskip {st['frameskip']}")
    for k, v in asd.items():
        out_t["action_encoder." + k] = v
    for k, v in prsd.items():
        out_t["proprio_encoder." + k] = v

    # Decoder (optional).
    decoder = None
    if has["decoder"] and not no_decoder:
        dec = ckpt["decoder"]
        if class_of(dec) != DECODER_CLASS:
            raise ConvertError(f"{ckpt_path}: decoder is a {class_of(dec)}, not supported (qwm runs {DECODER_CLASS}); "
                               "pass --no-decoder to convert without it")
        if attr(dec, "quantize", False):
            raise ConvertError(f"{ckpt_path}: decoder has quantize = True (VQ codebook); qwm's decoder has no "
                               "codebook; pass --no-decoder")
        dsd = state_dict(dec)
        res = len({k.split(".")[2] for k in dsd if k.startswith("upsample_b.blocks.") and ".conv." in k})
        decoder = {"channel": dsd["upsample_b.blocks.0.weight"].shape[0], "res_blocks": res,
                   "res_channel": dsd["upsample_b.blocks.1.conv.1.weight"].shape[0] if res else 1}
        if dsd["upsample_b.blocks.0.weight"].shape[1] != width:
            raise ConvertError(f"{ckpt_path}: decoder input width {dsd['upsample_b.blocks.0.weight'].shape[1]} != encoder width {width}")
        for k, v in dsd.items():
            if k.startswith(("upsample_b.", "dec.")):
                out_t["decoder." + k] = v

    action_dim = a_in // st["frameskip"]
    if norm_json:
        norm = load_norm_json(norm_json, action_dim, p_in)
        norm_src = os.path.basename(norm_json)
    elif dataset:
        norm = dataset_stats(dataset, st["env"], action_dim, p_in, st["normalize_action"])
        norm_src = f"dataset {dataset}"
    else:
        raise ConvertError("normalization statistics are not in a DINO-WM checkpoint: pass --norm JSON or "
                           "--dataset DIR (the dataset the model was trained on)")
    config = {
        "name": name or f"dinowm-{st['env']}",
        "image_size": st["img_size"],
        "encoder": {"resize": grid * patch, "patch": patch, "width": width, "depth": depth, "heads": heads,
                    "mlp": mlp, "layerscale": "blocks.0.ls1.gamma" in esd, "cls_token": "cls_token" in esd,
                    "eps": eps, "resize_filter": "bilinear_antialias"},
        "predictor": {"depth": p_depth, "heads": p_heads, "head_dim": inner // p_heads, "mlp": p_mlp, "eps": p_eps},
        "decoder": decoder,
        "action_dim": action_dim, "frameskip": st["frameskip"], "action_emb": a_emb,
        "proprio_dim": p_in, "proprio_emb": p_emb, "num_hist": num_hist,
        "source": {
            "kind": "dinowm", "checkpoint": ckpt_path, "env": st["env"],
            "encoder": st["encoder"], "encoder_weights": enc_src, "img_size": st["img_size"],
            "frameskip": st["frameskip"], "num_hist": st["num_hist"], "concat_dim": st["concat_dim"],
            "action_emb_dim": st["action_emb_dim"], "proprio_emb_dim": st["proprio_emb_dim"],
            "pos_embed": f"bicubic {int(math.sqrt(esd['pos_embed'].shape[1] - 1))}^2 -> {grid}^2, "
                         + (f"scale_factor (G+{offset})/M" if offset else "size (G, G)")
                         + (", antialias" if antialias else ""),
            "normalization": norm_src,
        },
    }
    if num_hist != st["num_hist"]:
        raise ConvertError(f"{ckpt_path}: predictor holds {num_hist} frames of positions but hydra.yaml num_hist = {st['num_hist']}")
    tensors = {k: v.detach().contiguous().float() for k, v in out_t.items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(tensors, out, metadata={"format": "qwm-dinowm", "format_version": "1",
                                      "config": json.dumps(config), "normalization": json.dumps(norm)})
    return config, norm


def dataset_stats(path, env, action_dim, proprio_dim, normalize):
    """Action / proprio mean and std as DINO-WM's dataset loaders compute them."""
    import torch

    if not normalize:
        return {"action_mean": [0.0] * action_dim, "action_std": [1.0] * action_dim,
                "proprio_mean": [0.0] * proprio_dim, "proprio_std": [1.0] * proprio_dim}

    def load(name):
        p = os.path.join(path, name)
        if not os.path.isfile(p):
            raise ConvertError(f"{p}: not found; --dataset must be the DINO-WM dataset directory of env '{env}'")
        return torch.load(p, map_location="cpu", weights_only=False)

    if env == "wall":  # datasets/wall_dset.py: every step of every rollout, proprio = state
        s, a = load("states.pth").float(), load("actions.pth").float()
        flat_a, flat_p = a.reshape(-1, a.shape[-1]), s.reshape(-1, s.shape[-1])
    elif env == "point_maze":  # datasets/point_maze_dset.py: valid steps only, proprio = state
        s, a, lens = load("states.pth").float(), load("actions.pth").float(), load("seq_lengths.pth")
        flat_a = torch.cat([a[i, : int(lens[i])] for i in range(len(lens))])
        flat_p = torch.cat([s[i, : int(lens[i])] for i in range(len(lens))])
    else:
        raise ConvertError(f"--dataset: statistics for env '{env}' are not implemented (DINO-WM's PushT loader "
                           "uses fixed constants); pass --norm JSON with the values of its dataset file")
    if flat_a.shape[-1] != action_dim or flat_p.shape[-1] != proprio_dim:
        raise ConvertError(f"{path}: dataset has action dim {flat_a.shape[-1]} / proprio dim {flat_p.shape[-1]}, "
                           f"the checkpoint {action_dim} / {proprio_dim}")
    return {"action_mean": flat_a.mean(0).tolist(), "action_std": flat_a.std(0).tolist(),
            "proprio_mean": flat_p.mean(0).tolist(), "proprio_std": flat_p.std(0).tolist()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="DINO-WM run directory (hydra.yaml, checkpoints/)")
    ap.add_argument("--out", required=True, help="qwm model file to write (.safetensors)")
    ap.add_argument("--ckpt", help="checkpoint file (default RUN/checkpoints/model_latest.pth)")
    ap.add_argument("--dinov2", help="DINOv2 state dict (default: torch.hub's cache)")
    ap.add_argument("--norm", help="JSON with action_mean, action_std, proprio_mean, proprio_std")
    ap.add_argument("--dataset", help="DINO-WM dataset directory to compute the statistics from")
    ap.add_argument("--dinowm-repo", help="import DINO-WM's classes from this checkout instead of placeholders")
    ap.add_argument("--no-decoder", action="store_true", help="leave the decoder out")
    ap.add_argument("--name", help="model name in the config (default dinowm-ENV)")
    a = ap.parse_args(argv)
    try:
        cfg, norm = convert(a.run, a.out, a.ckpt, a.dinov2, a.norm, a.dataset, a.dinowm_repo, a.no_decoder, a.name)
    except ConvertError as e:
        print(f"convert_dinowm: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: {json.dumps(cfg)}")
    print(f"normalization: {json.dumps(norm)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
