"""Validate one batch of records with the table's GX suite; split it into good and bad rows.

Every batch a source yields is validated before it merges. GX runs the checked-in suite
(`assetmatch.quality.suites`) on the flat frame of the batch (`assetmatch.quality.frames`) with
`result_format=COMPLETE` and `unexpected_index_column_names=["row_index"]`, which names each
refused row; the expectation's `meta.reason` becomes the quarantine reason. Checks GX cannot
express run in Python (`frames.python_problems`).

`great_expectations` takes seconds to import, so it is imported once per process, on the first
non-empty batch, and its context is shared (under a lock: GX contexts are not thread-safe, and
the ingest flow validates sources from parallel threads).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from assetmatch.config import Settings
from assetmatch.quality import frames, suites
from assetmatch.sources.base import Rejected

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext

RecordT = TypeVar("RecordT", bound=BaseModel)


class SuiteError(RuntimeError):
    """An expectation could not run (a broken suite file, a missing derived column)."""


@dataclass
class ExpectationOutcome:
    """One expectation's result on one batch."""

    expectation: str
    column: str
    reason: str
    success: bool
    unexpected_count: int


@dataclass
class BadRecord(Generic[RecordT]):
    """A refused record and every reason it was refused for (`record`: the model, or what the source
    read when it could not build one)."""

    record: RecordT | Any
    key: str
    reasons: list[str]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass
class BatchValidation(Generic[RecordT]):
    """The verdict on one batch: rows to merge, rows to quarantine, and what each check found."""

    table: str
    good: list[RecordT] = field(default_factory=list)
    bad: list[BadRecord[RecordT]] = field(default_factory=list)
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    python_failures: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.good) + len(self.bad)

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.total if self.total else 0.0

    @property
    def success(self) -> bool:
        return not self.bad

    def summary(self) -> dict[str, Any]:
        """JSON-ready: counts, failed reasons with their row counts, each expectation's outcome."""
        reasons: Counter[str] = Counter()
        for bad in self.bad:
            reasons.update(r.split(":")[0] for r in bad.reasons)
        return {
            "table": self.table,
            "rows": self.total,
            "good": len(self.good),
            "bad": len(self.bad),
            "bad_fraction": round(self.bad_fraction, 4),
            "reasons": dict(reasons),
            "expectations": [asdict(o) for o in self.outcomes],
            "python_checks": dict(self.python_failures),
        }


class _GxRuntime:
    """The process's one GX context with a pandas data source and one dataframe asset per table."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context: AbstractDataContext = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.datasource = self.context.data_sources.add_pandas("assetmatch")
        self.batch_definitions: dict[str, Any] = {}
        self.lock = threading.Lock()

    def batch_definition(self, table: str) -> Any:
        if table not in self.batch_definitions:
            asset = self.datasource.add_dataframe_asset(table)
            self.batch_definitions[table] = asset.add_batch_definition_whole_dataframe(f"{table}-batch")
        return self.batch_definitions[table]


_runtime: _GxRuntime | None = None
_runtime_lock = threading.Lock()


def gx_runtime() -> _GxRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _GxRuntime()
        return _runtime


def suite_parameters(settings: Settings) -> dict[str, Any]:
    """Values for the suites' `$PARAMETER` placeholders, from settings.validation / businesses."""
    return {
        "max_text_length": settings.validation.max_text_length,
        "max_columns": settings.validation.max_columns,
        "businesses": settings.business_names(),
    }


def validate_batch(
    table: str,
    records: Sequence[RecordT],
    settings: Settings,
    rejected: Sequence[Rejected] = (),
) -> BatchValidation[RecordT]:
    """Run `table`'s suite (plus the Python checks) on `records`; never raises for bad rows.

    `rejected`: records the source already refused (unreadable lines, wrong shapes, malformed
    nodes). They join the bad rows as they were read, with the source's reason, so they are
    quarantined and count towards `validation.max_bad_fraction` like any refused row.
    """
    result: BatchValidation[RecordT] = BatchValidation(table=table)
    for item in rejected:
        result.bad.append(BadRecord(record=item.record, key=item.key, reasons=[item.reason]))
        key = item.reason.split(":")[0]
        result.python_failures[key] = result.python_failures.get(key, 0) + 1
    if not records:
        return result
    reasons: dict[int, list[str]] = {}

    # 1. Great Expectations on the flat frame
    params = suite_parameters(settings)
    suite = suites.load_suite(table, params)
    frame = frames.to_frame(table, records)
    runtime = gx_runtime()
    with runtime.lock:
        batch = runtime.batch_definition(table).get_batch(batch_parameters={"dataframe": frame})
        report = batch.validate(
            suite,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [frames.ROW_INDEX]},
            expectation_parameters=params,
        )
    for outcome in report.results:
        config = outcome.expectation_config
        kwargs = config.kwargs
        column = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
        reason = (config.meta or {}).get("reason") or config.type
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            raise SuiteError(
                f"expectation {config.type} on {table}.{column} failed to run: "
                f"{outcome.exception_info.get('exception_message')}"
            )
        unexpected = outcome.result.get("unexpected_index_list") or []
        for item in unexpected:
            index = int(item[frames.ROW_INDEX]) if isinstance(item, dict) else int(item)
            bucket = reasons.setdefault(index, [])
            if reason not in bucket:
                bucket.append(reason)
        result.outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=column,
                reason=reason,
                success=bool(outcome.success),
                unexpected_count=int(outcome.result.get("unexpected_count") or len(unexpected)),
            )
        )

    # 2. checks inside nested lists, which GX cannot express
    for index, record in enumerate(records):
        for problem in frames.python_problems(table, record):
            reasons.setdefault(index, []).append(problem)
            key = problem.split(":")[0]
            result.python_failures[key] = result.python_failures.get(key, 0) + 1

    # 3. split
    for index, record in enumerate(records):
        if index in reasons:
            result.bad.append(
                BadRecord(record=record, key=frames.record_key(table, record), reasons=reasons[index])
            )
        else:
            result.good.append(record)
    return result
