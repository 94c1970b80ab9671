#!/usr/bin/env python3
"""Build a small DINO-WM run directory in DINO-WM's on-disk layout and the outputs its modules
compute, to test tools/convert_dinowm.py and qwm against them. Run by hand (not in CI):

  pip install torch torchvision safetensors numpy pyyaml
  python3 tools/make_dinowm_fixture.py        # then tools/convert_dinowm.py (see below)

Writes under tests/fixtures/dinowm_run/:
  hydra.yaml                       the run's settings (keys as DINO-WM's train.yaml resolves them)
  checkpoints/model_latest.pth     torch.save of a dict of whole pickled modules, as DINO-WM's
                                   train.py saves it (epoch, predictor + optimizer, decoder +
                                   optimizer, action_encoder, proprio_encoder; no encoder)
  dinov2_vits14_pretrain.pth       the (tiny) DINOv2 state dict torch.hub would have cached
  norm.json                        action / proprio statistics
and tests/fixtures/dinowm_expected.safetensors: inputs and outputs of the modules' own forward
("fixture.*", as tools/make_fixtures.py names them), with DINO-WM's preprocessing (torchvision
Resize, which antialiases) and DINOv2's run-time positional-embedding interpolation; and
tests/fixtures/resize_torchvision.safetensors: torchvision Resize outputs for odd sizes.

The classes below carry DINO-WM's and DINOv2's module paths, class names and attribute names,
so the pickle holds what a real checkpoint holds; sizes are tiny so the files stay small.
"""
import json
import math
import os
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from torchvision import transforms

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
RUN = os.path.join(FIX, "dinowm_run")


def module(name):
    """Register an importable module so pickle records classes under `name`."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        n = ".".join(parts[:i])
        if n not in sys.modules:
            sys.modules[n] = types.ModuleType(n)
    return sys.modules[name]


def place(mod_name, cls):
    m = module(mod_name)
    cls.__module__ = mod_name
    setattr(m, cls.__name__, cls)
    return cls


# ------------------------------------------------------------------ DINOv2 (dinov2.layers / models)
class PatchEmbed(nn.Module):
    def __init__(self, patch, d):
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = nn.Conv2d(3, d, patch, stride=patch)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class LayerScale(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(h, d)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class MemEffAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (d // heads) ** -0.5
        self.qkv = nn.Linear(d, 3 * d, bias=True)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(d, d)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):  # DINOv2's Attention.forward (the path without xformers)
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class NestedTensorBlock(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = MemEffAttention(d, heads)
        self.ls1 = LayerScale(d)
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, mlp)
        self.ls2 = LayerScale(d)
        self.drop_path2 = nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    def __init__(self, img_size, patch, d, depth, heads, mlp):
        super().__init__()
        self.num_features = self.embed_dim = d
        self.num_tokens = 1
        self.n_blocks = depth
        self.num_heads = heads
        self.patch_size = patch
        self.num_register_tokens = 0
        self.interpolate_antialias = False
        self.interpolate_offset = 0.1
        self.patch_embed = PatchEmbed(patch, d)
        m = img_size // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, m * m + 1, d))
        self.register_tokens = None
        self.chunked_blocks = False
        self.blocks = nn.ModuleList([NestedTensorBlock(d, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, d))

    def interpolate_pos_encoding(self, x, w, h):  # DINOv2's rule, at run time
        npatch = x.shape[1] - 1
        n = self.pos_embed.shape[1] - 1
        if npatch == n and w == h:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, grid = pos[:, 0], pos[:, 1:]
        dim = x.shape[-1]
        w0, h0 = w // self.patch_size, h // self.patch_size
        m = int(math.sqrt(n))
        sx, sy = (w0 + self.interpolate_offset) / m, (h0 + self.interpolate_offset) / m
        grid = F.interpolate(grid.reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic",
                             antialias=self.interpolate_antialias, scale_factor=(sx, sy))
        grid = grid.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((cls_pos.unsqueeze(0), grid), dim=1)

    def forward_features(self, x):
        _, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        for b in self.blocks:
            x = b(x)
        x = self.norm(x)
        return {"x_norm_clstoken": x[:, 0], "x_norm_patchtokens": x[:, 1:]}


# ------------------------------------------------------------------ DINO-WM (models.*)
class DinoV2Encoder(nn.Module):
    def __init__(self, name, base_model):
        super().__init__()
        self.name = name
        self.base_model = base_model
        self.feature_key = "x_norm_patchtokens"
        self.emb_dim = base_model.num_features
        self.latent_ndim = 2
        self.patch_size = base_model.patch_size

    def forward(self, x):
        return self.base_model.forward_features(x)[self.feature_key]


class ProprioceptiveEmbedding(nn.Module):
    def __init__(self, num_frames=1, tubelet_size=1, in_chans=8, emb_dim=384, use_3d_pos=False):
        super().__init__()
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.emb_dim = emb_dim
        self.patch_embed = nn.Conv1d(in_chans, emb_dim, kernel_size=tubelet_size, stride=tubelet_size)

    def forward(self, x):
        return self.patch_embed(x.permute(0, 2, 1)).permute(0, 2, 1)


def generate_mask_matrix(npatch, nwindow):
    zeros, ones = torch.zeros(npatch, npatch), torch.ones(npatch, npatch)
    rows = [torch.cat([ones] * (i + 1) + [zeros] * (nwindow - i - 1), dim=1) for i in range(nwindow)]
    return torch.cat(rows, dim=0).unsqueeze(0).unsqueeze(0)


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim, heads, dim_head, npatch, nframes):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(0.0)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))
        self.bias = generate_mask_matrix(npatch, nframes)  # a plain attribute, as in DINO-WM

    def forward(self, x):
        b, t, _ = x.shape
        x = self.norm(x)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in self.to_qkv(x).chunk(3, dim=-1))
        dots = (q @ k.transpose(-1, -2)) * self.scale
        dots = dots.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        out = self.attend(dots) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, t, -1))


class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp, npatch, nframes):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            [nn.ModuleList([Attention(dim, heads, dim_head, npatch, nframes), FeedForward(dim, mlp)])
             for _ in range(depth)])

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class ViTPredictor(nn.Module):
    def __init__(self, num_patches, num_frames, dim, depth, heads, mlp_dim, dim_head):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames * num_patches, dim))
        self.dropout = nn.Dropout(0.0)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, num_patches, num_frames)
        self.pool = "mean"

    def forward(self, x):
        return self.transformer(self.dropout(x + self.pos_embedding[:, : x.shape[1]]))


class Quantize(nn.Module):
    def __init__(self, dim, n_embed):
        super().__init__()
        self.dim, self.n_embed, self.decay, self.eps = dim, n_embed, 0.99, 1e-5
        embed = torch.randn(dim, n_embed)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", embed.clone())


class ResBlock(nn.Module):
    def __init__(self, cin, ch):
        super().__init__()
        self.conv = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, ch, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(ch, cin, 1))

    def forward(self, x):
        return self.conv(x) + x


class Decoder(nn.Module):
    def __init__(self, cin, cout, ch, nres, nres_ch):
        super().__init__()
        blocks = [nn.Conv2d(cin, ch, 3, padding=1)] + [ResBlock(ch, nres_ch) for _ in range(nres)]
        blocks += [nn.ReLU(inplace=True), nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1),
                   nn.ReLU(inplace=True), nn.ConvTranspose2d(ch // 2, cout, 4, stride=2, padding=1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


class VQVAE(nn.Module):
    def __init__(self, channel, n_res_block, n_res_channel, emb_dim, n_embed):
        super().__init__()
        self.quantize = False
        self.quantize_b = Quantize(emb_dim, n_embed)
        self.upsample_b = Decoder(emb_dim, emb_dim, channel, n_res_block, n_res_channel)
        self.dec = Decoder(emb_dim, 3, channel, n_res_block, n_res_channel)
        self.info = f"channel: {channel}, n_res_block: {n_res_block}"

    def decode(self, z):  # [b, N, e] -> [b, 3, H, W]
        b, n, e = z.shape
        g = math.isqrt(n)
        return self.dec(self.upsample_b(z.reshape(b, g, g, e).permute(0, 3, 1, 2)))


for _mod, _classes in {
    "dinov2.layers.patch_embed": [PatchEmbed],
    "dinov2.layers.layer_scale": [LayerScale],
    "dinov2.layers.mlp": [Mlp],
    "dinov2.layers.attention": [MemEffAttention],
    "dinov2.layers.block": [NestedTensorBlock],
    "dinov2.models.vision_transformer": [DinoVisionTransformer],
    "models.dino": [DinoV2Encoder],
    "models.proprio": [ProprioceptiveEmbedding],
    "models.vit": [FeedForward, Attention, Transformer, ViTPredictor],
    "models.vqvae": [Quantize, ResBlock, Decoder, VQVAE],
}.items():
    for _c in _classes:
        place(_mod, _c)


# ------------------------------------------------------------------ the run
S = dict(img_size=64, patch=4, pretrain_img=28, width=24, depth=2, heads=6, mlp=96,
         frameskip=5, action_dim=2, proprio_dim=2, action_emb=4, proprio_emb=4, num_hist=3,
         pred_depth=2, pred_heads=2, pred_dim_head=8, pred_mlp=48,
         dec_channel=8, dec_res=1, dec_res_channel=4)


def randomize(m):
    """Scales that make every nonlinearity matter at tiny sizes."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1 and ("norm" in name or "net.0" in name):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif "pos" in name or "token" in name:
                p.copy_(torch.randn_like(p) * 0.5)
            elif "upsample_b" in name or name.startswith("dec."):
                fan_in = p[0].numel() if ("blocks.0" in name or "conv" in name) else p.shape[0] * 4
                p.copy_(torch.randn_like(p) * (1.5 / fan_in) ** 0.5)
            elif p.ndim == 2:
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5)
            else:
                p.copy_(torch.randn_like(p) * (1.0 / p[0].numel()) ** 0.5)


def hydra_cfg():
    s = S
    return {
        "env": {"name": "wall", "args": [], "kwargs": {},
                "dataset": {"_target_": "datasets.wall_dset.load_wall_slice_train_val",
                            "normalize_action": True, "data_path": "/data/wall_single",
                            "split_ratio": 0.9}},
        "encoder": {"_target_": "models.dino.DinoV2Encoder", "name": "dinov2_vits14",
                    "feature_key": "x_norm_patchtokens"},
        "action_encoder": {"_target_": "models.proprio.ProprioceptiveEmbedding", "num_frames": 1,
                           "tubelet_size": 1, "use_3d_pos": False},
        "proprio_encoder": {"_target_": "models.proprio.ProprioceptiveEmbedding", "num_frames": 1,
                            "tubelet_size": 1, "use_3d_pos": False},
        "decoder": {"_target_": "models.vqvae.VQVAE", "channel": s["dec_channel"], "n_embed": 16,
                    "n_res_block": s["dec_res"], "n_res_channel": s["dec_res_channel"], "quantize": False},
        "predictor": {"_target_": "models.vit.ViTPredictor", "depth": s["pred_depth"],
                      "heads": s["pred_heads"], "mlp_dim": s["pred_mlp"], "dropout": 0.1,
                      "emb_dropout": 0, "pool": "mean"},
        "ckpt_base_path": "./",
        "training": {"seed": 0, "epochs": 1, "batch_size": 32},
        "img_size": s["img_size"],
        "frameskip": s["frameskip"],
        "concat_dim": 1,
        "normalize_action": True,
        "action_emb_dim": s["action_emb"],
        "num_action_repeat": 1,
        "proprio_emb_dim": s["proprio_emb"],
        "num_proprio_repeat": 1,
        "num_hist": s["num_hist"],
        "num_pred": 1,
        "has_predictor": True,
        "has_decoder": True,
        "model": {"_target_": "models.visual_world_model.VWorldModel", "image_size": s["img_size"],
                  "num_hist": s["num_hist"], "num_pred": 1, "train_encoder": False,
                  "train_predictor": True, "train_decoder": True},
        "saved_folder": "/runs/outputs/wall_fixture",
    }


def build():
    s = S
    torch.manual_seed(0)
    g = s["img_size"] // 16
    n = g * g
    dim = s["width"] + s["action_emb"] + s["proprio_emb"]
    base = DinoVisionTransformer(s["pretrain_img"], s["patch"], s["width"], s["depth"], s["heads"], s["mlp"])
    enc = DinoV2Encoder("dinov2_vits14", base)
    pred = ViTPredictor(n, s["num_hist"], dim, s["pred_depth"], s["pred_heads"], s["pred_mlp"], s["pred_dim_head"])
    dec = VQVAE(s["dec_channel"], s["dec_res"], s["dec_res_channel"], s["width"], 16)
    act = ProprioceptiveEmbedding(1, 1, s["frameskip"] * s["action_dim"], s["action_emb"])
    prop = ProprioceptiveEmbedding(1, 1, s["proprio_dim"], s["proprio_emb"])
    for m in (enc, pred, dec, act, prop):
        randomize(m)
        m.eval()
    return enc, pred, dec, act, prop


def expected(enc, pred, dec, act, prop, batch=2, steps=4, alpha=0.7, base_=2.0):
    s = S
    nh = s["num_hist"]
    de = s["width"]
    g = s["img_size"] // 16
    n = g * g
    encoder_image_size = g * s["patch"]
    resize = transforms.Resize(encoder_image_size)  # VWorldModel.encoder_transform (antialiases)

    def tile(v):
        return v.unsqueeze(2).expand(-1, -1, n, -1)

    def encode(zv, p, a):
        return torch.cat([zv, tile(prop(p)), tile(act(a))], dim=3)

    def predict(z):
        b, t = z.shape[:2]
        return pred(z.reshape(b, t * n, -1)).reshape(b, t, n, -1)

    with torch.no_grad():
        frames = torch.randint(0, 256, (batch, s["img_size"], s["img_size"], 3)).float()
        x = frames.permute(0, 3, 1, 2) / 255.0
        x = transforms.Normalize([0.5] * 3, [0.5] * 3)(x)
        pixels = resize(x)
        encoded = enc(pixels)
        proprio0 = torch.randn(batch, s["proprio_dim"])
        actions = torch.randn(batch, steps, s["frameskip"] * s["action_dim"])
        history = torch.randn(batch, nh, n, de + s["action_emb"] + s["proprio_emb"])
        predicted = predict(history)
        # VWorldModel.rollout with one observation frame
        z = encode(encoded[:, None], proprio0[:, None], actions[:, :1])
        rest = actions[:, 1:]
        for t in range(rest.shape[1]):
            zp = predict(z[:, -nh:])[:, -1:].clone()
            zp[..., -s["action_emb"]:] = tile(act(rest[:, t:t + 1]))
            z = torch.cat([z, zp], dim=1)
        z = torch.cat([z, predict(z[:, -nh:])[:, -1:]], dim=1)
        goal_visual = torch.randn(n, de)
        goal_proprio = torch.randn(s["proprio_emb"])
        vis, pr = z[..., :de], z[:, :, 0, de:de + s["proprio_emb"]]
        gv, gp = goal_visual[None, None], goal_proprio[None, None]
        # planning/objectives.py: objective_fn_last and objective_fn_all
        last = ((vis[:, -1:] - gv) ** 2).mean(dim=(1, 2, 3)) + alpha * ((pr[:, -1:] - gp) ** 2).mean(dim=(1, 2))
        c = torch.tensor([base_ ** i for i in range(z.shape[1])], dtype=torch.float32)
        c = c / c.sum()
        lv = (((vis - gv) ** 2).mean(dim=(2, 3)) * c).mean(dim=1)
        lp = (((pr - gp) ** 2).mean(dim=2) * c).mean(dim=1)
        return {
            "fixture.frames": frames, "fixture.pixels": pixels, "fixture.encoded": encoded,
            "fixture.proprio0": proprio0, "fixture.proprio_emb": prop(proprio0[:, None])[:, 0],
            "fixture.actions": actions, "fixture.action_emb": act(actions),
            "fixture.history": history, "fixture.predicted": predicted, "fixture.rollout": z,
            "fixture.goal_visual": goal_visual, "fixture.goal_proprio": goal_proprio,
            "fixture.cost_last": last, "fixture.cost_all": lv + alpha * lp,
            "fixture.alpha": torch.tensor([alpha]), "fixture.base": torch.tensor([base_]),
            "fixture.decoded": dec.decode(encoded),
            # What qwm would see if the converter resized pos_embed with size=(G, G) instead of
            # DINOv2's scale_factor rule: the Rust test checks the two differ.
            "fixture.pos_embed_size_rule": F.interpolate(
                enc.base_model.pos_embed[:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2), size=(g, g),
                mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, n, -1),
        }


def resize_cases():
    torch.manual_seed(1)
    out = {}
    for (a, b) in [(64, 16), (65, 32), (37, 13), (23, 31), (112, 98), (30, 30), (17, 5), (9, 4)]:
        fr = torch.randint(0, 256, (2, a, a, 3), dtype=torch.uint8)
        x = fr.permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
        out[f"in_{a}_{b}"] = fr.contiguous()
        out[f"aa_{a}_{b}"] = transforms.Resize(b, antialias=True)(x).contiguous()
        out[f"plain_{a}_{b}"] = F.interpolate(x, size=(b, b), mode="bilinear", align_corners=False,
                                              antialias=False).contiguous()
    return out


def main():
    enc, pred, dec, act, prop = build()
    os.makedirs(os.path.join(RUN, "checkpoints"), exist_ok=True)
    # DINO-WM's save_ckpt: whole modules plus optimizers; the frozen encoder is not saved.
    ckpt = {
        "epoch": 1,
        "predictor": pred,
        "predictor_optimizer": torch.optim.AdamW(pred.parameters(), lr=5e-4),
        "decoder": dec,
        "decoder_optimizer": torch.optim.Adam(dec.parameters(), lr=3e-4),
        "action_encoder": act,
        "proprio_encoder": prop,
    }
    torch.save(ckpt, os.path.join(RUN, "checkpoints", "model_latest.pth"))
    torch.save(enc.base_model.state_dict(), os.path.join(RUN, "dinov2_vits14_pretrain.pth"))
    # Also the train_encoder=True layout (encoder pickled in the checkpoint), for by-hand tests.
    torch.save(dict(ckpt, encoder=enc), os.path.join(RUN, "checkpoints", "model_with_encoder.pth"))
    with open(os.path.join(RUN, "hydra.yaml"), "w") as f:
        yaml.safe_dump(hydra_cfg(), f, sort_keys=False)
    norm = {"action_mean": [0.05, -0.02], "action_std": [0.44, 0.47],
            "proprio_mean": [31.0, 30.5], "proprio_std": [14.0, 13.5]}
    with open(os.path.join(RUN, "norm.json"), "w") as f:
        json.dump(norm, f, indent=1)
    exp = expected(enc, pred, dec, act, prop)
    save_file({k: v.contiguous().float() for k, v in exp.items()},
              os.path.join(FIX, "dinowm_expected.safetensors"))
    save_file(resize_cases(), os.path.join(FIX, "resize_torchvision.safetensors"))
    for root, _, files in os.walk(RUN):
        for f in files:
            p = os.path.join(root, f)
            print(f"wrote {os.path.relpath(p, FIX)}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
