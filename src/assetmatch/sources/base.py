"""The source contract: a plugin turns one external system into assetmatch records.

A source is one file plus one entry point (group `assetmatch.sources`):

    class MySourceConfig(SourceConfig):
        path: str = Field(description="...")

    class MySource(Source[MySourceConfig]):
        config_class = MySourceConfig
        def iter_assets(self) -> Iterator[TableAsset]: ...

`Source.create(spec)` validates `spec.options` with the plugin's `config_class`; the iterators
yield records and count into `self.report`. A source may yield any mix of assets, query-log
entries, requirements and glossary terms; the defaults yield nothing.
"""

from __future__ import annotations

import re
from abc import ABC
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from assetmatch.config import ConfigError, SourceSpec
from assetmatch.models import GlossaryTerm, QueryLogEntry, Requirement, TableAsset


class SourceConfig(BaseModel):
    """Base for plugin option models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Rejected:
    """A record the source could not turn into a model: it goes to the `quarantine` table as it was read."""

    table: str  # the lake table it was meant for (assets, query_log, requirements, glossary)
    key: str  # what identifies it: the record's id when known, else its location ("file:line")
    reason: str
    record: Any  # the raw record (a dict, or the line's text), kept so nothing is lost


@dataclass
class SourceReport:
    """What a source did: counters, warnings, failures and rejected records. Logged by the flow and returned."""

    source: str
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def reject(self, table: str, key: str, reason: str, record: Any) -> None:
        """Refuse a record with a reason; the ingest pipeline quarantines it (`rejected_for`)."""
        self.rejected.append(Rejected(table=table, key=key, reason=reason, record=record))

    def rejected_for(self, table: str) -> list[Rejected]:
        return [r for r in self.rejected if r.table == table]

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "counts": self.counts,
            "warnings": self.warnings,
            "failures": self.failures,
            "rejected": len(self.rejected),
        }


C = TypeVar("C", bound=SourceConfig)


class Source(ABC, Generic[C]):
    """Base class of every source plugin."""

    config_class: ClassVar[type[SourceConfig]] = SourceConfig

    def __init__(self, spec: SourceSpec, config: C) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = config
        self.report = SourceReport(source=spec.name)
        self._business_patterns = [(re.compile(p), b) for p, b in spec.business_map.items()]

    @classmethod
    def create(cls, spec: SourceSpec) -> Source[Any]:
        try:
            config = cls.config_class.model_validate(spec.options)
        except ValidationError as exc:
            problems = "; ".join(
                f"sources.{spec.name}.options.{'.'.join(str(p) for p in e['loc'])}: "
                + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors()
            )
            raise ConfigError(problems) from None
        return cls(spec, config)  # type: ignore[arg-type]

    def resolve_business(
        self, database: str = "", schema: str = "", explicit: str | None = None
    ) -> str | None:
        """Business of a record: explicit value, else the first business_map regex matching
        `database.schema`, else the source's `business`. None when nothing applies."""
        if explicit:
            return explicit
        qualified = ".".join(p for p in (database, schema) if p)
        for pattern, business in self._business_patterns:
            if pattern.search(qualified):
                return business
        return self.spec.business

    def iter_assets(self) -> Iterator[TableAsset]:
        return iter(())

    def iter_query_log(self) -> Iterator[QueryLogEntry]:
        return iter(())

    def iter_requirements(self) -> Iterator[Requirement]:
        return iter(())

    def iter_glossary(self) -> Iterator[GlossaryTerm]:
        return iter(())

    def close(self) -> None:
        """Release connections; called by the ingest pipeline when the source is done."""
