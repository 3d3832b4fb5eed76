"""A plain port of the reference transformer attribution, the baseline of the relevance bench.

hila-chefer/Transformer-Explainability computes a map with ``baselines/ViT/ViT_LRP.py`` and
the relevance rules of ``modules/layers_ours.py``: one (image, class) at a time, a forward
pass that records every layer's input, a backward pass of ``one_hot * logits`` that saves
each block's attention gradient (``attn.register_hook``), then ``model.relprop`` through
every block down to the input, and the roll-out of ``mean_h (grad * attention relevance)+
+ I`` over the blocks from ``start_layer`` on (``compute_rollout_attention``), CLS row over
the patches. This module re-implements that algorithm the way the reference does it (layers
that keep their input, relevance rules evaluated with ``torch.autograd.grad`` on a
recomputed forward, the alpha=1/beta=0 linear rule computing both of its terms, ``beta`` = 0
times the second, as ``layers_ours.Linear`` does) on the weights of a stock timm
``VisionTransformer`` (plain patch embedding, CLS token, no layer scale or registers), so
that its maps can be compared with ``wsss_core.cams.relevance.explain``.

    ref = ReferenceViT(timm_model)
    maps = ref.transformer_attribution(image[None], class_index, start_layer=1)  # [1, h*w]

Written for the bench from the reference's description; no code is copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

EPS = 1e-9


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    den = b.clamp(min=EPS) + b.clamp(max=EPS)
    den = den + den.eq(0).to(den.dtype) * EPS
    return a / den * b.ne(0).to(b.dtype)


class Layer(nn.Module):
    """Keeps a detached copy of its input(s) (requires_grad) for the relevance rule."""

    def keep(self, inputs):
        if isinstance(inputs, list | tuple):
            self.X = [t.detach().requires_grad_(True) for t in inputs]
        else:
            self.X = inputs.detach().requires_grad_(True)

    def relprop(self, relevance: Tensor) -> Tensor:  # LayerNorm, GELU, softmax: unchanged
        return relevance


class PassThrough(Layer):
    """An element-wise module (LayerNorm, GELU, softmax) whose relevance rule is identity."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        self.keep(x)
        return self.module(x)


class Linear(Layer):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: Tensor) -> Tensor:
        self.keep(x)
        return F.linear(x, self.weight, self.bias)

    def relprop(self, relevance: Tensor, alpha: float = 1.0) -> Tensor:
        beta = alpha - 1
        w_pos, w_neg = self.weight.clamp(min=0), self.weight.clamp(max=0)
        x_pos, x_neg = self.X.clamp(min=0), self.X.clamp(max=0)

        def share(w1: Tensor, w2: Tensor, x1: Tensor, x2: Tensor) -> Tensor:
            z1, z2 = F.linear(x1, w1), F.linear(x2, w2)
            s = safe_divide(relevance, z1 + z2)
            (c1,) = torch.autograd.grad(z1, x1, s)
            (c2,) = torch.autograd.grad(z2, x2, s)
            return x1 * c1 + x2 * c2

        activators = share(w_pos, w_neg, x_pos, x_neg)
        inhibitors = share(w_neg, w_pos, x_pos, x_neg)
        return alpha * activators - beta * inhibitors


class Simple(Layer):
    """A layer of two inputs whose rule is ``x_i * grad(z) . (R / z)`` (``RelPropSimple``)."""

    def gradients(self, relevance: Tensor) -> tuple[Tensor, ...]:
        z = self.compute(*self.X)
        return torch.autograd.grad(z, self.X, safe_divide(relevance, z), retain_graph=True)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        self.keep([a, b])
        return self.compute(a, b)

    def relprop(self, relevance: Tensor) -> list[Tensor]:
        grads = self.gradients(relevance)
        return [x * g for x, g in zip(self.X, grads, strict=True)]


class Add(Simple):
    @staticmethod
    def compute(a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def relprop(self, relevance: Tensor) -> list[Tensor]:
        a, b = super().relprop(relevance)
        sum_a, sum_b, total = a.sum(), b.sum(), relevance.sum()
        fact_a = safe_divide(sum_a.abs(), sum_a.abs() + sum_b.abs()) * total
        fact_b = safe_divide(sum_b.abs(), sum_a.abs() + sum_b.abs()) * total
        return [a * safe_divide(fact_a, a.sum()), b * safe_divide(fact_b, b.sum())]


class Einsum(Simple):
    def __init__(self, equation: str) -> None:
        super().__init__()
        self.equation = equation

    def compute(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.einsum(self.equation, a, b)


class Clone(Layer):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.keep(x)
        return x, x

    def relprop(self, relevances: tuple[Tensor, Tensor]) -> Tensor:
        z = [self.X, self.X]
        shares = [safe_divide(r, x) for r, x in zip(relevances, z, strict=True)]
        (grad,) = torch.autograd.grad(z, self.X, shares)
        return self.X * grad


class SelectCls(Layer):
    def forward(self, x: Tensor) -> Tensor:
        self.keep(x)
        return x[:, 0]

    def relprop(self, relevance: Tensor) -> Tensor:
        z = self.X[:, 0]
        (grad,) = torch.autograd.grad(z, self.X, safe_divide(relevance, z))
        return self.X * grad


class Attention(nn.Module):
    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.heads, self.scale = attn.num_heads, attn.scale
        self.qkv, self.proj = Linear(attn.qkv), Linear(attn.proj)
        self.qk = Einsum("bhid,bhjd->bhij")
        self.av = Einsum("bhij,bhjd->bhid")
        self.softmax = PassThrough(nn.Softmax(dim=-1))

    def save_gradient(self, grad: Tensor) -> None:
        self.attn_gradient = grad

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = self.softmax(self.qk(q, k) * self.scale)
        self.attn = attn
        if attn.requires_grad:
            attn.register_hook(self.save_gradient)
        out = self.av(attn, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)

    def relprop(self, relevance: Tensor) -> Tensor:
        b, n, d = relevance.shape
        r = self.proj.relprop(relevance).reshape(b, n, self.heads, -1).transpose(1, 2)
        r_attn, r_v = self.av.relprop(r)
        r_attn, r_v = r_attn / 2, r_v / 2
        self.attn_relevance = r_attn
        r_q, r_k = self.qk.relprop(self.softmax.relprop(r_attn))
        r_q, r_k = r_q / 2, r_k / 2
        r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * d)
        return self.qkv.relprop(r_qkv)


class Block(nn.Module):
    def __init__(self, blk: nn.Module) -> None:
        super().__init__()
        self.norm1, self.norm2 = PassThrough(blk.norm1), PassThrough(blk.norm2)
        self.attn = Attention(blk.attn)
        self.fc1, self.fc2 = Linear(blk.mlp.fc1), Linear(blk.mlp.fc2)
        self.act = PassThrough(blk.mlp.act)
        self.add1, self.add2, self.clone1, self.clone2 = Add(), Add(), Clone(), Clone()

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.clone1(x)
        x = self.add1(x1, self.attn(self.norm1(x2)))
        x1, x2 = self.clone2(x)
        return self.add2(x1, self.fc2(self.act(self.fc1(self.norm2(x2)))))

    def relprop(self, relevance: Tensor) -> Tensor:
        r1, r2 = self.add2.relprop(relevance)
        r2 = self.norm2.relprop(self.fc1.relprop(self.act.relprop(self.fc2.relprop(r2))))
        relevance = self.clone2.relprop((r1, r2))
        r1, r2 = self.add1.relprop(relevance)
        r2 = self.norm1.relprop(self.attn.relprop(r2))
        return self.clone1.relprop((r1, r2))


class ReferenceViT(nn.Module):
    """The reference's ViT_LRP on the (shared, not copied) weights of a timm ViT."""

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        if model.num_prefix_tokens != 1 or model.no_embed_class or model.global_pool != "token":
            raise ValueError("the reference port takes a plain ViT with a CLS token")
        self.patch_embed = model.patch_embed.proj
        self.cls_token, self.pos_embed = model.cls_token, model.pos_embed
        self.blocks = nn.ModuleList(Block(blk) for blk in model.blocks)
        self.norm = PassThrough(model.norm)
        self.pool = SelectCls()
        self.head = Linear(model.head)
        self.add = Add()

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.add(x, self.pos_embed.expand(x.shape[0], -1, -1))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.pool(self.norm(x)))

    def relprop(self, relevance: Tensor) -> Tensor:
        relevance = self.norm.relprop(self.pool.relprop(self.head.relprop(relevance)))
        for blk in reversed(self.blocks):
            relevance = blk.relprop(relevance)
        return relevance

    def transformer_attribution(self, image: Tensor, index: int, start_layer: int = 1) -> Tensor:
        """``LRP.generate_LRP(image, index, "transformer_attribution", start_layer)`` for one
        image [1, 3, H, W]: forward, backward of the one-hot logit, relprop, roll-out."""
        output = self(image)
        one_hot = torch.zeros_like(output)
        one_hot[0, index] = 1
        self.zero_grad()
        (one_hot * output).sum().backward(retain_graph=True)
        self.relprop(one_hot)
        cams = []
        for blk in self.blocks:
            grad, cam = blk.attn.attn_gradient[0], blk.attn.attn_relevance[0]
            cams.append((grad * cam).clamp(min=0).mean(dim=0)[None])
        n = cams[0].shape[-1]
        eye = torch.eye(n, dtype=cams[0].dtype, device=cams[0].device)[None]
        joint = cams[start_layer] + eye
        for cam in cams[start_layer + 1 :]:
            joint = (cam + eye).bmm(joint)
        return joint[:, 0, 1:].detach()
