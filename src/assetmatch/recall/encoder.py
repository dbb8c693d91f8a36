"""The sentence encoder of the dense paths (`recall.encoder`): resolved by `assetmatch.modelpath`,
loaded offline, cached per process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assetmatch.config import RecallConfig
from assetmatch.modelpath import PACKAGED_MODEL, model_fingerprint, quiet_loading, resolve_model

__all__ = [
    "PACKAGED_MODEL",
    "EncoderSpec",
    "QueryEncoder",
    "load_encoder",
    "load_query_encoder",
    "model_id",
    "model_path",
    "query_vectors",
]


def model_path(name: str) -> Path:
    """Folder of the encoder (setting `recall.encoder`)."""
    return resolve_model(name, "recall.encoder")


def model_id(name: str) -> str:
    """A stable id of the encoder's weights: the key of cached vectors (see `modelpath.model_fingerprint`)."""
    return model_fingerprint(name, "recall.encoder")


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder, where, and how many tokens it reads (recall.encoder / encoder_device /
    encoder_max_length). The fine ranker's base is a separate setting (`ranker.base`)."""

    name: str = PACKAGED_MODEL
    device: str = "auto"
    max_length: int = 128

    @classmethod
    def from_recall(cls, recall: RecallConfig, name: str | None = None) -> EncoderSpec:
        """From settings; `name` overrides the encoder (a loaded index uses the one it was built with)."""
        return cls(name or recall.encoder, recall.encoder_device, recall.encoder_max_length)


def _device(preference: str) -> str:
    if preference != "auto":
        return preference
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=4)
def _load(path: str, device: str, max_length: int) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    with quiet_loading():
        model = SentenceTransformer(path, device=device, local_files_only=True)
    model.max_seq_length = min(max_length, model.max_seq_length or max_length)
    return model


def load_encoder(spec: EncoderSpec) -> Any:
    """The SentenceTransformer for `spec`, loaded once per process (offline; no download ever)."""
    return _load(str(model_path(spec.name)), _device(spec.device), spec.max_length)


def embedding_dim(model: Any) -> int:
    """Vector size of a SentenceTransformer (the method was renamed in sentence-transformers 6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def encode(
    model: Any, texts: Sequence[str], batch_size: int = 64, progress: Any = None, task: Any = None
) -> np.ndarray:
    """L2-normalised float32 vectors (cosine = inner product), one row per text.

    `progress`/`task`: an optional rich Progress and task id advanced per batch.
    """
    dim = embedding_dim(model)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        chunks.append(
            model.encode(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        )
        if progress is not None:
            progress.advance(task, len(batch))
    return np.ascontiguousarray(np.vstack(chunks), dtype=np.float32)


def encode_query(model: Any, text: str) -> np.ndarray:
    """One normalised query vector, shape (dim,)."""
    vector = model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vector[0], dtype=np.float32)


class QueryEncoder(Protocol):
    """Encodes requirements at query time: L2-normalised float32 vectors, one row per text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class _SentenceTransformerQueries:
    """Queries through sentence-transformers (models the numpy encoder does not recognise)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return encode(self.model, texts)


@lru_cache(maxsize=4)
def _load_queries(path: str, max_length: int, device: str) -> QueryEncoder:
    from assetmatch.recall.query_encoder import NumpyBertEncoder, numpy_support

    folder = Path(path)
    if not numpy_support(folder):
        return NumpyBertEncoder(folder, max_length)
    return _SentenceTransformerQueries(_load(path, _device(device), max_length))


def load_query_encoder(spec: EncoderSpec) -> QueryEncoder:
    """The query-time encoder for `spec`, loaded once per process: the model run in numpy when it is a
    BERT with mean pooling (`assetmatch.recall.query_encoder`: no torch import, same vectors), else the
    SentenceTransformer of `load_encoder`."""
    return _load_queries(str(model_path(spec.name)), spec.max_length, spec.device)


QUERY_VECTOR_CACHE = 8192
"""Query-vector sets kept per process (~1.5 KB per text with the default 384-dim encoder)."""


@lru_cache(maxsize=QUERY_VECTOR_CACHE)
def query_vectors(spec: EncoderSpec, texts: tuple[str, ...]) -> np.ndarray:
    """`load_query_encoder(spec).encode(texts)`, remembered per process (read-only rows).

    One build asks for the same requirement's vectors many times: the coarse fit (the requirement and
    its cold-history copy), every adapter's training pairs, validation lists and calibration, and the
    A/B gate, each through its own candidate source. Encoding is deterministic, so the first answer
    is every later one's; on the demo the repeats were ~120 s of a ~520 s build."""
    vectors = load_query_encoder(spec).encode(list(texts))
    vectors.setflags(write=False)
    return vectors
