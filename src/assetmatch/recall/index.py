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
import shutil
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from assetmatch.config import RecallConfig, Settings
from assetmatch.models import GlossaryTerm, QueryLogEntry, Requirement, TableAsset
from assetmatch.recall import publish
from assetmatch.recall.assets import BusinessAssets, asset_line, read_spill, spill_by_business
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
    load_query_encoder,
    model_id,
    query_vectors,
)
from assetmatch.recall.graph import JoinGraph
from assetmatch.recall.lexical import (
    STATS_FILE,
    VOCAB_FILE,
    Bm25Index,
    CorpusStats,
    LexicalIndex,
    LexicalShardInfo,
    ShardCounts,
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
from assetmatch.text import normalize_text, same_query_key, same_request_key
from assetmatch.types import Hit

COLD_GRAPHS_CACHED = 64  # join graphs without one database's co-usage kept by `_graph_without`

if TYPE_CHECKING:  # the lake (deltalake, pyarrow) is read by `build` only: loading an index never needs it
    from assetmatch.lake import Lake

# 2: dense vectors in per-business shards (dense/shards/<business>/); 3: BM25 too (lexical/shards/);
# 4: asset_rows.json, so a load reads a business's tables on its first use
FORMAT_VERSION = 4
ASSETS_FILE = "assets.jsonl"  # the tables in row order, one JSON line each
ASSET_ROWS_FILE = "asset_rows.json"  # ids in row order; each business's rows and bytes of assets.jsonl


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
    query: str = ""  # the query and tables that answered it (`text.same_query_key`), "" when unknown


@dataclass
class LakeSnapshot:
    """What an index build reads from the lake, at pinned versions (`LakeSnapshot.read`). The coarse
    fit of the same build reuses it instead of reading the lake again. The assets are not in it: the
    build streams them at `versions["assets"]`, a batch at a time (`assetmatch.recall.assets`)."""

    versions: dict[str, int | None]
    glossary: list[GlossaryTerm]
    query_log: list[QueryLogEntry]
    train: list[Requirement]  # split "train"

    @classmethod
    def read(cls, lake: Lake, assets_version: int | None = None) -> LakeSnapshot:
        """The lake's current glossary, query log and train requirements, and the version of its
        assets to build from, `assets_version` (default: current). Raises ValueError when the assets
        table has no live asset at that version (read from its `deleted` flags alone)."""
        import pyarrow.compute as pc

        from assetmatch.lake import tables as T

        versions = {name: lake.version(name) for name in (T.ASSETS, T.GLOSSARY, T.QUERY_LOG, T.REQUIREMENTS)}
        if assets_version is None:
            assets_version = versions[T.ASSETS]
        if assets_version is None:
            raise ValueError(f"the lake at {lake.uri} has no assets table yet: ingest assets first")
        versions[T.ASSETS] = assets_version
        deleted = lake.read_arrow(T.ASSETS, version=assets_version, columns=["deleted"])["deleted"]
        if not pc.sum(pc.invert(pc.fill_null(deleted, False))).as_py():
            raise ValueError(
                f"the lake's assets table has no live asset at version {assets_version}: nothing to index"
            )
        return cls(
            versions,
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
    largest_business: int = 0  # tables of the largest business: what the build held at once
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass
class _Library:
    """What a build keeps of every table while it goes through the businesses one at a time: a few
    strings per table, never the tables themselves."""

    ids: list[str] = field(default_factory=list)  # row order: (business, asset id)
    keys: list[str] = field(default_factory=list)  # content key of each row's document
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # business -> [start, end) rows
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # business -> bytes in assets.jsonl
    links: list[tuple[str, str]] = field(default_factory=list)  # (asset id, the asset it references)
    texts: dict[str, str] = field(default_factory=dict)  # content key -> document, for the uncached ones
    has_cjk: bool = False


def write_asset_rows(
    path: Path,
    ids: Sequence[str],
    ranges: Mapping[str, Sequence[int]],
    spans: Mapping[str, Sequence[int]],
) -> None:
    """`ASSET_ROWS_FILE`: what a load needs to find any table without reading the others (ids in row
    order; business -> [start, end) rows and [start, end) bytes of `ASSETS_FILE`)."""
    rows = {"ids": list(ids), "ranges": dict(ranges), "spans": dict(spans)}
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


def business_ranges(businesses: Sequence[str]) -> dict[str, tuple[int, int]]:
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
        asset_ids: list[str],
        ranges: dict[str, tuple[int, int]],
        assets: Mapping[str, TableAsset],
        lexical: LexicalIndex,
        dense: DenseIndex | None,
        glossary: dict[str, list[GlossaryEntry]],
        past: list[PastRequirement],
        usage_lexical: Bm25Index,
        usage_vectors: np.ndarray | None,
        graph: JoinGraph,
        encoder: EncoderSpec,
        paths: Sequence[str],
        row_of: dict[str, int] | None = None,
    ) -> None:
        """asset_ids: the tables in row order, sorted by business; ranges: business -> [start, end)
        rows; assets: asset id -> table (all in memory, or read a business at a time); row_of: asset
        id -> row, when the caller has it already."""
        self.folder = folder
        self.manifest = manifest
        self.cache_query_vectors = True  # recall.cache_query_vectors (set by `load`)
        self.asset_ids = asset_ids
        self.assets = assets
        self.row_of = row_of if row_of is not None else {a: i for i, a in enumerate(asset_ids)}
        self.ranges = ranges
        order = sorted((start, business) for business, (start, _) in ranges.items())
        self._starts = [start for start, _ in order]
        self._owners = [business for _, business in order]
        self.lexical = lexical
        self.dense = dense
        self.glossary = glossary
        self.past = past
        self.past_ranges = business_ranges([p.business for p in past])
        self.usage_lexical = usage_lexical
        self.usage_vectors = usage_vectors
        self.graph = graph
        self._cold_graphs: dict[frozenset[int], JoinGraph] = {}  # see `_graph_without`
        self._database_rows: dict[str, dict[str, np.ndarray]] = {}  # see `database_rows`
        self._past_words: dict[int, frozenset[str]] = {}  # see `past_words`
        self.encoder = encoder
        self.paths = tuple(paths)
        self.library_has_cjk = bool(manifest.get("library_has_cjk", False))
        self.build_stats: BuildStats | None = None  # set by build(); None for a loaded index

    @property
    def id(self) -> str:
        return str(self.manifest["id"])

    def __repr__(self) -> str:
        return f"IndexSet(id={self.id!r}, assets={len(self.asset_ids)}, paths={list(self.paths)})"

    @cached_property
    def _past_by_text(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for i, past in enumerate(self.past):
            out[same_request_key(past.text)].append(i)
        return dict(out)

    @cached_property
    def _past_by_query(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for i, past in enumerate(self.past):
            if past.query:
                out[past.query].append(i)
        return dict(out)

    def past_words(self, i: int) -> frozenset[str]:
        """The BM25 tokens of past request `i`, tokenized on first use (a request's usage vote reads
        a few dozen neighbours; tokenizing every past request at load would cost every index load)."""
        words = self._past_words.get(i)
        if words is None:
            words = self._past_words.setdefault(i, frozenset(tokenize(self.past[i].text)))
        return words

    def past_rows_of_request(self, text: str) -> list[int]:
        """The past requests (rows of `past`) that are the request `text`: those with its text (as
        `text.same_request_key` compares) and their paraphrases, the past requests answered by the
        same query over the same tables (`text.same_query_key`)."""
        rows = self._past_by_text.get(same_request_key(normalize_text(text)), [])
        queries = {self.past[i].query for i in rows if self.past[i].query}
        if not queries:
            return rows
        return sorted({*rows, *(j for key in queries for j in self._past_by_query[key])})

    @cached_property
    def _past_by_row(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i, past in enumerate(self.past):
            for row in past.rows:
                out[row].append(i)
        return dict(out)

    def past_rows_using(self, rows: Collection[int]) -> list[int]:
        """The past requests (rows of `past`) that used any of the tables at asset `rows`."""
        return sorted({i for row in rows for i in self._past_by_row.get(row, ())})

    def database_rows(self, businesses: Collection[str], databases: Collection[str]) -> np.ndarray:
        """The rows of the tables of `businesses` that live in one of `databases` (sorted): the scope a
        request may be limited to (`recall(databases=...)`). Each business's tables are grouped by
        database once, on the first scoped request that reads it."""
        wanted = set(databases)
        found = [
            rows
            for business in sorted(set(businesses))
            for database, rows in self._rows_by_database(business).items()
            if database in wanted
        ]
        return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def holds_database(self, businesses: Collection[str], database: str) -> bool:
        """Whether a table of `businesses` lives in `database`."""
        return any(database in self._rows_by_database(business) for business in set(businesses))

    def _rows_by_database(self, business: str) -> dict[str, np.ndarray]:
        cached = self._database_rows.get(business)
        if cached is None:
            start, end = self.ranges.get(business, (0, 0))
            grouped: dict[str, list[int]] = defaultdict(list)
            for row in range(start, end):
                grouped[self.assets[self.asset_ids[row]].database].append(row)
            cached = {db: np.array(rows, dtype=np.int64) for db, rows in grouped.items()}
            self._database_rows[business] = cached
        return cached

    def used_tables(self) -> list[str]:
        """The tables some past request used (asset ids, in row order)."""
        return [self.asset_ids[row] for row in sorted(self._past_by_row)]

    def business_of(self, row: int) -> str:
        """The business a row's table belongs to (from the row ranges: reads no table)."""
        return self._owners[bisect_right(self._starts, row) - 1]

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

        The tables are streamed from the lake and handled a business at a time (`recall.assets`):
        the build holds one business's tables, not the library's, and so does the index it returns
        (its `assets` reads a business's tables from the published folder on first use).
        """
        from assetmatch.lake import tables as T

        started = time.perf_counter()
        stats = BuildStats()
        snapshot = snapshot or LakeSnapshot.read(lake, assets_version)
        versions = snapshot.versions
        glossary_terms, logged, train = snapshot.glossary, snapshot.query_log, snapshot.train
        root = Path(settings.recall.index_root)
        index_id = publish.new_index_id()
        encoder = EncoderSpec.from_recall(settings.recall)
        mid = model_id(encoder.name)
        uses_vectors = any(p in QUERY_PATHS and QUERY_PATHS[p].uses_vectors for p in settings.recall.paths)
        cache = VectorCache(root, mid) if uses_vectors else None
        cached = cache.keys() if cache is not None and not full else set()
        stats.seconds["read"] += time.perf_counter() - started

        with _Progress(progress) as bar, publish.staging(root, index_id) as folder:
            # 1. the tables: streamed into one spill file per business, then read back a business at
            # a time for its BM25 shard, its documents to embed and its lines of assets.jsonl
            t0 = time.perf_counter()
            spill = spill_by_business(lake.asset_batches(version=versions[T.ASSETS]), folder / ".spill")
            if not spill:
                raise ValueError(f"the lake's assets table has no live asset at version {versions[T.ASSETS]}")
            stats.seconds["read"] += time.perf_counter() - t0
            task = bar.task("tokenize tables", sum(rows for _, rows in spill.values()))
            library, lexical_shards, corpus = _tables(
                folder,
                root,
                spill,
                full,
                stats,
                cached if uses_vectors else None,
                lambda n: bar.advance(task, n),
            )
            shutil.rmtree(folder / ".spill")
            corpus.save(folder / "lexical" / STATS_FILE)
            row_of = {asset_id: row for row, asset_id in enumerate(library.ids)}

            # 2. past requirements for the usage path, the join graph and the glossary
            t0 = time.perf_counter()
            past = _past_requirements(logged, train, row_of, library.ranges)
            usage_lexical = Bm25Index.build([tokenize(p.text) for p in past])
            usage_lexical.save(folder / "usage" / "lexical")
            graph = JoinGraph.build(
                len(library.ids),
                [(row_of[a], row_of[b]) for a, b in library.links if b in row_of],
                [[row_of[t] for t in q.tables if t in row_of] for q in logged]
                + [[row_of[t] for t in r.gold_assets if t in row_of] for r in train],
            )
            graph.save(folder / "graph")
            glossary = _glossary_entries(glossary_terms, row_of)
            stats.seconds["usage_graph_glossary"] = time.perf_counter() - t0

            # 3. dense: reuse cached vectors, embed the rest (skipped when no path uses vectors)
            t0 = time.perf_counter()
            dense: DenseIndex | None = None
            usage_vectors: np.ndarray | None = None
            kind, dim = "none", 0
            shards: dict[str, ShardInfo] = {}
            if cache is not None:
                past_keys = [text_key(p.text) for p in past]
                fresh = _embed(
                    encoder, settings.recall, cache, index_id, bar, stats, library, cached, past_keys,
                    [p.text for p in past],
                )  # fmt: skip
                shards, usage_vectors, dim = _write_shards(
                    folder / "dense", root, mid, full, stats, library, cache, fresh, past_keys,
                    settings.recall,
                )  # fmt: skip
                kind = dense_kind(shards.values())
                np.save(folder / "usage" / "vectors.npy", usage_vectors)
                cache.compact(library.keys + past_keys, index_id)
                del fresh
            stats.seconds["dense"] = time.perf_counter() - t0

            # 4. the past requirements and glossary rows, then the manifest last (publish refuses a
            # folder without one)
            with open(folder / "usage" / "past.jsonl", "w", encoding="utf-8") as out:
                for p in past:
                    out.write(json.dumps(p.__dict__, ensure_ascii=False) + "\n")
            write_asset_rows(folder / ASSET_ROWS_FILE, library.ids, library.ranges, library.spans)
            with open(folder / "glossary.jsonl", "w", encoding="utf-8") as out:
                for entries in glossary.values():
                    for e in entries:
                        out.write(json.dumps(e.__dict__, ensure_ascii=False) + "\n")
            stats.seconds["total"] = time.perf_counter() - started
            businesses = sorted(library.ranges)
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
                "library_has_cjk": library.has_cjk,
                "counts": {
                    "assets": len(library.ids),
                    "businesses": len(businesses),
                    "largest_business": stats.largest_business,
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
        # read from the published folder, lazily, like a loaded index
        if shards:
            dense = DenseIndex(published / "dense", shards, library.ranges)
        assets = BusinessAssets(
            published / ASSETS_FILE, row_of, library.ranges, library.spans, settings.recall.tables_in_memory
        )
        built = cls(
            published, manifest, library.ids, library.ranges, assets,
            LexicalIndex(published / "lexical", lexical_shards, library.ranges, corpus), dense, glossary,
            past, usage_lexical, usage_vectors, graph, encoder, settings.recall.paths, row_of=row_of,
        )  # fmt: skip
        built.build_stats = stats
        return built

    # ---- load --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, settings: Settings | None = None) -> IndexSet:
        """Open a published index folder: its tables are read a business at a time, on the first use
        of one of them, and at most `recall.tables_in_memory` are kept (`recall.assets.BusinessAssets`);
        a business's dense and lexical shards are memory-mapped on the first query that needs them
        (the folder must therefore stay in place while the index is used).

        settings: only `recall.paths`, `recall.tables_in_memory`, `recall.cache_query_vectors` and the
        encoder's device and token budget are taken from it (default: the paths recorded in the
        manifest). The encoder is always the one recorded in the manifest: query vectors must come
        from the model that embedded the tables.
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
        try:
            rows = json.loads((folder / ASSET_ROWS_FILE).read_text(encoding="utf-8"))
            asset_ids = [str(a) for a in rows["ids"]]
            ranges = {b: (int(s), int(e)) for b, (s, e) in rows["ranges"].items()}
            spans = {b: (int(s), int(e)) for b, (s, e) in rows["spans"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexLoadError(f"{folder}: {ASSET_ROWS_FILE} is missing or unreadable: {exc}") from exc
        row_of = {asset_id: row for row, asset_id in enumerate(asset_ids)}
        held = (settings.recall if settings is not None else RecallConfig()).tables_in_memory
        assets = BusinessAssets(folder / ASSETS_FILE, row_of, ranges, spans, held)
        with open(folder / "usage" / "past.jsonl", encoding="utf-8") as lines:
            past = [PastRequirement(**json.loads(line)) for line in lines if line.strip()]
        glossary: dict[str, list[GlossaryEntry]] = defaultdict(list)
        with open(folder / "glossary.jsonl", encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    entry = GlossaryEntry(**json.loads(line))
                    glossary[entry.business].append(entry)
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
        index = cls(
            folder,
            manifest,
            asset_ids,
            ranges,
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
            row_of=row_of,
        )
        if settings is not None:
            index.cache_query_vectors = settings.recall.cache_query_vectors
        return index

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
        gloss = gloss_sentence(text) if has_cjk(text) else ""
        texts = (text,) if not gloss else (gloss, text) if self.library_has_cjk else (gloss,)
        if self.cache_query_vectors:
            return query_vectors(self.encoder, texts), gloss
        return load_query_encoder(self.encoder).encode(list(texts)), gloss

    def recall(
        self,
        text: str,
        businesses: Collection[str],
        k: int = 50,
        paths: Sequence[str] | None = None,
        leave_own_out: bool = False,
        unused_tables: Collection[str] = (),
        databases: Collection[str] | None = None,
    ) -> dict[str, list[Hit]]:
        """Candidates per recall path (lexical, dense, glossary, usage), only tables of `businesses`.

        paths: which paths to run (default: the configured ones); "graph" is answered by `expand`, which
        needs seed scores (e.g. the fused output of these paths). Paths that find nothing give [].
        leave_own_out: `text` is a labelled requirement being fitted on or judged: the past requests
        with the same text and their paraphrases (`past_rows_of_request`) do not vote in the usage path.
        unused_tables: tables taken as never used before: the past requests that used any of them do not
        vote in the usage path (`matching.fit` sees requirements as a new database's would).
        databases: the request's scope: only tables of these databases are found (every path searches
        inside them, so a scope's tables are not crowded out by the rest of the library), and only the
        past requests that used one of them vote. None: the businesses' whole library.
        """
        text = normalize_text(text)
        wanted = [p for p in (paths if paths is not None else self.paths) if p in QUERY_PATHS]
        spans = self._spans(self.ranges, businesses)
        scope = None if databases is None else self.database_rows(businesses, databases)
        if scope is not None and not len(scope):
            spans = []  # nothing in scope: every path finds nothing
        out: dict[str, list[Hit]] = {}
        vectors: tuple[np.ndarray, str] | None = None
        tokens = tokenize(text)
        weights = self.lexical_weights(text, tokens)
        if any(QUERY_PATHS[p].uses_vectors for p in wanted) and self.dense is not None and text and spans:
            vectors = self.query_vectors(text)
        unused_rows = [self.row_of[a] for a in unused_tables if a in self.row_of]
        query = Query(text, tokens, weights, businesses, spans, vectors, leave_own_out, unused_rows, scope)
        for name in wanted:
            out[name] = QUERY_PATHS[name].search(self, query, k) if text and spans else []
        return out

    def lexical_weights(self, text: str, tokens: Sequence[str] | None = None) -> dict[str, float]:
        """BM25 query tokens with weights: the text's own tokens (1 each) plus Chinese glosses (1 per word)."""
        weights = count_weights(tokenize(text) if tokens is None else tokens)
        for token, weight in weighted_gloss_tokens(text).items():
            weights[token] = weights.get(token, 0.0) + weight
        return weights

    def expand(
        self,
        seeds: Mapping[str, float],
        businesses: Collection[str],
        k: int = 20,
        unused_tables: Collection[str] = (),
        databases: Collection[str] | None = None,
    ) -> list[Hit]:
        """The "graph" path: personalized PageRank from the seed tables over FK and co-usage edges.

        seeds: asset id -> non-negative score (e.g. fused recall scores). Returns the best-scored tables
        of `businesses`, seeds included (a seed linked to other seeds rises), with the edge that links
        each table to its strongest seed as the reason. [] if "graph" is turned off.
        unused_tables: tables taken as never used before (as in `recall`): the walk does not follow
        their co-usage edges, only their foreign keys.
        databases: the request's scope (as in `recall`): the walk stays inside these databases.
        """
        if "graph" not in self.paths:
            return []
        allowed = set(businesses)
        spans = self._spans(self.ranges, allowed)
        if databases is None:
            selected = np.concatenate([np.arange(s, e) for s, e in spans]) if spans else np.zeros(0, int)
        else:  # the walk stays inside the scope: seeds outside it do not start it
            selected = self.database_rows(allowed, databases)
        rows = {
            self.row_of[a]: float(s)
            for a, s in seeds.items()
            if a in self.row_of and s > 0 and self.business_of(self.row_of[a]) in allowed
        }
        if not rows:
            return []
        graph = self._graph_without(unused_tables)
        scores = graph.personalized_pagerank(rows, selected)
        hits = []
        for rank, (row, score) in enumerate(top_rows(scores, spans, k), start=1):
            hits.append(Hit(self.asset_ids[row], score, rank, "graph", self._graph_reason(row, rows)))
        return hits

    def _graph_without(self, unused_tables: Collection[str]) -> JoinGraph:
        """The join graph without the co-usage edges of `unused_tables` (cached: a fit asks for the
        same database's tables once per requirement of it)."""
        rows = frozenset(self.row_of[a] for a in unused_tables if a in self.row_of)
        if not rows:
            return self.graph
        if rows not in self._cold_graphs:
            if len(self._cold_graphs) >= COLD_GRAPHS_CACHED:
                self._cold_graphs.clear()
            self._cold_graphs[rows] = self.graph.without_co_usage(rows)
        return self._cold_graphs[rows]

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
def _asset_key(content_hash: str) -> str:
    """A table document's content key, in the vector cache and the shard digests."""
    return f"asset:{content_hash}:doc{DOCUMENT_VERSION}"


def _owner(ranges: Mapping[str, tuple[int, int]]) -> Callable[[int], str]:
    """row -> its business, from the businesses' row ranges."""
    order = sorted((start, business) for business, (start, _) in ranges.items())
    starts, names = [s for s, _ in order], [b for _, b in order]
    return lambda row: names[bisect_right(starts, row) - 1]


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


def _previous_lexical(root: Path) -> tuple[dict[str, LexicalShardInfo], Path | None]:
    """The current index's lexical shards (same format), or none."""
    found = _previous_index(root)
    if found is None:
        return {}, None
    try:
        shards = {b: LexicalShardInfo(**info) for b, info in found[0].get("lexical_shards", {}).items()}
    except TypeError:
        return {}, None
    return shards, found[1] / "lexical" / "shards"


def _tables(
    folder: Path,
    root: Path,
    spill: Mapping[str, tuple[list[str], int]],
    full: bool,
    stats: BuildStats,
    cached: set[str] | None,
    advance: Callable[[int], None],
) -> tuple[_Library, dict[str, LexicalShardInfo], CorpusStats]:
    """Each business's tables, read back from its spill file sorted by id, one business at a time:
    its lines of assets.jsonl, its rows' ids and content keys, its foreign keys, the documents of its
    tables whose key is not in `cached` (None: no path uses vectors, no document is rendered), and
    its BM25 shard. Returns what the build keeps of the library, the lexical shards and the
    library-wide BM25 statistics summed from them."""
    previous, previous_folder = ({}, None) if full else _previous_lexical(root)
    library = _Library()
    corpus = CorpusStats()
    shards: dict[str, LexicalShardInfo] = {}
    with open(folder / ASSETS_FILE, "wb") as out:
        for business in sorted(spill):
            t0 = time.perf_counter()
            assets = read_spill(spill[business][0], business)
            hashes = _add_tables(out, business, assets, library, cached)
            stats.largest_business = max(stats.largest_business, len(assets))
            stats.seconds["read"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            shards[business], counts = _lexical_shard(
                folder / "lexical" / "shards", business, assets, hashes, previous, previous_folder, stats
            )
            corpus.add(counts.vocab, counts.df, counts.docs, counts.length)
            stats.seconds["lexical"] += time.perf_counter() - t0
            advance(len(assets))
            del assets  # before the next business's are read
    return library, shards, corpus


def _add_tables(
    out: BinaryIO, business: str, assets: Sequence[TableAsset], library: _Library, cached: set[str] | None
) -> list[str]:
    """Append one business's tables (sorted by id) to assets.jsonl and to what the build keeps of the
    library; render the documents of those not in `cached` (None: none). Returns their content hashes."""
    start, offset = len(library.ids), out.tell()
    for asset in assets:
        out.write(asset_line(asset))
    library.ranges[business] = (start, start + len(assets))
    library.spans[business] = (offset, out.tell())
    hashes = [a.content_hash() for a in assets]
    keys = [_asset_key(h) for h in hashes]
    library.ids.extend(a.asset_id for a in assets)
    library.keys.extend(keys)
    library.links.extend((a.asset_id, fk.ref_asset_id) for a in assets for fk in a.foreign_keys)
    library.has_cjk = library.has_cjk or any(has_cjk(table_document(a)) for a in assets)
    if cached is not None:
        for asset, key in zip(assets, keys):
            if key not in cached and key not in library.texts:
                library.texts[key] = table_document(asset)
    return hashes


def _lexical_shard(
    folder: Path,
    business: str,
    assets: Sequence[TableAsset],
    hashes: Sequence[str],
    previous: Mapping[str, LexicalShardInfo],
    previous_folder: Path | None,
    stats: BuildStats,
) -> tuple[LexicalShardInfo, ShardCounts]:
    """A business's BM25 shard: linked from the current index when its digest (its tables' content
    in row order) is unchanged, written otherwise, with the tokens of its unchanged tables taken from
    the previous shard. Returns it with its counts for the library-wide statistics."""
    info = LexicalShardInfo(
        shard_folder_name(business), len(assets), lexical_digest([_asset_key(h) for h in hashes])
    )
    old = previous.get(business)
    target = folder / info.folder
    if (
        previous_folder is not None
        and old is not None
        and old.digest == info.digest
        and link_shard(previous_folder / old.folder, target, VOCAB_FILE)
    ):
        stats.reused_lexical_shards.append(business)
        return info, shard_counts(target)
    known = {} if old is None or previous_folder is None else shard_tokens(previous_folder / old.folder)
    docs = []
    for asset, digest in zip(assets, hashes):
        tokens = known.get(digest)
        if tokens is None:
            tokens = lexical_tokens(asset)
            stats.retokenized_assets += 1
        docs.append(tokens)
    stats.rebuilt_lexical_shards.append(business)
    return info, write_lexical_shard(target, docs, dict(zip(hashes, docs)))


def _embed(
    encoder: EncoderSpec,
    recall: RecallConfig,
    cache: VectorCache,
    index_id: str,
    bar: _Progress,
    stats: BuildStats,
    library: _Library,
    cached: set[str],
    past_keys: list[str],
    past_texts: list[str],
) -> dict[str, np.ndarray]:
    """Embed the table documents and past requirement texts the cache lacks (`library.texts` holds
    the documents, rendered only for those tables), in process or, from `recall.dask_min_tables`
    texts on, on Dask workers (`assetmatch.recall.distributed`); write them to the cache at once (a
    later failure of this build keeps the work). Returns the fresh vectors by key."""
    texts = library.texts
    for key, text in zip(past_keys, past_texts):
        if key not in cached:
            texts.setdefault(key, text)
    missing = list(texts)
    fresh: dict[str, np.ndarray] = {}
    if missing:
        task = bar.task("embed", len(missing))
        matrix = embed_texts(
            encoder, [texts[key] for key in missing], recall, advance=lambda n: bar.advance(task, n)
        )
        fresh = dict(zip(missing, matrix))
        cache.add(index_id, fresh)
    library.texts = {}  # the documents are the largest thing a full build holds: not past this point
    asset_keys, past = set(library.keys), set(past_keys)
    stats.embedded_assets = len(asset_keys & fresh.keys())
    stats.reused_assets = len(asset_keys) - stats.embedded_assets
    stats.embedded_texts = len(past & fresh.keys())
    stats.reused_texts = len(past) - stats.embedded_texts
    return fresh


def _write_shards(
    folder: Path,
    root: Path,
    mid: str,
    full: bool,
    stats: BuildStats,
    library: _Library,
    cache: VectorCache,
    fresh: Mapping[str, np.ndarray],
    past_keys: Sequence[str],
    recall: RecallConfig,
) -> tuple[dict[str, ShardInfo], np.ndarray, int]:
    """One dense shard per business: linked from the current index when its digest is unchanged
    (unless `full`), written otherwise, from the fresh vectors and the cache. Also returns the past
    requirements' vectors (the usage path) and the vectors' dimension. Only the shards written and
    the past requirements have their vectors read."""
    previous, previous_folder = ({}, None) if full else _previous_shards(root, mid)
    shards: dict[str, ShardInfo] = {}
    todo: list[tuple[str, ShardInfo, int, int]] = []
    for business, (start, end) in library.ranges.items():
        kind = shard_kind(end - start, recall.hnsw_threshold, recall.ivfpq_threshold)
        info = ShardInfo(
            shard_folder_name(business), kind, end - start, shard_digest(mid, kind, library.keys[start:end])
        )
        old = previous.get(business)
        if (
            previous_folder is not None
            and old is not None
            and old.digest == info.digest
            and link_shard(
                previous_folder / "shards" / old.folder, folder / "shards" / info.folder, VECTORS_FILE
            )
        ):
            info = replace(info, params=old.params)  # same digest: the same index and parameters
            stats.reused_shards.append(business)
        else:
            todo.append((business, info, start, end))
        shards[business] = info
    vectors = _vectors(cache, fresh, [k for _, _, s, e in todo for k in library.keys[s:e]] + list(past_keys))
    if vectors:
        dim = int(next(iter(vectors.values())).shape[0])
    else:  # every shard linked and no past requirement: the linked files say
        any_shard = folder / "shards" / shards[stats.reused_shards[0]].folder / VECTORS_FILE
        dim = int(np.load(any_shard, mmap_mode="r").shape[1])

    def stack(keys: Sequence[str]) -> np.ndarray:
        if not keys:
            return np.zeros((0, dim), dtype=np.float32)
        return np.ascontiguousarray(np.vstack([vectors[k] for k in keys]), dtype=np.float32)

    for business, info, start, end in todo:
        params = write_shard(folder / "shards" / info.folder, stack(library.keys[start:end]), info.kind)
        shards[business] = replace(info, params=params)
        stats.rebuilt_shards.append(business)
    return shards, stack(past_keys), dim


def _vectors(
    cache: VectorCache, fresh: Mapping[str, np.ndarray], keys: Sequence[str]
) -> dict[str, np.ndarray]:
    """The vectors of `keys`: the fresh ones, the rest from the cache (which held them when the build
    listed it)."""
    out = {k: fresh[k] for k in keys if k in fresh}
    rest = [k for k in dict.fromkeys(keys) if k not in out]
    if rest:
        found = cache.lookup(rest)
        lost = len(rest) - len(found)
        if lost:
            raise RuntimeError(
                f"{lost} vectors that the cache at {cache.folder} held when this build started are gone "
                "(another build compacted it meanwhile): run the build again"
            )
        out.update(found)
    return out


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


def _past_requirements(
    logged: Sequence[Any],
    train: Sequence[Any],
    row_of: Mapping[str, int],
    ranges: Mapping[str, tuple[int, int]],
) -> list[PastRequirement]:
    """Past requests with text and tables: logged queries that carry a requirement, and train-split
    requirements (never dev/test). Only live tables of the request's own business are kept."""
    owner = _owner(ranges)

    def business_of(asset_id: str) -> str | None:
        row = row_of.get(asset_id)
        return None if row is None else owner(row)

    out = []
    for q in logged:
        if q.requirement and q.requirement.strip():
            tables = [t for t in dict.fromkeys(q.tables) if business_of(t) == q.business]
            if tables:
                text, query = normalize_text(q.requirement), same_query_key(q.sql, tables)
                out.append(PastRequirement(q.business, text, [row_of[t] for t in tables], "query_log", query))
    for r in train:
        if r.split != "train":  # read with split="train" already; kept as a guard against leakage
            continue
        tables = [t for t in dict.fromkeys(r.gold_assets) if business_of(t) == r.business]
        if tables and r.text.strip():
            text, query = normalize_text(r.text), same_query_key(r.sql, tables)
            out.append(PastRequirement(r.business, text, [row_of[t] for t in tables], "requirements", query))
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
