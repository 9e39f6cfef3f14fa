"""Elastic weights: the largest variant's tensors, handed out as slices for smaller ones.

A unit holds one conv (or linear, or batch norm) at its largest size. A variant with
fewer channels takes the leading channels (`params(out, in, kernel)`); a smaller
kernel takes the centre of the next larger kernel passed through a learned
k*k x k*k transformation (Once-for-All's kernel transformation, identity at start),
so small kernels need not copy the large kernel's centre exactly. Channel order
carries meaning ("leading channels are kept"), which `out_moves`/`in_moves` use to
re-order channels by importance when the space shrinks.

Units never run a layer themselves: the torch builder's own module does, with these
tensors substituted (see nas.supernet.slot), so there is one implementation of
every block.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Move = tuple[torch.Tensor, int, torch.Tensor]  # (tensor, dim, permutation): reorder tensor along dim


class BNUnit(nn.Module):
    """A batch norm over up to `channels` channels; variants use the leading ones."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def params(self, channels: int) -> list[torch.Tensor]:
        return [self.weight[:channels], self.bias[:channels]]

    def buffers_for(self, channels: int) -> list[torch.Tensor]:
        """Views, so batch statistics gathered while training land in the shared buffers."""
        return [self.running_mean[:channels], self.running_var[:channels], self.num_batches_tracked]

    def moves(self, perm: torch.Tensor) -> list[Move]:
        return [(t, 0, perm) for t in (self.weight, self.bias, self.running_mean, self.running_var)]


class LNUnit(nn.Module):
    """A layer norm over up to `channels` features; variants use the leading ones. It has
    no running statistics, so a subnet's layer norms need no recalibration."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def params(self, channels: int) -> list[torch.Tensor]:
        return [self.weight[:channels], self.bias[:channels]]


class ConvUnit(nn.Module):
    """A conv (+ bias) (+ batch norm) of up to `out_ch` x `in_per_group` channels and the
    given kernel sizes; weight shape (out_ch, in_per_group, K, K) with K the largest."""

    def __init__(self, out_ch: int, in_per_group: int, kernels: Sequence[int], bias: bool = False,
                 bn: bool = True) -> None:
        super().__init__()
        self.kernels = sorted(set(kernels), reverse=True)
        k = self.kernels[0]
        self.weight = nn.Parameter(torch.empty(out_ch, in_per_group, k, k))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.bn = BNUnit(out_ch) if bn else None
        self.kernel_transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernels, self.kernels[1:])
        })

    def kernel_weight(self, out_ch: int, in_per_group: int, kernel: int) -> torch.Tensor:
        """The leading channels' weight at `kernel`: each smaller kernel is the transformed
        centre of the next larger one (the transformation is shared by all channels)."""
        w = self.weight[:out_ch, :in_per_group]
        for big, small in zip(self.kernels, self.kernels[1:]):
            if big == kernel:
                break
            start = (big - small) // 2
            centre = w[:, :, start:start + small, start:start + small]
            w = (centre.reshape(-1, small * small) @ self.kernel_transforms[f"{big}to{small}"]).reshape(centre.shape)
        return w

    def params(self, out_ch: int, in_per_group: int, kernel: int) -> list[torch.Tensor]:
        """Conv weight, bias, BN weight and BN bias of a variant (the builder's order)."""
        out = [self.kernel_weight(out_ch, in_per_group, kernel)]
        if self.bias is not None:
            out.append(self.bias[:out_ch])
        if self.bn is not None:
            out += self.bn.params(out_ch)
        return out

    def buffers_for(self, out_ch: int) -> list[torch.Tensor]:
        return self.bn.buffers_for(out_ch) if self.bn is not None else []

    # -- channel importance and reordering -------------------------------------------
    def out_importance(self) -> torch.Tensor:
        """L1 norm of each output channel's weights."""
        return self.weight.detach().abs().sum((1, 2, 3))

    def in_importance(self) -> torch.Tensor:
        """L1 norm of the weights reading each input channel (all outputs, all taps)."""
        return self.weight.detach().abs().sum((0, 2, 3))

    def out_moves(self, perm: torch.Tensor) -> list[Move]:
        moves: list[Move] = [(self.weight, 0, perm)]
        if self.bias is not None:
            moves.append((self.bias, 0, perm))
        if self.bn is not None:
            moves += self.bn.moves(perm)
        return moves

    def in_moves(self, perm: torch.Tensor) -> list[Move]:
        return [(self.weight, 1, perm)]


class LinearUnit(nn.Module):
    """A linear layer of up to `out_ch` x `in_ch`; variants use the leading rows/columns."""

    def __init__(self, out_ch: int, in_ch: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def params(self, out_ch: int, in_ch: int) -> list[torch.Tensor]:
        out = [self.weight[:out_ch, :in_ch]]
        return out + ([self.bias[:out_ch]] if self.bias is not None else [])

    def out_importance(self) -> torch.Tensor:
        return self.weight.detach().abs().sum(1)

    def out_moves(self, perm: torch.Tensor) -> list[Move]:
        return [(self.weight, 0, perm)] + ([(self.bias, 0, perm)] if self.bias is not None else [])

    def in_moves(self, perm: torch.Tensor) -> list[Move]:
        return [(self.weight, 1, perm)]


class QKVUnit(nn.Module):
    """An attention's fused query/key/value projection of up to `attn_dim` x `embed`.

    The weight is (3 * attn_dim, embed): queries, keys, values one after another, each
    split into heads of head_dim rows (the builder's Encoder reshapes the output to
    (3, heads, head_dim)). A variant of attention width A = heads x head_dim over E embed
    dims takes the leading A rows of each of the three parts and the leading E columns.
    With a fixed head_dim (AutoFormer's) fewer heads are the leading whole heads; with
    head_dim = embed // heads, the heads choice re-splits the same rows.
    """

    def __init__(self, attn_dim: int, embed: int) -> None:
        super().__init__()
        self.attn_dim = attn_dim
        self.weight = nn.Parameter(torch.empty(3 * attn_dim, embed))
        self.bias = nn.Parameter(torch.zeros(3 * attn_dim))

    def params(self, attn_dim: int, embed: int) -> list[torch.Tensor]:
        a = self.attn_dim
        rows = [slice(part * a, part * a + attn_dim) for part in range(3)]
        return [torch.cat([self.weight[r, :embed] for r in rows]), torch.cat([self.bias[r] for r in rows])]


class TokenUnit(nn.Module):
    """A patch embedding's learned tokens: the class token (1, 1, E) when the sequence has
    one, and a position embedding per token count (1, tokens, E; a resolution is a token
    count), each of up to E embed dims, variants use the leading ones."""

    def __init__(self, embed: int, token_counts: Sequence[int], cls_token: bool) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed)) if cls_token else None
        self.pos_embeds = nn.ParameterDict({str(t): nn.Parameter(torch.zeros(1, t, embed))
                                            for t in sorted(set(token_counts))})

    def params(self, tokens: int, embed: int) -> list[torch.Tensor]:
        out = [self.cls_token[..., :embed]] if self.cls_token is not None else []
        return out + [self.pos_embeds[str(tokens)][..., :embed]]


def init_weights(module: nn.Module, generator: torch.Generator, linear: str = "normal") -> None:
    """One initialisation for supernets and stand-alone networks alike, drawn from
    `generator` in module order so a seed fixes it: conv weights Kaiming-normal (fan
    out), linear weights N(0, 0.01) or, with linear="xavier", Xavier-uniform (ViT's: a
    transformer whose linears start at N(0, 0.01) barely moves in the quickstart's few
    steps), biases 0, batch and layer norms identity, kernel transformations identity,
    class tokens and position embeddings N(0, 0.02) truncated at +-2 (ViT's)."""
    from nas.space.builder import PatchEmbed  # the builder's module holds the same tokens

    for m in module.modules():
        if isinstance(m, (ConvUnit, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            for t in getattr(m, "kernel_transforms", {}).values():
                with torch.no_grad():
                    t.copy_(torch.eye(t.shape[0]))
        elif isinstance(m, (LinearUnit, nn.Linear, QKVUnit)):
            if linear == "xavier":
                nn.init.xavier_uniform_(m.weight, generator=generator)
            else:
                nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (LNUnit, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (TokenUnit, PatchEmbed)):
            tokens = list(m.pos_embeds.values()) if isinstance(m, TokenUnit) else [m.pos_embed]
            for t in tokens + ([m.cls_token] if m.cls_token is not None else []):
                nn.init.trunc_normal_(t, std=0.02, a=-0.04, b=0.04, generator=generator)
        elif isinstance(m, (BNUnit, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.running_mean.zero_()
            m.running_var.fill_(1)
            m.num_batches_tracked.zero_()
