"""Query-time sentence encoding without torch, for the dense recall paths.

A requirement is one or two short sentences. Encoding it with sentence-transformers means importing
torch, transformers and sentence-transformers first, which costs 2-4 s on an idle 2-core machine and
10 s or more on a busy one: more than the whole answer of `assetmatch match` may take. The encoder of
the dense paths is a small BERT (MiniLM-L6, 22M parameters) with mean pooling, so this module runs that
exact forward pass in numpy instead, with the weights read from the model's safetensors file and the
model's own fast tokenizer (`tokenizers`, the Rust library transformers itself wraps); a query is
encoded in milliseconds. No maintained library does a BERT forward pass without torch or an ONNX
export (which the model does not ship and which would add a runtime); the pass below is the standard
post-LayerNorm BERT encoder, about forty lines.

The vectors equal sentence-transformers' to float32 rounding (`tests/unit/recall/test_query_encoder.py`
compares them, and the rankings they give). A model this module does not recognise exactly — another
architecture, another pooling, an extra module, a prompt — is encoded by sentence-transformers as
before (`load_query_encoder` decides); tables are always embedded by sentence-transformers at build time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED_MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def numpy_support(folder: Path) -> str:
    """'' when `folder` holds a model this module encodes exactly as sentence-transformers does,
    else why not (the caller then uses sentence-transformers)."""
    needed = ["modules.json", "config.json", "tokenizer.json", "model.safetensors"]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        return f"no {', '.join(missing)}"
    modules = [m.get("type", "") for m in _json(folder / "modules.json")]
    if modules not in (list(SUPPORTED_MODULES), list(SUPPORTED_MODULES[:2])):
        return f"modules {modules}"
    pooling_dir = next(
        m.get("path", "") for m in _json(folder / "modules.json") if m["type"].endswith("Pooling")
    )
    pooling = _json(folder / pooling_dir / "config.json")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"] or pooling.get("include_prompt") is False:
        return f"pooling {modes}"
    config = _json(folder / "config.json")
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        return f"model type {config.get('model_type')} / activation {config.get('hidden_act')}"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return f"position embeddings {config.get('position_embedding_type')}"
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file() and _json(st_config).get("prompts"):
        return "the model declares prompts"
    return ""


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x)."""
    from scipy.special import erf  # scipy is already loaded by the join graph

    return np.asarray(0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0)))), dtype=np.float32)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(eps))) * weight + bias


class NumpyBertEncoder:
    """A BERT sentence encoder with mean pooling and L2 normalisation, run in numpy float32."""

    def __init__(self, folder: Path, max_length: int) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer

        config = _json(folder / "config.json")
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.layers = int(config["num_hidden_layers"])
        st_config = folder / "sentence_bert_config.json"
        own = _json(st_config) if st_config.is_file() else {}
        self.lower = bool(own.get("do_lower_case", False))
        self.max_length = min(max_length, int(own.get("max_seq_length") or max_length))
        with safe_open(str(folder / "model.safetensors"), framework="np") as f:
            names = list(f.keys())
            prefix = "bert." if "bert.embeddings.word_embeddings.weight" in names else ""
            self.w = {
                k[len(prefix) :]: f.get_tensor(k).astype(np.float32, copy=False)
                for k in names
                if k.startswith(prefix) and not k.startswith(f"{prefix}pooler") and "position_ids" not in k
            }
        # Linear layers as (in, out) so that x @ W needs no transpose per call
        for name in list(self.w):
            if name.endswith("dense.weight") or name.endswith(("query.weight", "key.weight", "value.weight")):
                self.w[name] = np.ascontiguousarray(self.w[name].T)
        self.dim = int(self.w["embeddings.word_embeddings.weight"].shape[1])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def _tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prepared = [t.strip().lower() if self.lower else t.strip() for t in texts]
        encodings = self.tokenizer.encode_batch(prepared)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(encodings), length), dtype=np.float32)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            types[row, : len(e.type_ids)] = e.type_ids
            mask[row, : len(e.attention_mask)] = e.attention_mask
        return ids, types, mask

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        w, eps, heads = self.w, self.eps, self.heads
        ids, types, mask = self._tokenize(texts)
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        size = self.dim // heads
        # padded keys get the most negative float, as transformers' extended attention mask does
        blocked = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(size))
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def heads_of(name: str, x: np.ndarray = x, p: str = p) -> np.ndarray:
                y = x @ w[f"{p}attention.self.{name}.weight"] + w[f"{p}attention.self.{name}.bias"]
                return y.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

            q, k, v = heads_of("query"), heads_of("key"), heads_of("value")
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs = scores / scores.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dim)
            attended = context @ w[f"{p}attention.output.dense.weight"] + w[f"{p}attention.output.dense.bias"]
            x = _layer_norm(
                attended + x,
                w[f"{p}attention.output.LayerNorm.weight"],
                w[f"{p}attention.output.LayerNorm.bias"],
                eps,
            )
            inner = _gelu(x @ w[f"{p}intermediate.dense.weight"] + w[f"{p}intermediate.dense.bias"])
            out = inner @ w[f"{p}output.dense.weight"] + w[f"{p}output.dense.bias"]
            x = _layer_norm(out + x, w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"], eps)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled / norms, dtype=np.float32)
