"""The text a cross-encoder reads for one (requirement, table) pair, fitted to a token budget.

A wide table (hundreds of columns) does not fit in 128 or 256 word pieces. Cutting the tail
would drop exactly the column a requirement asks about when it happens to be last, so the
document keeps the table name and comment, then the columns most relevant to the requirement
(cheap lexical overlap: words, word prefixes and Chinese character bigrams), in table order,
until the budget is used. Nothing here loads a model: the token counter is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from assetmatch.models import Column, TableAsset
from assetmatch.text import normalize_text

TokenCounter = Callable[[str], int]

_WORD = re.compile(r"[A-Za-z]+|\d+|[\u4e00-\u9fff]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "for",
        "to",
        "by",
        "with",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "many",
        "much",
        "show",
        "list",
        "give",
        "find",
        "all",
        "each",
        "every",
        "me",
        "their",
        "its",
        "from",
        "that",
        "this",
        "those",
        "these",
        "there",
        "do",
        "does",
        "did",
        "number",
        "count",
        "total",
        "per",
    ]
)


def approx_tokens(text: str) -> int:
    """Rough word-piece count when no tokenizer is at hand (about 1.3 pieces per word)."""
    return int(len(_WORD.findall(text)) * 1.3) + text.count(",") + 1


def terms(text: str) -> set[str]:
    """Lower-cased content words (snake/camel case split, 5-letter prefixes) and Chinese bigrams."""
    text = _CAMEL.sub(" ", normalize_text(text)).replace("_", " ")
    out: set[str] = set()
    for token in _WORD.findall(text):
        if "\u4e00" <= token[0] <= "\u9fff":
            out.update(token[i : i + 2] for i in range(max(1, len(token) - 1)))
            continue
        word = token.lower()
        if word in _STOP:
            continue
        out.add(word)
        if len(word) > 5:
            out.add(word[:5])  # a cheap stem: "payments" ~ "payment" ~ "paying"
    return out


def column_text(column: Column) -> str:
    comment = normalize_text(column.comment)
    name = normalize_text(column.name)
    return f"{name} ({comment})" if comment and comment.lower() != name.lower().replace("_", " ") else name


def header_text(asset: TableAsset) -> str:
    comment = normalize_text(asset.comment)
    name = normalize_text(asset.name)
    head = f"table {name}"
    if comment and comment.lower() != name.lower().replace("_", " "):
        head += f": {comment}"
    return head


def column_relevance(requirement_terms: set[str], column: Column) -> float:
    """Overlap of the requirement with a column's name and comment; primary keys get a small bonus."""
    overlap = len(requirement_terms & terms(f"{column.name} {column.comment}"))
    return overlap + (0.1 if column.primary_key else 0.0)


def document_budget(requirement: str, max_length: int, count_tokens: TokenCounter = approx_tokens) -> int:
    """Tokens left for the table's document next to `requirement` in a pair of `max_length` tokens:
    the pair is [CLS] requirement [SEP] document [SEP] (3 special tokens); at least 8."""
    return max(8, max_length - count_tokens(requirement) - 3)


EXAMPLE_SHARE = 0.5
"""At most this share of a document's budget goes to the past request shown beside the table."""

DATABASE_SHARE = 0.3
"""At most this share of a document's budget goes to the table's database and its other tables."""


@lru_cache(maxsize=65_536)
def _name_and_terms(name: str) -> tuple[str, frozenset[str]]:
    """A sibling table's shown name and its terms: the same names come back on every request."""
    shown = normalize_text(name)
    return shown, frozenset(terms(shown))


def database_context(
    requirement: str,
    asset: TableAsset,
    siblings: Sequence[str],
    budget_tokens: int,
    count_tokens: TokenCounter = approx_tokens,
) -> str:
    """Where the table lives, as `in DATABASE with: t1, t2, ...`, within `budget_tokens`.

    A cross-encoder that reads a table alone cannot tell two databases' `student` tables apart, and
    on Spider's union of 876 tables 93 % of the coarse ranking's wrong top tables were another
    database's (136 of 346 a namesake). Its database's name and other tables say whether the rest
    of the request fits there. Siblings the request names come first (ties keep library order), as
    many as the budget holds; '' when the table has neither a database name nor siblings."""
    database = normalize_text(asset.database)
    head = f"in {database}" if database else ""
    if not siblings:
        return head
    req_terms = terms(requirement)
    named = [_name_and_terms(n) for n in siblings]
    names = [name for name, _ in named]
    order = sorted(range(len(names)), key=lambda i: (-len(req_terms & named[i][1]), i))
    text = f"{head} with:".lstrip()
    room = budget_tokens - (count_tokens(", +999 more") if len(names) > 1 else 0)
    kept = 0
    for i in order:
        candidate = f"{text} {names[i]}" if not kept else f"{text}, {names[i]}"
        if count_tokens(candidate) > room:
            break
        text, kept = candidate, kept + 1
    if not kept:
        return head if count_tokens(head) <= budget_tokens else ""
    return text + (f", +{len(names) - kept} more" if kept < len(names) else "")


def clip_text(text: str, budget_tokens: int, count_tokens: TokenCounter = approx_tokens) -> str:
    """The longest prefix of `text` (cut at a character) within `budget_tokens` ('' when none fits)."""
    if count_tokens(text) <= budget_tokens:
        return text
    low, high = 0, len(text)  # binary search: the counter is monotone in the prefix length
    while low < high:
        mid = (low + high + 1) // 2
        if count_tokens(text[:mid]) <= budget_tokens:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip()


def table_prompt(
    requirement: str,
    asset: TableAsset,
    budget_tokens: int,
    count_tokens: TokenCounter = approx_tokens,
    example: str = "",
    siblings: Sequence[str] | None = None,
) -> str:
    """The table's document for this requirement, at most `budget_tokens` (as `count_tokens` counts).

    `siblings`, when given (the names of the other tables of its database; `()` for none), puts
    `database_context` right after the table name, within `DATABASE_SHARE` of the budget.

    `example`, when given, is the most similar past request that used the table (the usage
    history): it follows the name and comment, clipped to `EXAMPLE_SHARE` of the budget, so the
    ranker can compare the request with what the table answered before. Columns are chosen by
    relevance to the requirement (ties keep table order) and then written in table order; the
    number of columns left out is stated so the model can tell a wide table.
    """
    name = f"table {normalize_text(asset.name)}"
    comment = header_text(asset)[len(name) + 2 :]  # header_text is "table NAME" or "table NAME: COMMENT"
    header = name
    if siblings is not None:
        room = min(int(budget_tokens * DATABASE_SHARE), budget_tokens - count_tokens(name)) - 2
        context = database_context(requirement, asset, siblings, room, count_tokens)
        header += f" ({context})" if context else ""
    example = normalize_text(example)
    if example:  # after the name, before the comment: what a tight budget cuts is the comment's tail
        room = min(int(budget_tokens * EXAMPLE_SHARE), budget_tokens - count_tokens(header)) - 4
        clipped = clip_text(example, room, count_tokens)
        if clipped:
            header += f" | asked before: {clipped}" + (f" | {comment}" if comment else "")
            comment = ""
    header += f": {comment}" if comment else ""
    pieces = [column_text(c) for c in asset.columns]
    full = header + " | columns: " + ", ".join(pieces)
    if count_tokens(full) <= budget_tokens:
        return full
    req_terms = terms(requirement)
    order = sorted(
        range(len(asset.columns)), key=lambda i: (-column_relevance(req_terms, asset.columns[i]), i)
    )
    used = count_tokens(header) + 8  # "| columns:" and the "(+N more)" note
    kept: list[int] = []
    for i in order:
        cost = count_tokens(pieces[i]) + 1
        if used + cost > budget_tokens:
            if kept:
                break
            continue  # a single huge column comment: try the next one
        kept.append(i)
        used += cost
    kept.sort()
    text = header + " | columns: " + ", ".join(pieces[i] for i in kept)
    left_out = len(pieces) - len(kept)
    return text + (f" (+{left_out} more)" if left_out else "")


def tokenizer_counter(tokenizer: object, cache_size: int = 65_536) -> TokenCounter:
    """A cached token counter over a Hugging Face tokenizer (no special tokens)."""

    @lru_cache(maxsize=cache_size)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    return count
