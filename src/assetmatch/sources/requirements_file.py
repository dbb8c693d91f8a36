"""`requirements` source: labelled requirements (text + the tables that answer it).

The benchmark format (`../shared/benchmarks/*/requirements.jsonl.gz`) is one JSON object per line:
`id, business, text, gold_assets, split, sql`, and optionally `databases` (the scope the request
was asked in, `Requirement.databases`: fitting, training and the gate ask it there again); extra keys
(`aligned_id`, `unresolved_tables`, ...) are ignored. The same fields work in YAML (a list, or
`{requirements: [...]}`) and CSV (one row per requirement; `gold_assets` and `databases` as `a;b` or
a JSON list).
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field, ValidationError

from assetmatch.models import Requirement
from assetmatch.sources._files import BadRecords, FileSourceConfig, as_list, as_text, iter_records
from assetmatch.sources.base import Source
from assetmatch.sources.query_log import parse_time


class RequirementsFileConfig(FileSourceConfig):
    splits: list[str] | None = Field(
        default=None, description="Load only these splits (e.g. [train]); default: every split."
    )
    default_split: str = Field(default="train", description="Split of records that do not name one.")


class RequirementsFileSource(Source[RequirementsFileConfig]):
    """Requirements from JSON Lines / JSON / YAML / CSV files (benchmark format)."""

    config_class = RequirementsFileConfig

    def iter_requirements(self) -> Iterator[Requirement]:
        bad = BadRecords(self.report, "requirements")
        wanted = set(self.config.splits) if self.config.splits is not None else None
        for location, _fmt, record in iter_records(
            self.config, self.report, table="requirements", list_key="requirements"
        ):
            split = as_text(record.get("split")) or self.config.default_split
            if wanted is not None and split not in wanted:
                self.report.count("skipped_split")
                continue
            try:
                ts = record.get("ts")
                requirement = Requirement(
                    id=as_text(record.get("id")),
                    business=self.resolve_business(explicit=as_text(record.get("business")) or None) or "",
                    text=as_text(record.get("text")),
                    gold_assets=as_list(record.get("gold_assets")),
                    split=split,
                    ts=parse_time(ts) if ts not in (None, "") else None,
                    sql=as_text(record.get("sql")) or None,
                    source=self.name,
                    databases=as_list(record.get("databases")) or None,
                )
            except ValidationError as exc:
                bad(
                    location,
                    "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
                    record,
                )
                continue
            except (ValueError, TypeError) as exc:
                bad(location, str(exc), record)
                continue
            if not requirement.id or not requirement.text:
                bad(location, "`id` and `text` are required", record)
                continue
            self.report.count(f"requirements_{split}")
            self.report.count("requirements")
            yield requirement
