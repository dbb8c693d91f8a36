"""Quarantine rows: a refused record as JSON with its reason and run id, secrets removed.

Records carry no connection strings, but free-form `properties` might (a source that copies a
table's options, a URL with credentials); those are redacted before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from assetmatch.quality.validate import BadRecord

REDACTED = "**********"
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")


def redact(value: Any) -> Any:
    """Copy of a JSON-like value with secret-looking keys blanked and URL passwords masked."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
    return value


def payload(record: BaseModel | Any) -> str:
    """The refused record as JSON: a model's dump, or what the source read (a dict, a line of text)."""
    value = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
    return json.dumps(redact(value), ensure_ascii=False, sort_keys=True, default=str)


def quarantine_rows(
    bad: Sequence[BadRecord[Any]], table: str, source: str, run_id: str, now: datetime
) -> list[dict[str, Any]]:
    """Rows for the `quarantine` lake table, one per refused record."""
    return [
        {
            "run_id": run_id,
            "source": source,
            "target_table": table,
            "record_key": b.key,
            "reason": b.reason,
            "payload": payload(b.record),
            "quarantined_at": now,
        }
        for b in bad
    ]
