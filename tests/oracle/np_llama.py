"""A small numpy forward pass of HF llama-family checkpoints (llama, qwen2, qwen3), written
for the tests from the transformers model definitions: the "HF original" side of the
perplexity comparisons, independent of our Rust code and of llama.cpp.

Covers what the test models need: RMSNorm, rotate-half RoPE, GQA attention with a causal
mask, q/k norms (qwen3), qkv biases (qwen2), SwiGLU, tied or untied head."""
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open


def load_weights(folder: Path) -> dict:
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as st:
            for k in st.keys():
                sl = st.get_slice(k)
                if sl.get_dtype() == "BF16":
                    raw = np.frombuffer(_raw_bytes(f, k), dtype=np.uint16)
                    arr = (raw.astype(np.uint32) << 16).view(np.float32).reshape(sl.get_shape())
                else:
                    arr = st.get_tensor(k).astype(np.float32)
                out[k] = arr
    return out


def _raw_bytes(path: Path, name: str) -> bytes:
    """A tensor's bytes straight from the file (numpy has no bfloat16)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        b, e = header[name]["data_offsets"]
        fh.seek(8 + n + b)
        return fh.read(e - b)


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


class Model:
    def __init__(self, folder):
        self.cfg = json.loads((Path(folder) / "config.json").read_text())
        self.w = load_weights(folder)

    def logits(self, ids):
        c, w = self.cfg, self.w
        h, nh = c["hidden_size"], c["num_attention_heads"]
        nkv = c.get("num_key_value_heads", nh)
        hd = c.get("head_dim") or h // nh
        eps = c.get("rms_norm_eps", 1e-6)
        theta = c.get("rope_theta", 10000.0)
        qk_norm = c["model_type"] == "qwen3"
        n = len(ids)
        x = w["model.embed_tokens.weight"][np.asarray(ids)]
        inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.outer(np.arange(n), inv)
        cos = np.cos(np.concatenate([ang, ang], -1)).astype(np.float32)
        sin = np.sin(np.concatenate([ang, ang], -1)).astype(np.float32)

        def rope(v):  # v: (heads, n, hd), rotate-half layout
            half = hd // 2
            rot = np.concatenate([-v[..., half:], v[..., :half]], -1)
            return v * cos + rot * sin

        mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            a = rms_norm(x, w[p + "input_layernorm.weight"], eps)

            def proj(name):
                y = a @ w[p + f"self_attn.{name}.weight"].T
                b = w.get(p + f"self_attn.{name}.bias")
                return y + b if b is not None else y

            q = proj("q_proj").reshape(n, nh, hd).transpose(1, 0, 2)
            k = proj("k_proj").reshape(n, nkv, hd).transpose(1, 0, 2)
            v = proj("v_proj").reshape(n, nkv, hd).transpose(1, 0, 2)
            if qk_norm:
                q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
                k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
            q, k = rope(q), rope(k)
            rep = nh // nkv
            k = np.repeat(k, rep, axis=0)
            v = np.repeat(v, rep, axis=0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ v).transpose(1, 0, 2).reshape(n, nh * hd)
            x = x + o @ w[p + "self_attn.o_proj.weight"].T
            m = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            g = m @ w[p + "mlp.gate_proj.weight"].T
            u = m @ w[p + "mlp.up_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "mlp.down_proj.weight"].T
        x = rms_norm(x, w["model.norm.weight"], eps)
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return x @ head.T


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def perplexity(logits_fn, tokens, ctx):
    """llama-perplexity's method: non-overlapping chunks of ctx tokens, the second half of
    each chunk scored. logits_fn(ids) -> (len(ids), vocab)."""
    nll, count = 0.0, 0
    for start in range(0, len(tokens) - ctx + 1, ctx):
        chunk = tokens[start:start + ctx]
        lp = log_softmax(np.asarray(logits_fn(chunk), dtype=np.float64))
        first = ctx // 2
        for j in range(first, ctx - 1):
            nll -= lp[j, chunk[j + 1]]
            count += 1
    return float(np.exp(nll / count))
