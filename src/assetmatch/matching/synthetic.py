"""Requirements synthesized from the library's own metadata, for a warehouse with no (or few) labels.

On a user's first day nothing is labelled, yet the coarse model and set selection need examples of
"this request needs these tables". This module writes them from what ingestion already stored — no
label of any dataset is read:

- **single tables** (`from_tables`): analyst-style requests built from a table's name/comment and its
  column names/comments ("What are the name and age of all singer?", "按国家统计歌手的数量");
- **foreign-key pairs** (`from_foreign_keys`): requests that need a table and the one it references
  ("Show the name of each concert and the capacity of its stadium"), gold = both tables;
- **bridge paths** (`from_bridges`): two tables joined only through a link table (A <- C -> B), gold = all
  three, the many-to-many shape a Text2SQL join cannot do without;
- **co-usage** (`from_query_log`): tables read together by one logged query, gold = those tables (the
  query's SQL text and any logged request text are never used: that would be a label);
- **glossary** (`from_glossary`): a business term or synonym, gold = the term's tables.

Everything is deterministic for a seed, in English and Chinese (Chinese templates keep the metadata's
own words, as a Chinese analyst writing over an English schema does). Synthetic requirements carry
`split="synthetic"` and `source="synthetic:<kind>"`: `split` keeps them out of every evaluation split.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from assetmatch.models import GlossaryTerm, QueryLogEntry, Requirement, TableAsset
from assetmatch.recall.tokenize import has_cjk

SPLIT = "synthetic"
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# {t}: table label, {c}/{c2}: column labels of it; the multi-table ones use {a}/{ac} and {b}/{bc}.
EN_ONE = [
    "How many {t} are there?",
    "What are the {c} and {c2} of all {t}?",
    "List the {c} of each {t} ordered by {c2}.",
    "Which {t} has the highest {c}?",
    "What is the average {c} of {t}?",
    "Show the {c} of {t} whose {c2} is given.",
    "Count the {t} for each {c}.",
    "Find the {c} of the {t} with the smallest {c2}.",
    "What are the distinct {c} of the {t}?",
    "List the {c} and {c2}.",
]
ZH_ONE = [
    "{t}一共有多少个？",
    "列出所有{t}的{c}和{c2}。",
    "按{c2}排序显示每个{t}的{c}。",
    "{c}最高的{t}是哪个？",
    "{t}的平均{c}是多少？",
    "按{c}统计{t}的数量。",
]
EN_FK = [
    "Show the {ac} of each {a} and the {bc} of its {b}.",
    "What are the {bc} of the {b} that have at least one {a}?",
    "How many {a} does each {b} have? List the {b} {bc}.",
    "Find the {ac} of {a} whose {b} {bc} is given.",
    "List the {bc} of the {b} with the most {a}.",
    "Which {b} have no {a}? Show their {bc}.",
    "For each {bc}, what is the average {ac} of the {a}?",
]
ZH_FK = [
    "显示每个{a}的{ac}以及对应{b}的{bc}。",
    "每个{b}有多少个{a}？列出{b}的{bc}。",
    "{a}最多的{b}的{bc}是什么？",
    "查询{b}的{bc}为指定值的{a}的{ac}。",
]
EN_BRIDGE = [
    "Which {b} {bc} are related to the {a} with a given {ac}?",
    "Show the {ac} of each {a} together with the {bc} of the {b} it is linked to.",
    "How many {b} does each {a} have? List the {a} {ac}.",
]
ZH_BRIDGE = ["查询每个{a}的{ac}以及与之关联的{b}的{bc}。", "每个{a}关联了多少个{b}？"]
EN_TOGETHER = ["Show the {ac} of {a} with the {bc} of {b}.", "Compare {a} {ac} against {b} {bc}."]
ZH_TOGETHER = ["查询{a}的{ac}和{b}的{bc}。"]
EN_TERM = ["Which data tells me the {term}?", "Show the {term} for last month.", "Report {term} by day."]
ZH_TERM = ["查询最近一个月的{term}", "按天统计{term}", "{term}是多少"]


@dataclass(frozen=True)
class SynthesisOptions:
    """How many requirements of each kind (caps keep a 10^5-table library's synthesis bounded)."""

    per_table: int = 2
    per_fk: int = 1
    per_bridge: int = 1
    per_co_usage: int = 1
    zh_share: float = 0.25  # share of requests written with the Chinese templates
    max_total: int = 6000
    seed: int = 0


def label(name: str, comment: str = "") -> str:
    """How an analyst would say a table or column: its short comment, else its name split into words."""
    text = comment.strip()
    if text and len(text) <= 40:
        return text
    words = _CAMEL.sub(" ", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


def _is_key_like(column_label: str) -> bool:
    last = column_label.lower().split()[-1:] or [""]
    return last[0] in {"id", "ids", "key", "code"} or column_label.lower().endswith("_id")


def _columns(asset: TableAsset) -> list[str]:
    """Column labels worth asking about: non-key columns first (a request rarely asks for an id)."""
    labels = [label(c.name, c.comment) for c in asset.columns]
    plain = [c for c in labels if c and not _is_key_like(c)]
    return plain or [c for c in labels if c] or ["records"]


def _rid(kind: str, *parts: str) -> str:
    return f"syn:{kind}:" + hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16]


class _Writer:
    """Fills templates; one random stream per synthesis so the output is a function of the seed."""

    def __init__(self, options: SynthesisOptions) -> None:
        self.options = options
        self.rng = random.Random(options.seed)

    def pick(self, en: Sequence[str], zh: Sequence[str], *labels: str) -> str:
        chinese = any(has_cjk(x) for x in labels) or self.rng.random() < self.options.zh_share
        return self.rng.choice(zh if chinese else en)

    def two(self, asset: TableAsset) -> tuple[str, str]:
        cols = _columns(asset)
        if len(cols) == 1:
            return cols[0], cols[0]
        first, second = self.rng.sample(cols, 2)
        return first, second

    def requirement(self, kind: str, business: str, text: str, gold: Iterable[str]) -> Requirement:
        ids = sorted(set(gold))
        return Requirement(
            id=_rid(kind, business, text, *ids),
            business=business,
            text=text,
            gold_assets=ids,
            split=SPLIT,
            source=f"synthetic:{kind}",
        )


def from_tables(assets: Sequence[TableAsset], writer: _Writer) -> list[Requirement]:
    out = []
    for asset in assets:
        t = label(asset.name, asset.comment)
        for _ in range(writer.options.per_table):
            c, c2 = writer.two(asset)
            template = writer.pick(EN_ONE, ZH_ONE, t, c)
            out.append(
                writer.requirement(
                    "table", asset.business, template.format(t=t, c=c, c2=c2), [asset.asset_id]
                )
            )
    return out


def fk_edges(assets: Mapping[str, TableAsset]) -> list[tuple[str, str]]:
    """(referencing, referenced) asset id pairs whose both ends are in the library, sorted."""
    edges = {
        (a.asset_id, fk.ref_asset_id)
        for a in assets.values()
        for fk in a.foreign_keys
        if fk.ref_asset_id in assets and fk.ref_asset_id != a.asset_id
    }
    return sorted(edges)


def _pair_text(writer: _Writer, en: Sequence[str], zh: Sequence[str], a: TableAsset, b: TableAsset) -> str:
    la, lb = label(a.name, a.comment), label(b.name, b.comment)
    ac, bc = writer.rng.choice(_columns(a)), writer.rng.choice(_columns(b))
    return writer.pick(en, zh, la, lb).format(a=la, ac=ac, b=lb, bc=bc)


def from_foreign_keys(assets: Mapping[str, TableAsset], writer: _Writer) -> list[Requirement]:
    out = []
    for child, parent in fk_edges(assets):
        a, b = assets[child], assets[parent]
        for _ in range(writer.options.per_fk):
            text = _pair_text(writer, EN_FK, ZH_FK, a, b)
            out.append(writer.requirement("fk", a.business, text, [child, parent]))
    return out


def from_bridges(assets: Mapping[str, TableAsset], writer: _Writer) -> list[Requirement]:
    """A link table referencing two others: a request about the two ends needs all three."""
    referenced: dict[str, set[str]] = defaultdict(set)
    for child, parent in fk_edges(assets):
        referenced[child].add(parent)
    out = []
    for link in sorted(referenced):
        for left, right in itertools.combinations(sorted(referenced[link]), 2):
            a, b = assets[left], assets[right]
            for _ in range(writer.options.per_bridge):
                text = _pair_text(writer, EN_BRIDGE, ZH_BRIDGE, a, b)
                out.append(writer.requirement("bridge", assets[link].business, text, [left, link, right]))
    return out


def from_query_log(
    entries: Sequence[QueryLogEntry], assets: Mapping[str, TableAsset], writer: _Writer
) -> list[Requirement]:
    """One request per distinct set of 2-4 known tables read together (its tables, never its SQL text)."""
    sets = sorted({tuple(sorted({t for t in e.tables if t in assets})) for e in entries})
    out = []
    for tables in sets:
        if not 2 <= len(tables) <= 4:
            continue
        first, second = assets[tables[0]], assets[tables[1]]
        for _ in range(writer.options.per_co_usage):
            text = _pair_text(writer, EN_TOGETHER, ZH_TOGETHER, first, second)
            out.append(writer.requirement("co-usage", first.business, text, tables))
    return out


def from_glossary(
    terms: Sequence[GlossaryTerm], assets: Mapping[str, TableAsset], writer: _Writer
) -> list[Requirement]:
    out = []
    for term in sorted(terms, key=lambda t: (t.business, t.term)):
        gold = [a for a in term.assets if a in assets]
        if not gold:
            continue
        for word in [term.term, *term.synonyms]:
            text = writer.pick(EN_TERM, ZH_TERM, word).format(term=word)
            out.append(writer.requirement("glossary", term.business, text, gold))
    return out


def synthesize_requirements(
    assets: Mapping[str, TableAsset],
    glossary: Sequence[GlossaryTerm] = (),
    query_log: Sequence[QueryLogEntry] = (),
    options: SynthesisOptions | None = None,
) -> list[Requirement]:
    """Every kind of synthetic requirement over `assets`, de-duplicated, at most `options.max_total`
    (sampled with the seed, keeping the kinds' proportions)."""
    options = options or SynthesisOptions()
    writer = _Writer(options)
    ordered = [assets[k] for k in sorted(assets)]
    produced = (
        from_tables(ordered, writer)
        + from_foreign_keys(assets, writer)
        + from_bridges(assets, writer)
        + from_query_log(query_log, assets, writer)
        + from_glossary(glossary, assets, writer)
    )
    unique = list({r.id: r for r in produced}.values())
    if len(unique) > options.max_total:
        unique = random.Random(options.seed).sample(unique, options.max_total)
    return unique


def is_synthetic(requirement: Requirement) -> bool:
    return requirement.split == SPLIT
