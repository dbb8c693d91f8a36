"""Benchmark harness: load a dataset into a temporary lake, build the indexes, fit the learned parts on the
dataset's `train` split, match every requirement of the evaluated split, and score the answers.

A dataset is a folder with `assets.jsonl.gz` (read by the `catalog_file` source) and
`requirements.jsonl.gz` (the `requirements` source), as in ../shared/benchmarks/spider; any folder in
that format works.

Settings:
- `union`: every table of every database is a candidate (all assets and requirements are put in one
  business, `UNION_BUSINESS`; SpiderUnion). Tables keep their `database`, which the group features use.
- `business`: each requirement sees only its own database (business = database).

What is learned (the coarse fusion model and the selection parameters) is fitted on split `train` only:
of the evaluated dataset, or of `fit_on` (another dataset over the same assets, e.g. Spider's train for
CSpider, which has no train split). A dataset with no train split and no `fit_on` is evaluated with what
needs no training: RRF fusion and top-1 selection with FK closure — unless synthetic requirements are on.

`scope="database"`: each requirement names the database(s) of its gold tables as its scope, as a
Text2SQL service connected to one database would (`Matcher.match(databases=...)`): the evaluated ones
are answered there, and the `train` ones the coarse model is fitted on are asked there too
(`Requirement.databases`), as a deployment whose requests carry their scope records and refits them.
In the union setting that removes the tables of other databases, namesakes included. `scope="none"`:
every requirement is asked in the whole library.

`label_free`: the first-day setting. Nothing labelled is fitted on — no requirement of the evaluated
dataset or of any other (`fit_on` is refused) — only requirements synthesized from the evaluated
library's metadata (`matching.synthetic`). Otherwise synthetic requirements follow the settings'
`matching.synthetic` (blended with the labelled ones by default), so `fit_limit` draws a learning curve.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assetmatch.config import LakeConfig, RecallConfig, Settings, SourceSpec
from assetmatch.evaluation import metrics as M
from assetmatch.lake.delta import Lake
from assetmatch.matching.fit import CALIBRATION_MAX as CALIBRATION_MAX  # re-exported for benchmarks
from assetmatch.matching.fit import FitResult as FitResult
from assetmatch.matching.fit import coarse_model_name, fit_matching, synthetic_requirements
from assetmatch.matching.fit import point_in_time_features as point_in_time_features
from assetmatch.matching.fit import save_fit as save_fit
from assetmatch.matching.fusion import (
    RRFRanker,
    collect_candidates,
)
from assetmatch.matching.matcher import Matcher
from assetmatch.matching.selection import (
    ScoredTable,
    top_k_selection,
)
from assetmatch.models import Requirement, TableAsset
from assetmatch.recall.index import IndexSet, LakeSnapshot
from assetmatch.sources import registry

log = logging.getLogger(__name__)

UNION_BUSINESS = "library"
Setting = Literal["union", "business"]
Scope = Literal["none", "database"]
ASSETS_FILE = "assets.jsonl.gz"
REQUIREMENTS_FILE = "requirements.jsonl.gz"


@dataclass
class EvalOptions:
    """One `assetmatch eval` run."""

    dataset: Path
    split: str = "dev"
    setting: Setting = "union"
    limit: int | None = None
    fit_on: Path | None = None
    fit_limit: int | None = None
    seed: int = 0
    workdir: Path | None = None  # keep the temporary lake and indexes here (default: a temp dir, removed)
    label_free: bool = False  # fit only on requirements synthesized from the library's metadata
    # "database": each requirement is matched inside the database(s) of its gold tables, as a request
    # that names its scope (`Matcher.match(databases=...)`: the database a Text2SQL session is
    # connected to) is served, and the train requirements are fitted on there too (`asked_in`);
    # "none": in the whole library the setting gives it
    scope: Scope = "none"

    def __post_init__(self) -> None:
        if self.label_free and (self.fit_on is not None or self.fit_limit is not None):
            raise ValueError(
                "--label-free fits on no labelled requirement: it cannot take --fit-on/--fit-limit"
            )


@dataclass
class EvalRun:
    """Everything a report needs."""

    options: EvalOptions
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    fit: dict[str, Any]
    n_requirements: int
    n_assets: int
    index_manifest: dict[str, Any]
    per_requirement: list[dict[str, Any]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


# ---- dataset loading (sources -> temporary lake) -----------------------------------------------


def _check_dataset(path: Path) -> None:
    for name in (ASSETS_FILE, REQUIREMENTS_FILE):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path} is not a benchmark folder: {name} is missing")


def _read_requirements(path: Path) -> list[Requirement]:
    """The dataset's requirements (every split), read by the `requirements` source plugin."""
    spec = SourceSpec(
        name="benchmark-requirements", type="requirements", options={"path": str(path / REQUIREMENTS_FILE)}
    )
    source = registry.create(spec)
    try:
        requirements = list(source.iter_requirements())
    finally:
        source.close()
    if source.report.failures:
        raise ValueError(f"could not read requirements from {path}: {source.report.failures}")
    if source.report.counts.get("bad_records"):
        log.warning("%s: %s", path / REQUIREMENTS_FILE, "; ".join(source.report.warnings[:5]))
    return requirements


BENCHMARK_SOURCE = "benchmark-assets"


def read_benchmark(dataset: Path, setting: Setting) -> tuple[list[TableAsset], list[Requirement]]:
    """The dataset's tables and requirements (every split), nothing written anywhere.

    Assets are read by the `catalog_file` source, as any catalog would be; in the union setting the
    source's `business` option puts every table in `UNION_BUSINESS`, and the requirements' business is
    rewritten to it. Requirements are read by the `requirements` source; a gold table missing from
    the assets is an error naming the requirement."""
    _check_dataset(dataset)
    options: dict[str, Any] = {"path": str(dataset / ASSETS_FILE)}
    if setting == "union":
        options["business"] = UNION_BUSINESS
    source = registry.create(SourceSpec(name=BENCHMARK_SOURCE, type="catalog_file", options=options))
    try:
        assets = list(source.iter_assets())
    finally:
        source.close()
    if source.report.failures or not assets:
        raise ValueError(f"could not read assets from {dataset}: {source.report.as_dict()}")
    requirements = _read_requirements(dataset)
    if setting == "union":
        requirements = [r.model_copy(update={"business": UNION_BUSINESS}) for r in requirements]
    known = {a.asset_id for a in assets}
    for req in requirements:
        missing = [g for g in req.gold_assets if g not in known]
        if missing:
            raise ValueError(f"requirement {req.id} names gold tables missing from the assets: {missing}")
    return assets, requirements


def load_benchmark(dataset: Path, setting: Setting, settings: Settings) -> list[Requirement]:
    """Ingest the dataset's assets into `settings.lake` (the lake's merge, as any catalog) and return
    its requirements (all splits; `read_benchmark`).

    Requirements are deliberately *not* written to the lake: the index turns the lake's train
    requirements into the usage path and co-usage graph edges, and a training requirement would then
    find itself (its own gold tables) while the coarse model is fitted — a leak dev/test never see.
    """
    assets, requirements = read_benchmark(dataset, setting)
    Lake.from_settings(settings).merge_assets(assets, run_id="benchmark-load", snapshot_of=BENCHMARK_SOURCE)
    return requirements


# ---- fitting -----------------------------------------------------------------------------------


def _sample(items: Sequence[Requirement], limit: int | None, seed: int) -> list[Requirement]:
    items = list(items)
    if limit is None or len(items) <= limit:
        return items
    return random.Random(seed).sample(items, limit)


# ---- evaluation --------------------------------------------------------------------------------


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="assetmatch-eval-") as tmp:
        yield Path(tmp)


def eval_settings(base: Settings, workdir: Path) -> Settings:
    """The caller's settings with the lake and indexes moved into `workdir` (businesses undeclared)."""
    return base.model_copy(
        update={
            "lake": LakeConfig(uri=str(workdir / "lake")),
            "recall": RecallConfig(**{**base.recall.model_dump(), "index_root": str(workdir / "indexes")}),
            "businesses": [],
            "sources": [],
        }
    )


ProgressFn = Callable[[Iterator[Any], int, str], Iterator[Any]]


def run_eval(options: EvalOptions, base_settings: Settings, progress: ProgressFn | None = None) -> EvalRun:
    """Run one benchmark evaluation end to end (see the module docstring)."""
    timings: dict[str, float] = {}
    with _workdir(options.workdir) as workdir:
        settings = eval_settings(base_settings, workdir)
        t0 = time.perf_counter()
        requirements = load_benchmark(options.dataset, options.setting, settings)
        timings["load_s"] = time.perf_counter() - t0
        log.info(
            "loaded %d requirements from %s in %.1fs", len(requirements), options.dataset, timings["load_s"]
        )
        evaluated = [r for r in requirements if r.split == options.split and r.gold_assets]
        if not evaluated:
            splits = sorted({r.split for r in requirements})
            raise ValueError(
                f"{options.dataset} has no requirements in split {options.split!r} (splits: {splits})"
            )
        if options.limit is not None:
            evaluated = evaluated[: options.limit]

        t0 = time.perf_counter()
        lake = Lake.from_settings(settings)
        snapshot = LakeSnapshot.read(lake)
        index = IndexSet.build(lake, settings, snapshot=snapshot)
        index.warmup()  # load the encoder and the zh->en lexicon now, not inside the first timed query
        timings["index_build_s"] = time.perf_counter() - t0
        log.info("built the indexes over %d tables in %.1fs", len(index.assets), timings["index_build_s"])

        train: list[Requirement] = []
        if options.label_free:
            settings = settings.model_copy(
                update={"matching": settings.matching.model_copy(update={"synthetic": "only"})}
            )
        else:
            fit_requirements = (
                _fit_on_requirements(options.fit_on, options.setting, index)
                if options.fit_on is not None
                else requirements
            )
            train = _sample(
                [r for r in fit_requirements if r.split == "train" and r.gold_assets],
                options.fit_limit,
                options.seed,
            )
        t0 = time.perf_counter()
        # the library's own metadata (glossary and query log if any), as the index read it
        synthetic = synthetic_requirements(
            index, settings, snapshot.glossary, snapshot.query_log, seed=options.seed
        )
        timings["synthesize_s"] = time.perf_counter() - t0
        train = asked_in(train, options.scope, index.assets)
        t0 = time.perf_counter()
        fit = fit_matching(index, settings, train, options.seed, progress, synthetic=synthetic)
        timings["fit_s"] = time.perf_counter() - t0
        log.info(
            "fitted on %d train requirements in %.1fs: %s",
            len(train),
            timings["fit_s"],
            coarse_model_name(fit.report),
        )
        matcher = Matcher(index, settings, coarse=fit.coarse, selector=fit.selector())

        t0 = time.perf_counter()
        rows, baseline_rows = _match_all(matcher, asked_in(evaluated, options.scope, index.assets), progress)
        timings["match_s"] = time.perf_counter() - t0

    golds = [set(r.gold_assets) for r in evaluated]
    result = M.ranking_metrics([row["ranked"] for row in rows], golds)
    result.update(M.set_metrics([row["selected"] for row in rows], golds))
    lat = M.latency_metrics(
        {
            "latency_ms": [row["recall_coarse_ms"] for row in rows],
            "latency_total_ms": [row["total_ms"] for row in rows],
        }
    )
    result.update(lat)
    rrf = M.ranking_metrics([b["rrf"] for b in baseline_rows], golds)
    top2 = M.set_metrics([b["top2"] for b in baseline_rows], golds)
    return EvalRun(
        options=options,
        metrics=result,
        baselines={"rrf": rrf, "top2_selection": top2},
        fit=fit.report,
        n_requirements=len(evaluated),
        n_assets=len(index.assets),
        index_manifest=dict(index.manifest),
        per_requirement=rows,
        timings_s=timings,
    )


def _fit_on_requirements(path: Path, setting: Setting, index: IndexSet) -> list[Requirement]:
    """Training requirements of another dataset over the same assets (`--fit-on`)."""
    _check_dataset(path)
    requirements = _read_requirements(path)
    if setting == "union":
        requirements = [r.model_copy(update={"business": UNION_BUSINESS}) for r in requirements]
    missing = {g for r in requirements for g in r.gold_assets if g not in index.assets}
    if missing:
        raise ValueError(
            f"--fit-on {path}: its gold tables are not in the evaluated dataset's assets "
            f"({len(missing)} missing, e.g. {sorted(missing)[:3]}); it must share the asset library"
        )
    return requirements


def gold_databases(gold: Iterable[str], assets: Mapping[str, TableAsset]) -> list[str]:
    """The databases of a requirement's gold tables: the scope a Text2SQL session connected to them
    would send (`Matcher.match(databases=...)`)."""
    return sorted({assets[a].database for a in gold if a in assets})


def asked_in(
    requirements: Sequence[Requirement], scope: Scope, assets: Mapping[str, TableAsset]
) -> list[Requirement]:
    """The requirements with the scope `scope` gives them (`Requirement.databases`): each one's gold
    databases (`database`), or none (`none`: the whole library)."""
    if scope == "none":
        return [r.model_copy(update={"databases": None}) for r in requirements]
    return [
        r.model_copy(update={"databases": gold_databases(r.gold_assets, assets) or None})
        for r in requirements
    ]


def _match_all(
    matcher: Matcher, evaluated: Sequence[Requirement], progress: ProgressFn | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    depth = max(M.KS)
    rows: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    iterator: Iterator[Requirement] = iter(evaluated)
    if progress is not None:
        iterator = progress(iterator, len(evaluated), "match")
    for req in iterator:
        start = time.perf_counter()
        hits = matcher.recall(req.business, req.text, databases=req.databases)
        recalled = time.perf_counter()
        result = matcher.rank(req.business, req.text, hits, k=depth)
        done = time.perf_counter()
        ranked = [t.asset_id for t in result.ranked][:depth]
        rows.append(
            {
                "id": req.id,
                "business": req.business,
                "gold": list(req.gold_assets),
                "ranked": ranked,
                "selected": list(result.selected),
                "recall_coarse_ms": (recalled - start) * 1000 + result.timings_ms.get("coarse", 0.0),
                "total_ms": (done - start) * 1000,
            }
        )
        rrf = RRFRanker().rank(req.text, list(collect_candidates(hits).values()))
        scored = [ScoredTable(t.asset_id, t.score) for t in result.ranked]
        baselines.append({"rrf": [c.asset_id for c in rrf[:depth]], "top2": top_k_selection(scored, 2)})
    return rows, baselines
