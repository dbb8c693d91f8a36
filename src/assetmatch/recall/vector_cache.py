"""On-disk cache of embedding vectors, keyed by (model id, content key), under the index root.

Keys are content keys: `asset:<content_hash>:doc<DOCUMENT_VERSION>` for tables, `text:<sha256>` for past
requirement texts. Each build that embeds something appends one chunk file (`<build id>.npz`) right after
embedding, so even a build that fails later keeps its vectors. When chunks pile up they are compacted into
one file holding only the keys the latest build used.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

MAX_CHUNKS = 8


def _slug(model_id: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:60]
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


def text_key(text: str) -> str:
    return "text:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class VectorCache:
    """Vectors of one model, read from and appended to `<index_root>/_vectors/<model slug>/`."""

    def __init__(self, index_root: Path, model_id: str) -> None:
        self.folder = index_root / "_vectors" / _slug(model_id)
        self.model_id = model_id

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob("*.npz")) if self.folder.exists() else []

    def keys(self) -> set[str]:
        """Every cached key, without reading a vector: a build first decides what to embed from the
        keys alone, and reads vectors only for the shards it rewrites."""
        found: set[str] = set()
        for chunk in self._chunks():
            try:
                with np.load(chunk, allow_pickle=False) as data:
                    found.update(data["keys"].tolist())
            except (OSError, ValueError, KeyError):
                continue  # a torn or foreign file is a cache miss, never an error
        return found

    def lookup(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached vectors for those of `keys` that are present."""
        wanted = set(keys)
        found: dict[str, np.ndarray] = {}
        for chunk in self._chunks():
            try:
                with np.load(chunk, allow_pickle=False) as data:
                    chunk_keys = data["keys"]
                    hits = [
                        i for i, key in enumerate(chunk_keys.tolist()) if key in wanted and key not in found
                    ]
                    if hits:
                        vectors = data["vectors"][hits]
                        for i, vector in zip(hits, vectors):
                            found[str(chunk_keys[i])] = vector
            except (OSError, ValueError, KeyError):
                continue  # a torn or foreign file is a cache miss, never an error
        return found

    def add(self, name: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Write one chunk atomically (temp file + rename)."""
        if not vectors:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(vectors.keys()))
        matrix = np.vstack(list(vectors.values())).astype(np.float32)
        tmp = self.folder / f".{name}.tmp.npz"
        np.savez(tmp, keys=keys, vectors=matrix)
        os.replace(tmp, self.folder / f"{name}.npz")

    def compact(self, live: Iterable[str], name: str) -> None:
        """When there are too many chunks, keep only the vectors of the `live` keys, in one chunk."""
        chunks = self._chunks()
        if len(chunks) <= MAX_CHUNKS:
            return
        self.add(f"{name}-compact", self.lookup(live))
        for chunk in chunks:
            if chunk.name != f"{name}-compact.npz":
                chunk.unlink(missing_ok=True)
