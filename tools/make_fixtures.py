#!/usr/bin/env python3
"""Build DINO-WM's modules in PyTorch with small random weights and write qwm test fixtures.

Run by hand (not in CI):  pip install torch safetensors numpy && python3 tools/make_fixtures.py
Writes tests/fixtures/<name>.safetensors: the weights in qwm's model format (docs/MODEL_FORMAT.md)
plus extra tensors "fixture.*" holding inputs and expected outputs:

  fixture.frames      [B, S, S, 3]  u8 frame values stored as f32 (0..255)
  fixture.pixels      [B, 3, R, R]  preprocessed encoder input ([-1, 1], bilinear resize)
  fixture.encoded     [B, N, De]    encoder output (normalized patch tokens, CLS dropped)
  fixture.proprio0    [B, P]        normalized proprio
  fixture.proprio_emb [B, Ep]
  fixture.actions     [B, T, A*fs]  normalized actions
  fixture.action_emb  [B, T, Ea]
  fixture.history     [B, k, N, W]  predictor input, fixture.predicted [B, k, N, W] its output
  fixture.rollout     [B, T+1, N, W] DINO-WM rollout from z0 = fixture.encoded
  fixture.goal_visual [N, De], fixture.goal_proprio [Ep]
  fixture.cost_last   [B]  objective "last" with alpha = fixture.alpha
  fixture.cost_all    [B]  objective "all" with base = fixture.base
  fixture.decoded     [B, 3, 16g, 16g] decoder(fixture.encoded)   (only with a decoder)

The modules mirror DINO-WM: a DINOv2-style ViT encoder, Conv1d(k=1) action/proprio encoders,
ViTPredictor (pre-LN, to_qkv without bias, frame-block-causal mask, final LayerNorm) and the
VQ-VAE decoder (upsample_b, dec) with the codebook disabled.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")


# ----------------------------------------------------------------------------- encoder (DINOv2)
class LayerScale(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=True)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        x = att.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, d, heads, mlp, ls, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, heads)
        self.ls1 = LayerScale(d) if ls else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(d, mlp)
        self.ls2 = LayerScale(d) if ls else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, p, d):
        super().__init__()
        self.proj = nn.Conv2d(3, d, p, stride=p)


class Encoder(nn.Module):
    def __init__(self, e, n):
        super().__init__()
        d = e["width"]
        self.patch_embed = PatchEmbed(e["patch"], d)
        self.has_cls = e["cls_token"]
        if self.has_cls:
            self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, n + int(self.has_cls), d) * 0.5)
        self.blocks = nn.ModuleList(
            [Block(d, e["heads"], e["mlp"], e["layerscale"], e["eps"]) for _ in range(e["depth"])]
        )
        self.norm = nn.LayerNorm(d, eps=e["eps"])

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        if self.has_cls:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for b in self.blocks:
            x = b(x)
        x = self.norm(x)
        return x[:, 1:] if self.has_cls else x


# ----------------------------------------------------------------------------- embeddings
class ProprioceptiveEmbedding(nn.Module):
    def __init__(self, in_chans, emb):
        super().__init__()
        self.patch_embed = nn.Conv1d(in_chans, emb, kernel_size=1, stride=1)

    def forward(self, x):  # [b, t, c] -> [b, t, emb]
        return self.patch_embed(x.permute(0, 2, 1)).permute(0, 2, 1)


# ----------------------------------------------------------------------------- predictor
def block_causal_mask(npatch, nframes):
    t = npatch * nframes
    i = torch.arange(t)
    return (i[None, :] // npatch <= i[:, None] // npatch).float()


class PredAttention(nn.Module):
    def __init__(self, dim, heads, dim_head, mask):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))
        self.register_buffer("bias", mask, persistent=False)

    def forward(self, x):
        b, t, _ = x.shape
        x = self.norm(x)
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        dots = (q @ k.transpose(-1, -2)) * self.scale
        dots = dots.masked_fill(self.bias[:t, :t] == 0, float("-inf"))
        out = dots.softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
            nn.Linear(hidden, dim), nn.Dropout(0.0),
        )

    def forward(self, x):
        return self.net(x)


class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp, mask):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            [nn.ModuleList([PredAttention(dim, heads, dim_head, mask), FeedForward(dim, mlp)])
             for _ in range(depth)]
        )

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class ViTPredictor(nn.Module):
    def __init__(self, npatch, nframes, dim, p):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, nframes * npatch, dim) * 0.5)
        self.transformer = Transformer(dim, p["depth"], p["heads"], p["head_dim"], p["mlp"],
                                       block_causal_mask(npatch, nframes))

    def forward(self, x):
        x = x + self.pos_embedding[:, : x.shape[1]]
        return self.transformer(x)


# ----------------------------------------------------------------------------- decoder (VQ-VAE)
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
        blocks = [nn.Conv2d(cin, ch, 3, padding=1)]
        blocks += [ResBlock(ch, nres_ch) for _ in range(nres)]
        blocks += [nn.ReLU(inplace=True),
                   nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                   nn.ConvTranspose2d(ch // 2, cout, 4, stride=2, padding=1)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


class VQVAEDecoder(nn.Module):
    def __init__(self, emb, dc):
        super().__init__()
        self.upsample_b = Decoder(emb, emb, dc["channel"], dc["res_blocks"], dc["res_channel"])
        self.dec = Decoder(emb, 3, dc["channel"], dc["res_blocks"], dc["res_channel"])

    def forward(self, z):  # [b, N, e] -> [b, 3, H, W]
        b, n, e = z.shape
        g = int(math.isqrt(n))
        x = z.transpose(1, 2).reshape(b, e, g, g)
        return self.dec(self.upsample_b(x))


# ----------------------------------------------------------------------------- world model
class WorldModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        e = cfg["encoder"]
        self.g = e["resize"] // e["patch"]
        self.n = self.g * self.g
        self.de = e["width"]
        self.w = self.de + cfg["proprio_emb"] + cfg["action_emb"]
        self.encoder = Encoder(e, self.n)
        self.action_encoder = ProprioceptiveEmbedding(cfg["frameskip"] * cfg["action_dim"], cfg["action_emb"])
        self.proprio_encoder = ProprioceptiveEmbedding(cfg["proprio_dim"], cfg["proprio_emb"])
        self.predictor = ViTPredictor(self.n, cfg["num_hist"], self.w, cfg["predictor"])
        if cfg["decoder"] is not None:
            self.decoder = VQVAEDecoder(self.de, cfg["decoder"])
        for mod in self.predictor.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.eps = cfg["predictor"]["eps"]

    def preprocess(self, frames_u8):  # [b, S, S, 3] -> [b, 3, R, R]
        x = frames_u8.permute(0, 3, 1, 2) / 255.0 * 2.0 - 1.0
        r = self.cfg["encoder"]["resize"]
        if x.shape[-1] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
        return x

    def tile(self, v):  # [b, t, e] -> [b, t, N, e]
        return v.unsqueeze(2).expand(-1, -1, self.n, -1)

    def encode(self, z_vis, proprio, act):  # z_vis [b, t, N, De], proprio [b, t, P], act [b, t, A]
        pe = self.proprio_encoder(proprio)
        ae = self.action_encoder(act)
        return torch.cat([z_vis, self.tile(pe), self.tile(ae)], dim=3)

    def predict(self, z):  # [b, t, N, W]
        b, t = z.shape[:2]
        out = self.predictor(z.reshape(b, t * self.n, self.w))
        return out.reshape(b, t, self.n, self.w)

    def replace_actions(self, z, act):
        ae = self.action_encoder(act)
        z = z.clone()
        z[..., -self.cfg["action_emb"]:] = self.tile(ae)
        return z

    def rollout(self, z_vis0, proprio0, act):  # DINO-WM VWorldModel.rollout with one obs frame
        z = self.encode(z_vis0[:, None], proprio0[:, None], act[:, :1])
        action = act[:, 1:]
        nh = self.cfg["num_hist"]
        for t in range(action.shape[1]):
            z_pred = self.predict(z[:, -nh:])
            z_new = self.replace_actions(z_pred[:, -1:], action[:, t:t + 1])
            z = torch.cat([z, z_new], dim=1)
        z_pred = self.predict(z[:, -nh:])
        return torch.cat([z, z_pred[:, -1:]], dim=1)

    def separate(self, z):  # visual [b, t, N, De], proprio (patch 0) [b, t, Ep]
        de, ep = self.de, self.cfg["proprio_emb"]
        return z[..., :de], z[:, :, 0, de:de + ep]

    def objective(self, z, goal_vis, goal_prop, alpha, mode="last", base=2.0):
        vis, prop = self.separate(z)
        gv, gp = goal_vis[None, None], goal_prop[None, None]
        if mode == "last":
            lv = ((vis[:, -1:] - gv) ** 2).mean(dim=(1, 2, 3))
            lp = ((prop[:, -1:] - gp) ** 2).mean(dim=(1, 2))
            return lv + alpha * lp
        c = torch.tensor([base ** i for i in range(z.shape[1])], dtype=torch.float32)
        c = c / c.sum()
        lv = (((vis - gv) ** 2).mean(dim=(2, 3)) * c).mean(dim=1)  # DINO-WM objective_fn_all
        lp = (((prop - gp) ** 2).mean(dim=2) * c).mean(dim=1)
        return lv + alpha * lp


def randomize(model):
    """Scales that make every nonlinearity matter at tiny sizes."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1 and ("norm" in name or "net.0" in name):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn_like(p))
            elif "decoder" in name:
                fan_in = p[0].numel() if "blocks.0" in name or "conv" in name else p.shape[0] * 4
                p.copy_(torch.randn_like(p) * (1.5 / fan_in) ** 0.5)
            elif "pos" in name or "cls" in name:
                pass
            elif p.ndim == 2:
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5)
            else:
                p.copy_(torch.randn_like(p) * (1.0 / p[0].numel()) ** 0.5)


def make(name, cfg, batch, steps, alpha=0.7, base=2.0):
    m = WorldModel(cfg).eval()
    randomize(m)
    e = cfg["encoder"]
    s = cfg["image_size"]
    ain = cfg["frameskip"] * cfg["action_dim"]
    k = cfg["num_hist"]
    with torch.no_grad():
        frames = torch.randint(0, 256, (batch, s, s, 3)).float()
        pixels = m.preprocess(frames)
        encoded = m.encoder(pixels)
        proprio0 = torch.randn(batch, cfg["proprio_dim"])
        actions = torch.randn(batch, steps, ain)
        history = torch.randn(batch, k, m.n, m.w)
        predicted = m.predict(history)
        roll = m.rollout(encoded, proprio0, actions)
        goal_visual = torch.randn(m.n, m.de)
        goal_proprio = torch.randn(cfg["proprio_emb"])
        out = {
            "fixture.frames": frames,
            "fixture.pixels": pixels,
            "fixture.encoded": encoded,
            "fixture.proprio0": proprio0,
            "fixture.proprio_emb": m.proprio_encoder(proprio0[:, None])[:, 0],
            "fixture.actions": actions,
            "fixture.action_emb": m.action_encoder(actions),
            "fixture.history": history,
            "fixture.predicted": predicted,
            "fixture.rollout": roll,
            "fixture.goal_visual": goal_visual,
            "fixture.goal_proprio": goal_proprio,
            "fixture.cost_last": m.objective(roll, goal_visual, goal_proprio, alpha, "last"),
            "fixture.cost_all": m.objective(roll, goal_visual, goal_proprio, alpha, "all", base),
            "fixture.alpha": torch.tensor([alpha]),
            "fixture.base": torch.tensor([base]),
        }
        if cfg["decoder"] is not None:
            out["fixture.decoded"] = m.decoder(encoded)
    tensors = {k2: v.detach().contiguous().float() for k2, v in m.state_dict().items()}
    tensors.update({k2: v.contiguous().float() for k2, v in out.items()})
    norm = {
        "action_mean": [0.1 * i for i in range(cfg["action_dim"])],
        "action_std": [1.0 + 0.5 * i for i in range(cfg["action_dim"])],
        "proprio_mean": [0.2 * i for i in range(cfg["proprio_dim"])],
        "proprio_std": [2.0] * cfg["proprio_dim"],
    }
    meta = {
        "format": "qwm-dinowm",
        "format_version": "1",
        "config": json.dumps(cfg),
        "normalization": json.dumps(norm),
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"wrote {path}: {os.path.getsize(path)} bytes, {sum(v.numel() for v in m.state_dict().values())} params")


BASE = {
    "name": "fixture",
    "image_size": 32,
    "encoder": {"resize": 24, "patch": 8, "width": 32, "depth": 2, "heads": 2, "mlp": 64,
                "layerscale": True, "cls_token": True, "eps": 1e-6},
    "predictor": {"depth": 2, "heads": 2, "head_dim": 16, "mlp": 64, "eps": 1e-5},
    "decoder": {"channel": 8, "res_blocks": 1, "res_channel": 4},
    "action_dim": 2, "frameskip": 5, "action_emb": 4,
    "proprio_dim": 2, "proprio_emb": 4, "num_hist": 3,
}

if __name__ == "__main__":
    make("tiny_wm", dict(BASE, name="fixture-tiny"), batch=2, steps=5)
    plain = json.loads(json.dumps(BASE))
    plain.update(name="fixture-plain", image_size=16, decoder=None, num_hist=2, proprio_dim=3)
    plain["encoder"].update(resize=16, patch=4, width=16, heads=4, layerscale=False, cls_token=False)
    plain["predictor"].update(depth=1, heads=4, head_dim=8)
    make("plain_wm", plain, batch=3, steps=4)
