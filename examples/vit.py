"""A tiny Vision Transformer (Dosovitskiy et al. 2021) written by hand so torch.fx can trace it.

``vit_tiny``: 3x32x32 input, 4x4 patches (64 tokens of width 64) + class token, learned
positional embedding, 2 pre-norm transformer blocks (4 heads), LayerNorm, Linear head on the class
token.  Attention is explicit Linear q/k/v + matmul + softmax with constant head counts.

Expected analysis: LEAKS, not through the chain from the output (LayerNorm, softmax attention and
GELU are not invertible per element) but through the positional embedding (APRIL, Lu et al. 2022):
``tokens = cat(cls, patches) + pos`` makes ``dL/dpos[1:]`` equal to g of the patch-embedding conv,
observed directly like a bias gradient but per position.  With g known, that conv
(3->64, k4, s4 on 32x32) has gradient rows with one tap per residue class: rank(K_c) =
16 residues * min(64 filters, 8*8 pixels) = 1024 = H*W, so rank(K) = 3*1024 = 3072 and the image is
determined from the weight gradient alone (per patch: dW = G X^T with G the 64x64 token-gradient
matrix, generically invertible).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["Attention", "Block", "ViT", "vit_tiny"]


class Attention(nn.Module):
    """Multi-head self attention with separate q/k/v Linear layers (no nn.MultiheadAttention)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        # (B, N, D) -> (B, heads, N, head_dim); heads and head_dim are Python ints
        return t.reshape(t.size(0), t.size(1), self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).permute(0, 2, 1, 3)
        out = out.reshape(x.size(0), x.size(1), self.heads * self.head_dim)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Patch embedding conv, class token, learned positional embedding, blocks, head."""

    def __init__(self, image_size: int = 32, patch: int = 4, dim: int = 64, depth: int = 2,
                 heads: int = 4, in_chans: int = 3, num_classes: int = 10):
        super().__init__()
        n_tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x)                      # (B, D, H/p, W/p)
        t = torch.flatten(t, 2).transpose(1, 2)      # (B, N, D)
        cls = self.cls_token.expand(t.size(0), -1, -1)
        t = torch.cat([cls, t], dim=1) + self.pos_embed
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0])


def vit_tiny(num_classes: int = 10, **kw) -> nn.Module:
    """Tiny ViT for 3x32x32: 4x4 patches, width 64, 2 blocks, 4 heads; ~75k parameters.

    Expected LEAKS via the positional-embedding gradient (see module docstring): g of the
    patch-embedding conv is observed directly, and its 64 filters with one tap per stride-4 residue
    give rank(K_c) = 1024 = H*W.  An analysis that only recurses from the output through
    LayerNorm/attention/GELU would call it RESISTANT.
    """
    return ViT(num_classes=num_classes)
