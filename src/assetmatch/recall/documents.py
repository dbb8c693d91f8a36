"""What a table looks like to the recall paths: one text for the dense encoder, tokens for BM25.

Both read only the asset's own metadata (name, comment, columns, keys), so a document changes exactly
when the asset's content hash changes: that is what lets a rebuild re-embed only changed assets.
"""

from __future__ import annotations

from assetmatch.models import Column, TableAsset
from assetmatch.recall.tokenize import split_identifier, tokenize
from assetmatch.text import normalize_text

# Bump when table_document(), lexical_tokens() or the tokenizer change: cached vectors and tokens of
# older documents are then not reused.
DOCUMENT_VERSION = 1


def _words(name: str) -> str:
    return " ".join(split_identifier(name)) or normalize_text(name)


def _column_text(column: Column) -> str:
    """Natural-language name of a column: its comment when it has one, else its identifier's words."""
    comment = normalize_text(column.comment)
    words = _words(column.name)
    if not comment:
        return words
    return comment if comment.lower() == words or words in comment.lower() else f"{words} ({comment})"


def table_document(asset: TableAsset) -> str:
    """One sentence-like text per table for the dense path.

    `table <name words> (<comment>): <column>, <column>, ...; keys: <referenced tables>`. Columns use
    their comment when they have one (it is usually the natural-language name), else the identifier's
    words. The encoder truncates long tables (MiniLM: 256 word pieces), so the name and comment come first.
    """
    name = _words(asset.name)
    comment = normalize_text(asset.comment)
    head = f"table {name}" if not comment or comment.lower() == name else f"table {name} ({comment})"
    columns = ", ".join(_column_text(c) for c in asset.columns)
    text = f"{head}: {columns}" if columns else head
    refs = sorted({_words(fk.ref_asset_id.rsplit(".", 1)[-1]) for fk in asset.foreign_keys})
    if refs:
        text += "; references " + ", ".join(refs)
    return text


def lexical_tokens(asset: TableAsset) -> list[str]:
    """BM25 tokens of a table: its name, each column's name, and the comments that say something else.

    A comment whose tokens equal its identifier's ("people id" on `People_ID`) is left out, so a column
    does not weigh twice just because it is documented.
    """
    tokens: list[str] = []
    for name, comment in [(asset.name, asset.comment)] + [(c.name, c.comment) for c in asset.columns]:
        own = tokenize(name)
        tokens.extend(own)
        extra = tokenize(comment) if comment else []
        if extra and sorted(extra) != sorted(own):
            tokens.extend(extra)
    return tokens
