"""`glossary` source: business terms, their synonyms (any language) and the tables they point to.

YAML, either a list of terms or a mapping `business -> list of terms`:

    game1:
      - term: 付费用户
        synonyms: [paying users, 付费玩家]
        description: Users with at least one successful payment.
        assets: [game1.dw.dws.pay_user_daily]

JSON Lines (one term per line, with `business`) and CSV (`synonyms`/`assets` as `a;b`) work too.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import ValidationError

from assetmatch.models import GlossaryTerm
from assetmatch.sources._files import BadRecords, FileSourceConfig, as_list, as_text, first, iter_records
from assetmatch.sources.base import Source


class GlossaryFileConfig(FileSourceConfig):
    """Only `path` and `format`: the business comes from each term, else the source's `business`."""


class GlossaryFileSource(Source[GlossaryFileConfig]):
    """Glossary terms from YAML / JSON Lines / JSON / CSV files."""

    config_class = GlossaryFileConfig

    def iter_glossary(self) -> Iterator[GlossaryTerm]:
        bad = BadRecords(self.report, "glossary")
        for location, _fmt, record in iter_records(
            self.config, self.report, table="glossary", list_key="terms", group_key="business"
        ):
            try:
                term = GlossaryTerm(
                    business=self.resolve_business(explicit=as_text(record.get("business")) or None) or "",
                    term=as_text(first(record, "term", "name")),
                    synonyms=as_list(first(record, "synonyms", "aliases")),
                    description=as_text(first(record, "description", "definition", default="")),
                    assets=as_list(first(record, "assets", "tables")),
                    source=self.name,
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
            if not term.term:
                bad(location, "no `term`", record)
                continue
            self.report.count("terms")
            yield term
