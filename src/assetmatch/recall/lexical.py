"""BM25 over pre-tokenized documents, with weighted query tokens.

Two indexes live here:

- `Bm25Index`: one bm25s index over a whole corpus (the usage path's past requirements, a few per
  table). bm25s scores a plain token list; a cross-lingual query needs weights (each Chinese word's
  glosses share a weight of 1), so the score is the weighted sum of per-token score vectors.
- `LexicalIndex`: the tables, one shard per business (the lexical path). A query reads only the shards
  of the businesses it may see, and a build rewrites only the shards of businesses whose tables changed.

Comparable scores across shards. BM25's idf and average document length are corpus statistics: a
shard scored with its own would rank a table higher in a small business than the same table in a large
one, and the coarse ranker reads the raw lexical score (`lexical_score`, and its share of the best
candidate's) of candidates that may come from several businesses. So the shards store only what does
not depend on other businesses (term frequencies, document lengths, their vocabulary), and the
library-wide statistics (documents, total length, document frequency per token) are one small file,
summed from the shards' own counts at every build (`CorpusStats`). A query combines them with the
formula bm25s uses (Lucene BM25, k1=1.5, b=0.75), so every table gets exactly the score the previous
library-wide bm25s index gave it, in float32 as bm25s computes it; an unchanged shard stays valid when
another business changes, because nothing in it depends on the library.

Shard layout (`lexical/shards/<business slug>/`):

    vocab.json     the shard's tokens; column j of the postings is token vocab[j]
    indptr.npy     token vocab[j]'s postings are rows indptr[j]:indptr[j+1] of postings.npy
    postings.npy   one int32 row per (token, document): local document row (sorted within a token),
                   term frequency, document length (the three numbers BM25 needs, read in one slice)
    lengths.npy    tokens per document
    tokens.json    content hash -> tokens, so the next build re-tokenizes only changed tables

The arrays are memory-mapped on a business's first query; loading an index reads only `stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

K1 = 1.5  # bm25s's defaults, what the library-wide bm25s index used
B = 0.75
SHARD_FORMAT = 1  # bump when the shard files or the scoring change: every shard is then rebuilt
STATS_FILE = "stats.json"
VOCAB_FILE = "vocab.json"
TOKENS_FILE = "tokens.json"
ARRAYS = ("indptr", "postings", "lengths")
DOC, TF, LENGTH = 0, 1, 2  # the columns of postings.npy


class LexicalShardError(LookupError):
    """A lexical shard's files are missing or disagree with the manifest."""


class Bm25Index:
    """A BM25 index over `n` documents; scores come back as a dense array of length n."""

    def __init__(self, retriever: Any, num_docs: int) -> None:
        self.retriever = retriever
        self.num_docs = num_docs
        self.vocab: dict[str, int] = dict(retriever.vocab_dict or {})

    @classmethod
    def build(cls, documents: Sequence[Sequence[str]]) -> Bm25Index:
        import bm25s

        retriever = bm25s.BM25(k1=K1, b=B)  # Lucene BM25
        # bm25s cannot index an empty corpus or an all-empty one; a placeholder token keeps shapes right
        docs = [list(d) if d else ["\u2205"] for d in documents] or [["\u2205"]]
        retriever.index(docs, show_progress=False)
        return cls(retriever, len(documents))

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, num_docs: int) -> Bm25Index:
        import bm25s

        retriever = bm25s.BM25.load(str(folder), show_progress=False, verbosity=0)
        return cls(retriever, num_docs)

    def token_scores(self, weights: Mapping[str, float]) -> dict[str, np.ndarray]:
        """Per known query token, its (weighted) score for every document."""
        out: dict[str, np.ndarray] = {}
        for token, weight in weights.items():
            if weight > 0 and token in self.vocab:
                out[token] = weight * self.retriever.get_scores([token])[: self.num_docs]
        return out

    def scores(self, weights: Mapping[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Total score per document and the per-token parts (to explain which terms matched)."""
        parts = self.token_scores(weights)
        total = np.zeros(self.num_docs, dtype=np.float32)
        for vector in parts.values():
            total += vector
        return total, parts


def count_weights(tokens: Sequence[str]) -> dict[str, float]:
    """Query tokens as weights: a token repeated in the query counts once per occurrence."""
    weights: dict[str, float] = {}
    for token in tokens:
        weights[token] = weights.get(token, 0.0) + 1.0
    return weights


# ---- per-business shards -------------------------------------------------------------------------
@dataclass
class CorpusStats:
    """The library-wide BM25 statistics every shard is scored with."""

    docs: int = 0
    length: int = 0  # tokens in all documents
    df: Counter[str] = field(default_factory=Counter)  # token -> documents containing it

    def add(self, vocab: Sequence[str], df: Iterable[int], docs: int, length: int) -> None:
        """Count one shard in: its vocabulary with each token's document frequency."""
        self.docs += docs
        self.length += length
        self.df.update(dict(zip(vocab, (int(n) for n in df))))

    @property
    def avg_length(self) -> float:
        return self.length / self.docs if self.docs else 0.0

    def idf(self, token: str) -> np.float32 | None:
        """bm25s's Lucene idf, log(1 + (N - df + 0.5) / (df + 0.5)), rounded to float32 as bm25s
        stores it; None for a token no table has."""
        n = self.df.get(token, 0)
        if n <= 0:
            return None
        return np.float32(math.log(1 + (self.docs - n + 0.5) / (n + 0.5)))

    def save(self, path: Path) -> None:
        data = {"k1": K1, "b": B, "docs": self.docs, "length": self.length, "df": dict(self.df)}
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CorpusStats:
        data = json.loads(path.read_text(encoding="utf-8"))
        if (data.get("k1"), data.get("b")) != (K1, B):
            raise ValueError(f"{path}: BM25 parameters {data.get('k1')}, {data.get('b')} are not {K1}, {B}")
        return cls(int(data["docs"]), int(data["length"]), Counter(data["df"]))


@dataclass(frozen=True)
class LexicalShardInfo:
    """One business's lexical shard as the manifest records it."""

    folder: str  # under lexical/shards/
    rows: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lexical_digest(keys: Sequence[str]) -> str:
    """What a shard's files depend on: the shard format and its tables' content keys in row order
    (a changed, added or removed table changes it; another business's tables do not)."""
    digest = hashlib.sha256(f"bm25 shard {SHARD_FORMAT}\n".encode())
    for key in keys:
        digest.update(key.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class ShardCounts:
    """What a shard adds to the library's statistics (`CorpusStats.add`)."""

    vocab: list[str]
    df: np.ndarray
    docs: int
    length: int


def write_lexical_shard(
    folder: Path, documents: Sequence[Sequence[str]], tokens_by_hash: Mapping[str, Sequence[str]]
) -> ShardCounts:
    """Write one shard: postings (term frequencies), document lengths, vocabulary, and the tokens by
    content hash for the next build. Returns its counts for the library-wide statistics."""
    import scipy.sparse as sp

    folder.mkdir(parents=True, exist_ok=True)
    vocab = sorted({t for doc in documents for t in doc})
    column = {t: j for j, t in enumerate(vocab)}
    rows = np.repeat(np.arange(len(documents), dtype=np.int64), [len(d) for d in documents])
    cols = np.fromiter((column[t] for doc in documents for t in doc), dtype=np.int64, count=len(rows))
    # one entry per token occurrence; the CSC conversion sums duplicates into term frequencies
    postings = sp.csc_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(documents), len(vocab))
    )
    postings.sum_duplicates()
    postings.sort_indices()
    lengths = np.array([len(d) for d in documents], dtype=np.int32)
    arrays = {
        "indptr": postings.indptr.astype(np.int64),
        "postings": np.column_stack(
            [postings.indices, postings.data.astype(np.int64), lengths[postings.indices]]
        ).astype(np.int32),
        "lengths": lengths,
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    (folder / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(folder / TOKENS_FILE, "w", encoding="utf-8") as out:
        json.dump({"format": SHARD_FORMAT, "tokens": dict(tokens_by_hash)}, out, ensure_ascii=False)
    return ShardCounts(vocab, np.diff(arrays["indptr"]), len(documents), int(lengths.sum()))


def shard_counts(folder: Path) -> ShardCounts:
    """The counts of a shard already on disk (one linked from the previous index)."""
    vocab = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
    indptr = np.load(folder / "indptr.npy", mmap_mode="r")
    lengths = np.load(folder / "lengths.npy", mmap_mode="r")
    return ShardCounts(vocab, np.diff(indptr), len(lengths), int(lengths.sum()))


def shard_tokens(folder: Path) -> dict[str, list[str]]:
    """Tokens by content hash of a previous shard (same shard format), or {} when unreadable."""
    try:
        data = json.loads((folder / TOKENS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(data.get("tokens", {})) if data.get("format") == SHARD_FORMAT else {}


class _LexicalShard:
    """One business's postings, read on the first query of that business (arrays memory-mapped)."""

    def __init__(self, folder: Path, info: LexicalShardInfo, start: int) -> None:
        self.folder = folder
        self.info = info
        self.start = start
        self.column: dict[str, int] | None = None  # token -> postings column, once loaded
        self.indptr: list[int] = []
        self.arrays: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def load(self) -> _LexicalShard:
        if self.column is None:
            with self._lock:
                if self.column is None:
                    try:
                        vocab = json.loads((self.folder / VOCAB_FILE).read_text(encoding="utf-8"))
                        # plain views of the maps: numpy's memmap subclass costs per slice
                        arrays = {
                            n: np.asarray(np.load(self.folder / f"{n}.npy", mmap_mode="r")) for n in ARRAYS
                        }
                    except (OSError, ValueError) as exc:
                        raise LexicalShardError(f"lexical shard {self.folder} is unreadable: {exc}") from exc
                    if len(arrays["lengths"]) != self.info.rows or len(arrays["indptr"]) != len(vocab) + 1:
                        raise LexicalShardError(
                            f"lexical shard {self.folder} holds {len(arrays['lengths'])} documents and "
                            f"{len(arrays['indptr']) - 1} tokens, the manifest says {self.info.rows} "
                            f"documents and its vocabulary {len(vocab)} tokens"
                        )
                    self.indptr = arrays["indptr"].tolist()  # small, read per query token
                    self.arrays = arrays
                    self.column = {t: j for j, t in enumerate(vocab)}
        return self


class LexicalIndex:
    """The lexical shards of one published index, each read on the first query of its business."""

    def __init__(
        self,
        folder: Path,
        shards: Mapping[str, LexicalShardInfo],
        ranges: Mapping[str, tuple[int, int]],
        stats: CorpusStats,
    ) -> None:
        self.folder = folder
        self.shards = dict(shards)
        self.stats = stats
        self._shards = {
            b: _LexicalShard(folder / "shards" / info.folder, info, ranges[b][0])
            for b, info in self.shards.items()
            if b in ranges
        }
        self.num_docs = sum(info.rows for info in self.shards.values())  # what the shards hold

    @property
    def loaded(self) -> list[str]:
        """Businesses whose shard has been read so far."""
        return sorted(b for b, s in self._shards.items() if s.column is not None)

    def search(
        self,
        weights: Mapping[str, float],
        businesses: Iterable[str],
        k: int,
        rows: np.ndarray | None = None,
    ) -> list[tuple[int, float, list[str]]]:
        """Top-k (global row, BM25 score, matched tokens best first) over the businesses' shards, best
        first, ties by row. Scores are library-wide BM25, so comparable across businesses.
        rows: only these global rows may be found (a request's scope); None: every row of the shards.

        The postings of every query token in every chosen shard are gathered into one array and
        scored at once (a per-shard loop of array operations would cost more than the scoring when a
        query spans hundreds of businesses)."""
        tokens: list[str] = []
        token_weight: list[np.float32] = []
        token_idf: list[np.float32] = []
        for token, weight in weights.items():
            idf = self.stats.idf(token) if weight > 0 else None
            if idf is not None:
                tokens.append(token)
                token_weight.append(np.float32(weight))
                token_idf.append(idf)
        if k <= 0 or not tokens:
            return []
        parts: list[np.ndarray] = []
        sizes: list[int] = []
        base: list[int] = []  # where the posting's shard starts in the compact row space below
        owner: list[int] = []  # which query token
        starts: list[int] = []  # (compact offset, global start) of each chosen shard
        offsets: list[int] = []
        offset = 0
        for business in sorted(set(businesses)):
            shard = self._shards.get(business)
            if shard is None or not shard.info.rows:
                continue
            shard.load()
            assert shard.column is not None
            postings = shard.arrays["postings"]
            for t, token in enumerate(tokens):
                j = shard.column.get(token)
                if j is not None:
                    s, e = shard.indptr[j], shard.indptr[j + 1]
                    parts.append(postings[s:e])
                    sizes.append(e - s)
                    base.append(offset)
                    owner.append(t)
            offsets.append(offset)
            starts.append(shard.start)
            offset += shard.info.rows
        if not sizes:
            return []
        size = np.array(sizes)
        gathered = np.concatenate(parts)
        pos = gathered[:, DOC].astype(np.int64) + np.repeat(np.array(base, dtype=np.int64), size)
        token_of = np.repeat(np.array(owner), size)
        tf64 = gathered[:, TF].astype(np.float64)
        length64 = gathered[:, LENGTH].astype(np.float64)
        idf32 = np.array(token_idf, dtype=np.float32)[token_of]
        # bm25s: idf (float32) * tf / (k1 * (1 - b + b * len / avg_len) + tf) in float64, stored as
        # float32; the query weight then multiplies the float32 score
        norm = K1 * ((1 - B) + B * length64 / self.stats.avg_length) + tf64
        contrib = np.array(token_weight, dtype=np.float32)[token_of] * (
            idf32.astype(np.float64) * (tf64 / norm)
        ).astype(np.float32)
        total = np.zeros(offset, dtype=np.float32)
        np.add.at(total, pos, contrib)  # a row's postings in query-token order, as bm25s's per-token sums
        if rows is not None:  # compact positions of the rows in scope; the others score 0
            keep = np.zeros(offset, dtype=bool)
            for compact, start, count in zip(offsets, starts, np.diff([*offsets, offset])):
                inside = rows[(rows >= start) & (rows < start + count)]
                keep[inside - start + compact] = True
            total[~keep] = 0.0
        hits = np.flatnonzero(total > 0)
        scores = total[hits]
        if len(hits) > k:  # the k best, and every row tied with the k-th so ties go by row
            keep = scores >= np.partition(scores, len(scores) - k)[len(scores) - k]
            hits, scores = hits[keep], scores[keep]
        order = np.lexsort((hits, -scores))[:k]  # compact positions sort like global rows
        hits, scores = hits[order], scores[order]
        at = np.searchsorted(np.array(offsets), hits, side="right") - 1
        rows = hits - np.array(offsets)[at] + np.array(starts)[at]
        matched: dict[int, list[int]] = {}
        for i in np.flatnonzero(np.isin(pos, hits) & (contrib > 0)).tolist():
            matched.setdefault(int(pos[i]), []).append(i)  # postings of a row in query order
        return [
            (
                int(row),
                float(score),
                [tokens[token_of[i]] for i in sorted(matched.get(int(hit), []), key=lambda i: -contrib[i])],
            )
            for hit, row, score in zip(hits.tolist(), rows.tolist(), scores.tolist())
        ]
