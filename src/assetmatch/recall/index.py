"""`IndexSet`: every recall index of one pinned lake snapshot, built, published and queried together.

Build (`IndexSet.build`) reads the `assets` table at a pinned version plus the current `glossary`,
`query_log` and `requirements` (train split only), records all those versions in the manifest, writes
everything into a new folder under `settings.recall.index_root` and publishes it atomically (see
`assetmatch.recall.publish`). Load (`IndexSet.load_latest`) reads the published one into memory, except
the per-business dense shards, memory-mapped on the first query of their business (`recall.dense`).

Query (`recall`, `expand`) runs the recall paths, each returning scored `Hit`s with a reason (`recall`
iterates the query paths registered in `assetmatch.recall.paths`, names in `assetmatch.types`):

- lexical: BM25 over table tokens (identifiers split, English stemmed, Chinese cut with jieba), one
  shard per business scored with library-wide statistics (`assetmatch.recall.lexical`); a Chinese
  requirement also queries with its CC-CEDICT glosses, each Chinese word weighing 1;
- dense: cosine of the requirement's MiniLM vector with each table document (FAISS); a Chinese
  requirement is also encoded as its gloss sentence;
- glossary: business terms / synonyms / aliases found in the requirement point to their tables;
- usage: the nearest past requirements and logged queries (BM25 + dense) vote for the tables they used;
- graph (`expand`): personalized PageRank from seed scores over foreign keys and co-usage.

Every path is limited to the requested businesses before ranking: another business's table never
comes back.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assetmatch.config import RecallConfig, Settings
from assetmatch.models import GlossaryTerm, QueryLogEntry, Requirement, TableAsset
from assetmatch.recall import publish
from assetmatch.recall.dense import (
    VECTORS_FILE,
    DenseIndex,
    ShardInfo,
    dense_kind,
    shard_digest,
    shard_kind,
    write_shard,
)
from assetmatch.recall.distributed import embed_texts
from assetmatch.recall.documents import DOCUMENT_VERSION, lexical_tokens, table_document
from assetmatch.recall.encoder import (
    EncoderSpec,
    embedding_dim,
    load_encoder,
    load_query_encoder,
    model_id,
)
from assetmatch.recall.graph import JoinGraph
from assetmatch.recall.lexical import (
    STATS_FILE,
    VOCAB_FILE,
    Bm25Index,
    CorpusStats,
    LexicalIndex,
    LexicalShardInfo,
    count_weights,
    lexical_digest,
    shard_counts,
    shard_tokens,
    write_lexical_shard,
)
from assetmatch.recall.paths import QUERY_PATHS, Query, top_rows
from assetmatch.recall.shards import link_shard, shard_folder_name
from assetmatch.recall.tokenize import gloss_sentence, has_cjk, tokenize, weighted_gloss_tokens
from assetmatch.recall.vector_cache import VectorCache, text_key
from assetmatch.text import normalize_text
from assetmatch.types import Hit

if TYPE_CHECKING:  # the lake (deltalake, pyarrow) is read by `build` only: loading an index never needs it
    from assetmatch.lake import Lake

# 2: dense vectors in per-business shards (dense/shards/<business>/); 3: BM25 too (lexical/shards/)
FORMAT_VERSION = 3


class IndexLoadError(LookupError):
    """An index folder is missing, incomplete or of another format."""


@dataclass
class GlossaryEntry:
    business: str
    term: str
    aliases: list[str]  # term + synonyms, normalized, lower-case
    alias_tokens: list[list[str]]
    rows: list[int]


@dataclass
class PastRequirement:
    business: str
    text: str
    rows: list[int]  # asset rows it used (live assets only)
    origin: str  # "query_log" | "requirements"


@dataclass
class LakeSnapshot:
    """What an index build reads from the lake, at pinned versions (`read_snapshot`). The coarse fit
    of the same build reuses it instead of reading the lake again."""

    versions: dict[str, int | None]
    assets: list[TableAsset]  # live, sorted by (business, asset_id)
    glossary: list[GlossaryTerm]
    query_log: list[QueryLogEntry]
    train: list[Requirement]  # split "train"

    @classmethod
    def read(cls, lake: Lake, assets_version: int | None = None) -> LakeSnapshot:
        """The lake's current glossary, query log and train requirements, and its assets at
        `assets_version` (default: current). Raises ValueError when there is no live asset."""
        from assetmatch.lake import tables as T

        versions = {name: lake.version(name) for name in (T.ASSETS, T.GLOSSARY, T.QUERY_LOG, T.REQUIREMENTS)}
        if assets_version is None:
            assets_version = versions[T.ASSETS]
        if assets_version is None:
            raise ValueError(f"the lake at {lake.uri} has no assets table yet: ingest assets first")
        versions[T.ASSETS] = assets_version
        assets = sorted(lake.read_assets(version=assets_version), key=lambda a: (a.business, a.asset_id))
        if not assets:
            raise ValueError(
                f"the lake's assets table has no live asset at version {assets_version}: nothing to index"
            )
        return cls(
            versions,
            assets,
            lake.read_glossary(version=versions[T.GLOSSARY]),
            lake.read_query_log(version=versions[T.QUERY_LOG]),
            lake.read_requirements(version=versions[T.REQUIREMENTS], split="train"),
        )


@dataclass
class BuildStats:
    """What a build did; also in the manifest under `counts` and `build_seconds`."""

    embedded_assets: int = 0
    retokenized_assets: int = 0
    reused_assets: int = 0
    embedded_texts: int = 0
    reused_texts: int = 0
    rebuilt_shards: list[str] = field(default_factory=list)  # businesses whose dense shard was written
    reused_shards: list[str] = field(default_factory=list)  # ... linked from the previous index
    rebuilt_lexical_shards: list[str] = field(default_factory=list)  # ... whose BM25 shard was written
    reused_lexical_shards: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _ranges(businesses: Sequence[str]) -> dict[str, tuple[int, int]]:
    """business -> [start, end) for a list sorted by business."""
    out: dict[str, tuple[int, int]] = {}
    for i, business in enumerate(businesses):
        start, _ = out.get(business, (i, i))
        out[business] = (start, i + 1)
    return out


class _Progress:
    """rich progress bars when asked for, silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int) -> Any:
        return self.bar.add_task(description, total=total) if self.bar is not None else None

    def advance(self, task: Any, amount: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(task, amount)


class IndexSet:
    """All recall indexes of one snapshot; immutable once built, safe to share between threads."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        asset_list: list[TableAsset],
        lexical: LexicalIndex,
        dense: DenseIndex | None,
        glossary: dict[str, list[GlossaryEntry]],
        past: list[PastRequirement],
        usage_lexical: Bm25Index,
        usage_vectors: np.ndarray | None,
        graph: JoinGraph,
        encoder: EncoderSpec,
        paths: Sequence[str],
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.asset_ids = [a.asset_id for a in asset_list]
        self.assets: dict[str, TableAsset] = {a.asset_id: a for a in asset_list}
        self.row_of = {asset_id: i for i, asset_id in enumerate(self.asset_ids)}
        self.ranges = _ranges([a.business for a in asset_list])
        self.lexical = lexical
        self.dense = dense
        self.glossary = glossary
        self.past = past
        self.past_ranges = _ranges([p.business for p in past])
        self.usage_lexical = usage_lexical
        self.usage_vectors = usage_vectors
        self.graph = graph
        self.encoder = encoder
        self.paths = tuple(paths)
        self.library_has_cjk = bool(manifest.get("library_has_cjk", False))
        self.build_stats: BuildStats | None = None  # set by build(); None for a loaded index

    @property
    def id(self) -> str:
        return str(self.manifest["id"])

    def __repr__(self) -> str:
        return f"IndexSet(id={self.id!r}, assets={len(self.asset_ids)}, paths={list(self.paths)})"

    # ---- build -------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        lake: Lake,
        settings: Settings,
        assets_version: int | None = None,
        full: bool = False,
        progress: bool = False,
        keep: int = 3,
        snapshot: LakeSnapshot | None = None,
    ) -> IndexSet:
        """Build every index from the lake and publish it as the new current index.

        assets_version: the `assets` table version to read (default: its current version; the version
        actually read is recorded). full: embed everything again instead of reusing cached vectors.
        keep: how many published index folders to keep. snapshot: what to build from, already read
        (`LakeSnapshot.read`; `assets_version` is then ignored). Raises ValueError (nothing published)
        when the lake has no live asset at that version.
        """
        started = time.perf_counter()
        stats = BuildStats()
        snapshot = snapshot or LakeSnapshot.read(lake, assets_version)
        versions, assets = snapshot.versions, snapshot.assets
        glossary_terms, logged, train = snapshot.glossary, snapshot.query_log, snapshot.train
        row_of = {a.asset_id: i for i, a in enumerate(assets)}
        businesses = sorted({a.business for a in assets})
        stats.seconds["read"] = time.perf_counter() - started

        root = Path(settings.recall.index_root)
        index_id = publish.new_index_id()
        with _Progress(progress) as bar, publish.staging(root, index_id) as folder:
            # 1. lexical: one BM25 shard per business, unchanged ones linked from the current index
            t0 = time.perf_counter()
            hashes = [a.content_hash() for a in assets]
            task = bar.task("tokenize tables", len(assets))
            lexical_shards, corpus = _write_lexical_shards(
                folder / "lexical", root, full, stats, assets, hashes, lambda n: bar.advance(task, n)
            )
            corpus.save(folder / "lexical" / STATS_FILE)
            stats.seconds["lexical"] = time.perf_counter() - t0

            # 2. past requirements for the usage path, and the join graph
            t0 = time.perf_counter()
            past = _past_requirements(logged, train, row_of, assets)
            usage_lexical = Bm25Index.build([tokenize(p.text) for p in past])
            usage_lexical.save(folder / "usage" / "lexical")
            graph = JoinGraph.build(
                len(assets),
                _fk_pairs(assets, row_of),
                [[row_of[t] for t in q.tables if t in row_of] for q in logged]
                + [[row_of[t] for t in r.gold_assets if t in row_of] for r in train],
            )
            graph.save(folder / "graph")
            glossary = _glossary_entries(glossary_terms, row_of)
            stats.seconds["usage_graph_glossary"] = time.perf_counter() - t0

            # 3. dense: reuse cached vectors, embed the rest (skipped when no path uses vectors)
            t0 = time.perf_counter()
            encoder = EncoderSpec.from_recall(settings.recall)
            mid = model_id(encoder.name)
            dense: DenseIndex | None = None
            usage_vectors: np.ndarray | None = None
            kind, dim = "none", 0
            shards: dict[str, ShardInfo] = {}
            if any(p in QUERY_PATHS and QUERY_PATHS[p].uses_vectors for p in settings.recall.paths):
                cache = VectorCache(root, mid)
                asset_keys = [f"asset:{digest}:doc{DOCUMENT_VERSION}" for digest in hashes]
                past_keys = [text_key(p.text) for p in past]
                vectors, usage_vectors = _embed(
                    encoder, settings.recall, cache, index_id, full, bar, stats,
                    asset_keys, lambda row: table_document(assets[row]), past_keys, [p.text for p in past],
                )  # fmt: skip
                shards = _write_shards(
                    folder / "dense", root, mid, full, stats, assets, asset_keys, vectors,
                    settings.recall.hnsw_threshold,
                )  # fmt: skip
                kind = dense_kind(shards.values())
                np.save(folder / "usage" / "vectors.npy", usage_vectors)
                cache.compact(
                    dict(zip(asset_keys + past_keys, list(vectors) + list(usage_vectors))), index_id
                )
                dim = int(vectors.shape[1])
            stats.seconds["dense"] = time.perf_counter() - t0

            # 4. the rows themselves, then the manifest last (publish refuses a folder without one)
            with open(folder / "assets.jsonl", "w", encoding="utf-8") as out:
                for asset in assets:
                    out.write(json.dumps(asset.model_dump(mode="json"), ensure_ascii=False) + "\n")
            with open(folder / "usage" / "past.jsonl", "w", encoding="utf-8") as out:
                for p in past:
                    out.write(json.dumps(p.__dict__, ensure_ascii=False) + "\n")
            with open(folder / "glossary.jsonl", "w", encoding="utf-8") as out:
                for entries in glossary.values():
                    for e in entries:
                        out.write(json.dumps(e.__dict__, ensure_ascii=False) + "\n")
            stats.seconds["total"] = time.perf_counter() - started
            manifest = {
                "id": index_id,
                "version": index_id,  # alias of id, for readers that call it the index version
                "format_version": FORMAT_VERSION,
                "created_at": datetime.now(UTC).isoformat(),
                "lake": {"uri": lake.uri, "versions": versions},
                "model": {"base": encoder.name, "id": mid, "dim": dim},
                "document_version": DOCUMENT_VERSION,
                "dense_index": kind,
                "dense_shards": {b: info.to_json() for b, info in shards.items()},
                "lexical_shards": {b: info.to_json() for b, info in lexical_shards.items()},
                "library_has_cjk": any(has_cjk(table_document(a)) for a in assets),
                "counts": {
                    "assets": len(assets),
                    "businesses": len(businesses),
                    "glossary_terms": sum(len(v) for v in glossary.values()),
                    "past_requirements": len(past),
                    "graph_edges": graph.num_edges,
                    "retokenized_assets": stats.retokenized_assets,
                    "embedded_assets": stats.embedded_assets,
                    "reused_assets": stats.reused_assets,
                    "embedded_texts": stats.embedded_texts,
                    "reused_texts": stats.reused_texts,
                    "rebuilt_shards": len(stats.rebuilt_shards),
                    "reused_shards": len(stats.reused_shards),
                    "rebuilt_lexical_shards": len(stats.rebuilt_lexical_shards),
                    "reused_lexical_shards": len(stats.reused_lexical_shards),
                    "lexical_vocabulary": len(corpus.df),
                },
                "build_seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
                "full": full,
                "config": settings.recall.model_dump(mode="json"),
                "businesses": businesses,
            }
            (folder / publish.MANIFEST).write_text(
                json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8"
            )
            published = publish.publish(root, folder, index_id, keep=keep)
        ranges = _ranges([a.business for a in assets])
        if shards:  # read from the published folder, lazily, like a loaded index
            dense = DenseIndex(published / "dense", shards, ranges)
        lexical = LexicalIndex(published / "lexical", lexical_shards, ranges, corpus)
        built = cls(
            published, manifest, assets, lexical, dense, glossary, past, usage_lexical, usage_vectors,
            graph, encoder, settings.recall.paths,
        )  # fmt: skip
        built.build_stats = stats
        return built

    # ---- load --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, settings: Settings | None = None) -> IndexSet:
        """Read a published index folder into memory; a business's dense shard is memory-mapped on the
        first query that needs it (the folder must therefore stay in place while the index is used).

        settings: only `recall.paths` and the encoder's device and token budget are taken from it
        (default: the paths recorded in the manifest). The encoder is always the one recorded in the
        manifest: query vectors must come from the model that embedded the tables.
        """
        folder = Path(path)
        manifest_path = folder / publish.MANIFEST
        if not manifest_path.exists():
            raise IndexLoadError(f"{folder} is not a published index (no {publish.MANIFEST})")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexLoadError(
                f"{folder} has index format {manifest.get('format_version')}, this version reads "
                f"{FORMAT_VERSION}: rebuild it with `assetmatch index build`"
            )
        with open(folder / "assets.jsonl", encoding="utf-8") as lines:
            assets = [TableAsset.model_validate_json(line) for line in lines if line.strip()]
        with open(folder / "usage" / "past.jsonl", encoding="utf-8") as lines:
            past = [PastRequirement(**json.loads(line)) for line in lines if line.strip()]
        glossary: dict[str, list[GlossaryEntry]] = defaultdict(list)
        with open(folder / "glossary.jsonl", encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    entry = GlossaryEntry(**json.loads(line))
                    glossary[entry.business].append(entry)
        ranges = _ranges([a.business for a in assets])
        dense = None
        usage_vectors = None
        if manifest.get("dense_index", "none") != "none":  # built without vectors when no path needed them
            shards = {b: ShardInfo(**info) for b, info in manifest.get("dense_shards", {}).items()}
            dense = DenseIndex(folder / "dense", shards, ranges)  # shards load on first query
            usage_vectors = np.load(folder / "usage" / "vectors.npy", mmap_mode="r")
        recorded = manifest["model"]["base"]
        if settings is not None:
            encoder = EncoderSpec.from_recall(settings.recall, name=recorded)
        else:
            encoder = EncoderSpec(recorded, max_length=int(manifest["config"].get("encoder_max_length", 128)))
        paths = settings.recall.paths if settings is not None else manifest["config"]["paths"]
        lexical_shards = {b: LexicalShardInfo(**info) for b, info in manifest["lexical_shards"].items()}
        try:
            corpus = CorpusStats.load(folder / "lexical" / STATS_FILE)
        except (OSError, ValueError, KeyError) as exc:
            raise IndexLoadError(f"{folder}: the lexical statistics are unreadable: {exc}") from exc
        return cls(
            folder,
            manifest,
            assets,
            LexicalIndex(folder / "lexical", lexical_shards, ranges, corpus),
            dense,
            dict(glossary),
            past,
            Bm25Index.load(folder / "usage" / "lexical", len(past)),
            usage_vectors,
            JoinGraph.load(folder / "graph"),
            encoder,
            paths,
        )

    @classmethod
    def load_latest(cls, index_root: str | Path, settings: Settings | None = None) -> IndexSet:
        """The currently published index under `index_root`."""
        root = Path(index_root)
        current = publish.current_id(root)
        if current is None:
            raise IndexLoadError(f"no index is published under {root}: run `assetmatch index build` first")
        return cls.load(root / current, settings)

    def warmup(self, chinese: bool = True) -> None:
        """Load the encoder, jieba and (if `chinese`) CC-CEDICT now, so the first query is not slow."""
        if self.dense is not None and any(
            p in QUERY_PATHS and QUERY_PATHS[p].uses_vectors for p in self.paths
        ):
            load_query_encoder(self.encoder)
        tokenize("warm up 预热")
        if chinese:
            weighted_gloss_tokens("预热")

    # ---- query -------------------------------------------------------------------------------------
    def _spans(
        self, ranges: Mapping[str, tuple[int, int]], businesses: Collection[str]
    ) -> list[tuple[int, int]]:
        return sorted(ranges[b] for b in set(businesses) if b in ranges)

    def query_vectors(self, text: str) -> tuple[np.ndarray, str]:
        """The requirement's query vectors for the dense paths, and the gloss sentence used ('' if none)."""
        model = load_query_encoder(self.encoder)
        gloss = gloss_sentence(text) if has_cjk(text) else ""
        if not gloss:
            return model.encode([text]), ""
        texts = [gloss, text] if self.library_has_cjk else [gloss]
        return model.encode(texts), gloss

    def recall(
        self, text: str, businesses: Collection[str], k: int = 50, paths: Sequence[str] | None = None
    ) -> dict[str, list[Hit]]:
        """Candidates per recall path (lexical, dense, glossary, usage), only tables of `businesses`.

        paths: which paths to run (default: the configured ones); "graph" is answered by `expand`, which
        needs seed scores (e.g. the fused output of these paths). Paths that find nothing give [].
        """
        text = normalize_text(text)
        wanted = [p for p in (paths if paths is not None else self.paths) if p in QUERY_PATHS]
        spans = self._spans(self.ranges, businesses)
        out: dict[str, list[Hit]] = {}
        vectors: tuple[np.ndarray, str] | None = None
        tokens = tokenize(text)
        weights = self.lexical_weights(text, tokens)
        if any(QUERY_PATHS[p].uses_vectors for p in wanted) and self.dense is not None and text and spans:
            vectors = self.query_vectors(text)
        query = Query(text, tokens, weights, businesses, spans, vectors)
        for name in wanted:
            out[name] = QUERY_PATHS[name].search(self, query, k) if text and spans else []
        return out

    def lexical_weights(self, text: str, tokens: Sequence[str] | None = None) -> dict[str, float]:
        """BM25 query tokens with weights: the text's own tokens (1 each) plus Chinese glosses (1 per word)."""
        weights = count_weights(tokenize(text) if tokens is None else tokens)
        for token, weight in weighted_gloss_tokens(text).items():
            weights[token] = weights.get(token, 0.0) + weight
        return weights

    def expand(self, seeds: Mapping[str, float], businesses: Collection[str], k: int = 20) -> list[Hit]:
        """The "graph" path: personalized PageRank from the seed tables over FK and co-usage edges.

        seeds: asset id -> non-negative score (e.g. fused recall scores). Returns the best-scored tables
        of `businesses`, seeds included (a seed linked to other seeds rises), with the edge that links
        each table to its strongest seed as the reason. [] if "graph" is turned off.
        """
        if "graph" not in self.paths:
            return []
        allowed = set(businesses)
        rows = {
            self.row_of[a]: float(s)
            for a, s in seeds.items()
            if a in self.row_of and self.assets[a].business in allowed and s > 0
        }
        if not rows:
            return []
        spans = self._spans(self.ranges, allowed)
        selected = np.concatenate([np.arange(s, e) for s, e in spans])
        scores = self.graph.personalized_pagerank(rows, selected)
        hits = []
        for rank, (row, score) in enumerate(top_rows(scores, spans, k), start=1):
            hits.append(Hit(self.asset_ids[row], score, rank, "graph", self._graph_reason(row, rows)))
        return hits

    def _graph_reason(self, row: int, seeds: Mapping[int, float]) -> list[str]:
        if row in seeds:
            linked = [s for s in self.graph.neighbors(row) if int(s) in seeds]
            return ["seed"] + [
                f"{self.graph.edge_kind(row, int(s))} with {self.asset_ids[int(s)]}" for s in linked[:2]
            ]
        linked = sorted(
            (int(s) for s in self.graph.neighbors(row) if int(s) in seeds), key=lambda s: -seeds[s]
        )
        if linked:
            return [f"{self.graph.edge_kind(row, s)} with {self.asset_ids[s]}" for s in linked[:3]]
        return ["two or more joins from the seeds"]

    def neighbors(self, asset_id: str) -> set[str]:
        """Tables linked to `asset_id` by a foreign key (either direction) or co-usage; empty if unknown."""
        row = self.row_of.get(asset_id)
        if row is None:
            return set()
        return {self.asset_ids[int(r)] for r in self.graph.neighbors(row)}


# ---- build helpers ---------------------------------------------------------------------------------
def _previous_index(root: Path) -> tuple[dict[str, Any], Path] | None:
    """The current index's manifest and folder when it is of this format, else None (then every
    shard is rebuilt)."""
    current = publish.current_id(root)
    if current is None:
        return None
    try:
        manifest = json.loads((root / current / publish.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: rebuild every shard
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        return None
    return manifest, root / current


def _write_lexical_shards(
    folder: Path,
    root: Path,
    full: bool,
    stats: BuildStats,
    assets: Sequence[TableAsset],
    hashes: Sequence[str],
    advance: Callable[[int], None],
) -> tuple[dict[str, LexicalShardInfo], CorpusStats]:
    """One BM25 shard per business: linked from the current index when its digest (its tables'
    content in row order) is unchanged, unless `full`; written otherwise, with the tokens of its
    unchanged tables taken from the previous shard. Returns the shards and the library's statistics
    (summed from every shard's counts)."""
    previous: dict[str, LexicalShardInfo] = {}
    previous_folder: Path | None = None
    found = None if full else _previous_index(root)
    if found is not None:
        try:
            previous = {b: LexicalShardInfo(**i) for b, i in found[0].get("lexical_shards", {}).items()}
            previous_folder = found[1] / "lexical" / "shards"
        except TypeError:
            previous = {}
    corpus = CorpusStats()
    shards: dict[str, LexicalShardInfo] = {}
    for business, (start, end) in _ranges([a.business for a in assets]).items():
        keys = [f"asset:{h}:doc{DOCUMENT_VERSION}" for h in hashes[start:end]]
        info = LexicalShardInfo(shard_folder_name(business), end - start, lexical_digest(keys))
        old = previous.get(business)
        target = folder / "shards" / info.folder
        if (
            previous_folder is not None
            and old is not None
            and old.digest == info.digest
            and link_shard(previous_folder / old.folder, target, VOCAB_FILE)
        ):
            counts = shard_counts(target)
            stats.reused_lexical_shards.append(business)
        else:
            known = (
                {} if old is None or previous_folder is None else shard_tokens(previous_folder / old.folder)
            )
            docs = []
            for asset, digest in zip(assets[start:end], hashes[start:end]):
                tokens = known.get(digest)
                if tokens is None:
                    tokens = lexical_tokens(asset)
                    stats.retokenized_assets += 1
                docs.append(tokens)
            counts = write_lexical_shard(target, docs, dict(zip(hashes[start:end], docs)))
            stats.rebuilt_lexical_shards.append(business)
        corpus.add(counts.vocab, counts.df, counts.docs, counts.length)
        shards[business] = info
        advance(end - start)
    return shards, corpus


def _write_shards(
    folder: Path,
    root: Path,
    mid: str,
    full: bool,
    stats: BuildStats,
    assets: Sequence[TableAsset],
    keys: Sequence[str],
    vectors: np.ndarray,
    hnsw_threshold: int,
) -> dict[str, ShardInfo]:
    """One dense shard per business: linked from the current index when its digest is unchanged
    (unless `full`), written otherwise. Records which were rebuilt and which reused in `stats`."""
    previous, previous_folder = ({}, None) if full else _previous_shards(root, mid)
    shards: dict[str, ShardInfo] = {}
    for business, (start, end) in _ranges([a.business for a in assets]).items():
        kind = shard_kind(end - start, hnsw_threshold)
        info = ShardInfo(
            shard_folder_name(business), kind, end - start, shard_digest(mid, kind, keys[start:end])
        )
        old = previous.get(business)
        target = folder / "shards" / info.folder
        if (
            previous_folder is not None
            and old is not None
            and old.digest == info.digest
            and link_shard(previous_folder / "shards" / old.folder, target, VECTORS_FILE)
        ):
            stats.reused_shards.append(business)
        else:
            write_shard(target, vectors[start:end], kind)
            stats.rebuilt_shards.append(business)
        shards[business] = info
    return shards


def _previous_shards(root: Path, mid: str) -> tuple[dict[str, ShardInfo], Path | None]:
    """The current index's dense shards (same format and encoder), or none."""
    found = _previous_index(root)
    if found is None:
        return {}, None
    manifest, current = found
    try:
        if manifest["model"]["id"] != mid:
            return {}, None
        shards = {b: ShardInfo(**info) for b, info in manifest.get("dense_shards", {}).items()}
    except (KeyError, TypeError):
        return {}, None  # unreadable: rebuild every shard
    return shards, current / "dense"


def _fk_pairs(assets: Sequence[TableAsset], row_of: Mapping[str, int]) -> list[tuple[int, int]]:
    pairs = []
    for asset in assets:
        for fk in asset.foreign_keys:
            target = row_of.get(fk.ref_asset_id)
            if target is not None:
                pairs.append((row_of[asset.asset_id], target))
    return pairs


def _past_requirements(
    logged: Sequence[Any], train: Sequence[Any], row_of: Mapping[str, int], assets: Sequence[TableAsset]
) -> list[PastRequirement]:
    """Past requests with text and tables: logged queries that carry a requirement, and train-split
    requirements (never dev/test). Only live tables of the request's own business are kept."""
    business_of = {a.asset_id: a.business for a in assets}
    out = []
    for q in logged:
        if q.requirement and q.requirement.strip():
            rows = [row_of[t] for t in dict.fromkeys(q.tables) if business_of.get(t) == q.business]
            if rows:
                out.append(PastRequirement(q.business, normalize_text(q.requirement), rows, "query_log"))
    for r in train:
        if r.split != "train":  # read with split="train" already; kept as a guard against leakage
            continue
        rows = [row_of[t] for t in dict.fromkeys(r.gold_assets) if business_of.get(t) == r.business]
        if rows and r.text.strip():
            out.append(PastRequirement(r.business, normalize_text(r.text), rows, "requirements"))
    out.sort(key=lambda p: p.business)
    return out


def _glossary_entries(terms: Sequence[Any], row_of: Mapping[str, int]) -> dict[str, list[GlossaryEntry]]:
    out: dict[str, list[GlossaryEntry]] = defaultdict(list)
    for term in terms:
        rows = [row_of[a] for a in term.assets if a in row_of]
        if not rows:
            continue
        aliases = list(
            dict.fromkeys(normalize_text(x).lower() for x in [term.term, *term.synonyms] if x.strip())
        )
        out[term.business].append(
            GlossaryEntry(term.business, term.term, aliases, [tokenize(a) for a in aliases], rows)
        )
    return dict(out)


def _embed(
    encoder: EncoderSpec,
    recall: RecallConfig,
    cache: VectorCache,
    index_id: str,
    full: bool,
    bar: _Progress,
    stats: BuildStats,
    asset_keys: list[str],
    asset_text: Callable[[int], str],
    past_keys: list[str],
    past_texts: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for table documents and past requirement texts: cached ones reused unless `full`; the
    missing ones embedded in process or, from `recall.dask_min_tables` texts on, on Dask workers
    (`assetmatch.recall.distributed`). Table documents are rendered (`asset_text(row)`) only for the
    tables to embed: at 10^5 tables the whole library's documents would be the build's largest list."""
    keys = asset_keys + past_keys
    cached = {} if full else cache.lookup(keys)
    missing = list(dict.fromkeys(key for key in keys if key not in cached))
    text_of: dict[str, str] = {}
    for row, key in enumerate(asset_keys):
        if key not in cached and key not in text_of:
            text_of[key] = asset_text(row)
    for key, text in zip(past_keys, past_texts):
        text_of.setdefault(key, text)
    fresh: dict[str, np.ndarray] = {}
    dim = 0
    if missing:
        task = bar.task("embed", len(missing))
        matrix = embed_texts(
            encoder, [text_of[key] for key in missing], recall, advance=lambda n: bar.advance(task, n)
        )
        dim = int(matrix.shape[1])
        fresh = dict(zip(missing, matrix))
        cache.add(index_id, fresh)  # written now: a later failure of this build keeps the work
    lookup = {**cached, **fresh}
    stats.embedded_assets = len({k for k in asset_keys if k in fresh})
    stats.reused_assets = len(set(asset_keys)) - stats.embedded_assets
    stats.embedded_texts = len({k for k in past_keys if k in fresh})
    stats.reused_texts = len(set(past_keys)) - stats.embedded_texts

    if not dim:
        dim = int(next(iter(cached.values())).shape[0]) if cached else embedding_dim(load_encoder(encoder))

    def stack(selected: list[str]) -> np.ndarray:
        if not selected:
            return np.zeros((0, dim), dtype=np.float32)
        return np.ascontiguousarray(np.vstack([lookup[k] for k in selected]), dtype=np.float32)

    return stack(asset_keys), stack(past_keys)
