"""``explain`` against an independent NumPy float64 implementation of the reference semantics.

The NumPy side re-derives everything from the timm weights: its own forward pass, every
LRP rule written as explicit contribution tensors (``x_i w_ji`` summed over the input,
not as gradients), the attention gradients by central finite differences on the
attention probabilities, and the rollouts as explicit matrix products in the reference's
order (``A_last @ ... @ A_start``; ``gae`` as its loop ``R += E_i @ R`` from R = I).
Tiny models (2 blocks, 5 tokens) keep it fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import erf
from timm.models.vision_transformer import VisionTransformer

from wsss_core.cams.relevance import explain

EPS = 1e-9
IMG, PATCH, DIM, DEPTH, HEADS, NUM_CLASSES = 16, 8, 8, 2, 2, 3
LN_EPS = 1e-6


# --------------------------------------------------------------------------------------
# NumPy model


def tiny_model(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_ratio=2.0,
        num_classes=NUM_CLASSES,
    ).double()
    with torch.no_grad():  # weights large enough that relevance is far from degenerate
        for p in model.parameters():
            p.normal_(0.0, 0.5 if p.dim() > 1 else 0.2)
    return model.eval()


def weights(model: VisionTransformer) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * g + b


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def patchify(img: np.ndarray) -> np.ndarray:
    """[3, H, W] -> [L, 3*p*p], patches row-major, each vector ordered (channel, u, v)."""
    c, h, w = img.shape
    g_h, g_w = h // PATCH, w // PATCH
    return img.reshape(c, g_h, PATCH, g_w, PATCH).transpose(1, 3, 0, 2, 4).reshape(g_h * g_w, -1)


def unpatchify(rel: np.ndarray) -> np.ndarray:
    """Inverse of ``patchify`` for [L, 3*p*p] -> [3, H, W]."""
    g = IMG // PATCH
    return rel.reshape(g, g, 3, PATCH, PATCH).transpose(2, 0, 3, 1, 4).reshape(3, IMG, IMG)


def np_forward(w: dict, img: np.ndarray, attn_override: dict | None = None) -> dict:
    """Forward pass recording every tensor; ``attn_override[(block, head)]`` replaces attention."""
    d = DIM // HEADS
    pe_w = w["patch_embed.proj.weight"].reshape(DIM, -1)
    patches = patchify(img)
    tokens = np.concatenate([w["cls_token"][0], patches @ pe_w.T + w["patch_embed.proj.bias"]])
    pos = w["pos_embed"][0]
    x = tokens + pos
    blocks = []
    for i in range(DEPTH):
        p = f"blocks.{i}."
        h1 = layer_norm(x, w[p + "norm1.weight"], w[p + "norm1.bias"])
        qkv = h1 @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]
        qkv = qkv.reshape(len(x), 3, HEADS, d).transpose(1, 2, 0, 3)  # [3, heads, N, d]
        q, k, v = qkv
        attn = softmax(q @ k.transpose(0, 2, 1) * d**-0.5)
        if attn_override is not None:
            attn = attn.copy()
            for (block, head), value in attn_override.items():
                if block == i:
                    attn[head] = value
        ctx = (attn @ v).transpose(1, 0, 2).reshape(len(x), DIM)
        a_out = ctx @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        x_mid = x + a_out
        h2 = layer_norm(x_mid, w[p + "norm2.weight"], w[p + "norm2.bias"])
        hidden = gelu(h2 @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
        m_out = hidden @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
        blocks.append(
            dict(
                x=x,
                h1=h1,
                q=q,
                k=k,
                v=v,
                attn=attn,
                ctx=ctx,
                a_out=a_out,
                x_mid=x_mid,
                h2=h2,
                hidden=hidden,
                m_out=m_out,
            )
        )
        x = x_mid + m_out
    final = layer_norm(x, w["norm.weight"], w["norm.bias"])
    logits = final[0] @ w["head.weight"].T + w["head.bias"]
    return dict(patches=patches, tokens=tokens, pos=pos, blocks=blocks, final=final, logits=logits)


# --------------------------------------------------------------------------------------
# Rules as explicit contributions


def sdiv(a, b):
    den = b + EPS
    den = np.where(den == 0, EPS, den)
    return np.where(b != 0, a / den, 0.0)


def lin(r, x, wt, variant):
    """r [T, out], x [T, in], wt [out, in]; contributions c[t, j, i]."""
    c_pos = np.maximum(x, 0)[:, None, :] * np.maximum(wt, 0)[None]
    c_neg = np.minimum(x, 0)[:, None, :] * np.minimum(wt, 0)[None]
    z_pos, z_neg = c_pos.sum(-1), c_neg.sum(-1)
    if variant == "chefer":
        share = sdiv(r, z_pos + z_neg)[:, :, None]
        return ((c_pos + c_neg) * share).sum(1)
    return (c_pos * sdiv(r, z_pos)[:, :, None] + c_neg * sdiv(r, z_neg)[:, :, None]).sum(1)


def add(r, a, b, variant):
    s = sdiv(r, a + b)
    ra, rb = a * s, b * s
    if variant == "original":
        return ra, rb
    sa, sb, total = ra.sum(), rb.sum(), r.sum()
    fa = sdiv(abs(sa), abs(sa) + abs(sb)) * total
    fb = sdiv(abs(sb), abs(sa) + abs(sb)) * total
    return ra * sdiv(fa, sa), rb * sdiv(fb, sb)


def clone(r1, r2, x):
    return x * (sdiv(r1, x) + sdiv(r2, x))


def matmul(r, a, b):
    """z = a @ b per head: contributions c[n, m, e] = a[n, m] b[m, e]."""
    c = a[..., :, :, None] * b[..., None, :, :]
    share = sdiv(r, c.sum(-2))[..., :, None, :]
    return (c * share).sum(-1), (c * share).sum(-3)


def np_relevance(w: dict, fwd: dict, cls: int, variant: str) -> tuple[list, np.ndarray]:
    """LRP from the one-hot seed: (attention relevance per block, relevance of block 0 input)."""
    seed = np.zeros(NUM_CLASSES)
    seed[cls] = 1.0
    r = lin(seed[None], fwd["final"][:1], w["head.weight"], variant)[0]
    x0 = fwd["final"][0]
    rel = np.zeros_like(fwd["final"])
    rel[0] = x0 * sdiv(r, x0)
    cams = [None] * DEPTH
    for i in reversed(range(DEPTH)):
        t, p = fwd["blocks"][i], f"blocks.{i}."
        r_mid, r_m = add(rel, t["x_mid"], t["m_out"], variant)
        r_m = lin(r_m, t["hidden"], w[p + "mlp.fc2.weight"], variant)
        r_m = lin(r_m, t["h2"], w[p + "mlp.fc1.weight"], variant)
        rel = clone(r_mid, r_m, t["x_mid"])
        r_x, r_a = add(rel, t["x"], t["a_out"], variant)
        r_ctx = lin(r_a, t["ctx"], w[p + "attn.proj.weight"], variant)
        r_ctx = r_ctx.reshape(len(rel), HEADS, -1).transpose(1, 0, 2)
        r_attn, r_v = matmul(r_ctx, t["attn"], t["v"])
        r_attn, r_v = r_attn / 2, r_v / 2
        cams[i] = r_attn
        r_q, r_kt = matmul(r_attn, t["q"], t["k"].transpose(0, 2, 1))
        r_q, r_k = r_q / 2, r_kt.transpose(0, 2, 1) / 2
        r_qkv = np.stack([r_q, r_k, r_v]).transpose(2, 0, 1, 3).reshape(len(rel), -1)
        r_h1 = lin(r_qkv, t["h1"], w[p + "attn.qkv.weight"], variant)
        rel = clone(r_x, r_h1, t["x"])
    return cams, rel


def attention_gradient(w: dict, img: np.ndarray, fwd: dict, cls: int, step: float = 1e-5):
    """d logit[cls] / d attention[block, head, i, j] by central differences."""
    grads = []
    for i in range(DEPTH):
        attn = fwd["blocks"][i]["attn"]
        g = np.zeros_like(attn)
        for idx in np.ndindex(*attn.shape):
            head = idx[0]
            plus, minus = attn[head].copy(), attn[head].copy()
            plus[idx[1:]] += step
            minus[idx[1:]] -= step
            up = np_forward(w, img, {(i, head): plus})["logits"][cls]
            down = np_forward(w, img, {(i, head): minus})["logits"][cls]
            g[idx] = (up - down) / (2 * step)
        grads.append(g)
    return grads


def chain(mats: list[np.ndarray], start: int) -> np.ndarray:
    """A_last @ ... @ A_start."""
    joint = mats[start]
    for m in mats[start + 1 :]:
        joint = m @ joint
    return joint


def reference_map(w, img, cls, method, start_layer, variant) -> np.ndarray:
    fwd = np_forward(w, img)
    eye = np.eye(fwd["final"].shape[0])
    grid = IMG // PATCH
    if method == "rollout":
        mats = []
        for t in fwd["blocks"]:
            a = t["attn"].mean(0) + eye
            mats.append(a / a.sum(-1, keepdims=True))
        return chain(mats, start_layer)[0, 1:].reshape(grid, grid)
    if method == "attn_last_layer":
        return fwd["blocks"][-1]["attn"].mean(0)[0, 1:].reshape(grid, grid)
    if method == "attn_gradcam":
        grad = attention_gradient(w, img, fwd, cls)[-1][:, 0, 1:]
        cam = fwd["blocks"][-1]["attn"][:, 0, 1:]
        return np.maximum((cam * grad.mean(-1, keepdims=True)).mean(0), 0).reshape(grid, grid)
    if method == "gae":  # Transformer-MM-Explainability's ViT generate_relevance
        grads = attention_gradient(w, img, fwd, cls)
        r = eye.copy()
        for g, t in list(zip(grads, fwd["blocks"], strict=True))[start_layer:]:
            r += np.maximum(g * t["attn"], 0).mean(0) @ r
        return r[0, 1:].reshape(grid, grid)
    cams, rel = np_relevance(w, fwd, cls, variant)
    if method == "lrp_last_layer":
        return np.maximum(cams[-1], 0).mean(0)[0, 1:].reshape(grid, grid)
    if method == "transformer_attribution":
        grads = attention_gradient(w, img, fwd, cls)
        mats = [np.maximum(g * c, 0).mean(0) + eye for g, c in zip(grads, cams, strict=True)]
        return chain(mats, start_layer)[0, 1:].reshape(grid, grid)
    assert method == "full_lrp"
    r_tokens, _ = add(rel, fwd["tokens"], np.broadcast_to(fwd["pos"], rel.shape), variant)
    r_patch = r_tokens[1:]  # [L, D]
    x = fwd["patches"]  # [L, 3*p*p]
    wt = w["patch_embed.proj.weight"].reshape(DIM, -1)
    low, high = img.min(), img.max()
    contrib = (
        x[:, None, :] * wt[None] - low * np.maximum(wt, 0)[None] - high * np.minimum(wt, 0)[None]
    )  # [L, D, 3*p*p]
    z = contrib.sum(-1) + EPS
    pixels = (contrib * (r_patch / z)[:, :, None]).sum(1)
    return unpatchify(pixels).sum(0)


# --------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 3, IMG, IMG))
    return model, weights(model), images


CASES = [
    ("transformer_attribution", 0, "chefer"),
    ("transformer_attribution", 1, "chefer"),
    ("transformer_attribution", 0, "original"),
    ("rollout", 0, "chefer"),
    ("rollout", 1, "chefer"),
    ("attn_last_layer", 1, "chefer"),
    ("attn_gradcam", 1, "chefer"),
    ("lrp_last_layer", 1, "chefer"),
    ("lrp_last_layer", 1, "original"),
    ("full_lrp", 1, "chefer"),
    ("full_lrp", 1, "original"),
    ("gae", 0, "chefer"),
    ("gae", 1, "chefer"),
]


@pytest.mark.parametrize("method,start_layer,variant", CASES)
def test_explain_matches_numpy_reference(setup, method, start_layer, variant):
    model, w, images = setup
    classes = [[2, 0], [1]]
    maps = explain(model, torch.from_numpy(images), classes, method, start_layer, variant=variant)
    tol = 1e-6 if method in ("transformer_attribution", "attn_gradcam", "gae") else 1e-9
    pairs = [(b, j, c) for b, class_list in enumerate(classes) for j, c in enumerate(class_list)]
    expected = [reference_map(w, images[b], c, method, start_layer, variant) for b, _, c in pairs]
    overall = max(np.abs(e).max() for e in expected)
    assert overall > 0  # not a degenerate case
    for (b, j, _), exp in zip(pairs, expected, strict=True):
        got = maps[b][j].numpy()
        assert got.shape == exp.shape
        # a map can be all zero (e.g. a class whose mean gradient is negative everywhere)
        scale = np.abs(exp).max() or overall
        np.testing.assert_allclose(got, exp, rtol=0, atol=tol * scale)
