"""Text normalization shared by ingestion (before hashing) and matching (before tokenizing)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACE = re.compile(r"\s+")


def normalize_text(value: str | None) -> str:
    """NFKC (full-width forms to half-width), drop control characters, collapse whitespace."""
    if not value:
        return ""
    # Fast path: printable ASCII without doubled or edge spaces is already normal (NFKC leaves ASCII
    # alone). Catalogs are mostly such names; this skips the regex passes on 100k+ columns.
    if value.isascii() and value.isprintable() and "  " not in value and value.strip() == value:
        return value
    value = unicodedata.normalize("NFKC", value)
    value = _CONTROL.sub("", value)
    return _SPACE.sub(" ", value).strip()


def same_request_key(value: str | None) -> str:
    """The key under which two requirement texts are the same request: they differ at most in case and
    spacing. Copies of one request stay on one side of a holdout split, are deduplicated, and are left
    out of the usage vote when that request is fitted on or judged. A paraphrase is the same request
    only where both name the query that answered them (`same_query_key`)."""
    return " ".join((value or "").lower().split())


def same_query_key(sql: str | None, tables: Iterable[str]) -> str:
    """The key under which requests are one request in other words: answered by the same query (SQL,
    case and spacing aside) over the same tables; "" when the SQL is unknown. Spider writes two or
    more questions per query, and its held-out questions never share a query with a training one:
    paraphrases stay on one side of a holdout split (`training.pairs.split_holdout`, whose hash reads
    this key, so its form is fixed), share a cross-validation group, and none votes for another in the
    usage path while it is fitted on or judged, or the fit learns from twins a new request never has.
    The tables count: a union of databases holds the same SQL text over another database's namesake
    tables, and that is another request."""
    query = same_request_key(sql)
    return f"query:{sorted(tables)}:{query}" if query else ""


def has_broken_encoding(value: str | None) -> bool:
    """True for text that went through a wrong decode: U+FFFD, or classic UTF-8-as-Latin-1 mojibake."""
    if not value:
        return False
    if "\ufffd" in value:
        return True
    return bool(re.search(r"[ÃÂâ][\x80-\xbf€™œ¢£¤¥¦§¨©ª«¬®¯°±²³´µ¶·¸¹º»¼½¾¿]", value))
