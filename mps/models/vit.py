"""A tiny Vision Transformer (Dosovitskiy et al. 2021) for 28-32 px images.

Configuration of ``vit_tiny``: patch 4, embedding dim 64, depth 4, 4 heads, MLP ratio 2,
pre-norm encoder blocks, class token, learned position embedding, LayerNorm + Linear head
on the class token.  About 0.14M parameters.

Every weight layer is a plain ``nn.Conv2d`` (patch embedding) or ``nn.Linear`` (attention
q/k/v as one ``qkv`` Linear, attention output ``proj``, MLP ``fc1``/``fc2``, ``head``), so the
supernet converter can swap each of them.  ``nn.MultiheadAttention`` is deliberately not
used: its projection weights are bare parameters, not ``nn.Linear`` submodules.

Image sizes not divisible by the patch size are zero-padded at the bottom and right up to the
next multiple (e.g. 30 px -> 32 px, 8x8 patches); 28 and 32 px need no padding (7x7 and 8x8
patches).  The position embedding is sized for ``image_size``; other input sizes are refused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Zero-pad to a multiple of the patch, then a stride-``patch`` Conv2d to ``dim`` channels."""

    def __init__(self, in_channels: int, dim: int, patch: int, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.grid = -(-image_size // patch)  # ceil
        pad = self.grid * patch - image_size
        self.pad = nn.ZeroPad2d((0, pad, 0, pad))  # left, right, top, bottom
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"ViT built for {self.image_size}x{self.image_size} images got {tuple(x.shape[-2:])}; "
                "fix: build the model with the data's image_size"
            )
        x = self.proj(self.pad(x))               # (B, dim, grid, grid)
        return x.flatten(2).transpose(1, 2)      # (B, tokens, dim)


class Attention(nn.Module):
    """Multi-head self-attention from nn.Linear q/k/v and output projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)  # exactly scaled_dot_product_attention's default
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x)
        # the head width comes from qkv's outputs, so an MPAAS-widened qkv/proj pair (wider heads,
        # same tiles) runs unchanged; the softmax scale stays the trained one
        head = qkv.shape[-1] // (3 * self.heads)
        qkv = qkv.reshape(b, n, 3, self.heads, head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)  # (B, heads, n, head)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * head))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer encoder block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        patch: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_channels, dim, patch, image_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def mpaas_pairs(self) -> list[tuple]:
        """Adaptable pairs for MPAAS (mps.supernet.adapted): the hidden width of every MLP
        (fc1 -> GELU -> fc2), and the head width of every attention block (qkv -> attention ->
        proj; qkv's outputs are 3 x heads blocks, proj's inputs heads blocks of one head each)."""
        pairs: list[tuple] = []
        for n, m in self.named_modules():
            if isinstance(m, Attention):
                pairs.append((f"{n}.qkv", None, f"{n}.proj", (3 * m.heads, m.heads)))
            elif isinstance(m, Mlp):
                pairs.append((f"{n}.fc1", None, f"{n}.fc2"))
        return pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_tiny(*, in_channels: int, num_classes: int, image_size: int) -> VisionTransformer:
    """Patch 4, dim 64, depth 4, 4 heads, MLP ratio 2."""
    return VisionTransformer(in_channels, num_classes, image_size)
