"""Synthetic requirements for a business, so a new or sparsely labelled business can train.

Three generators, all deterministic with a seed:

- `from_comments`: templated requests built from a table's comment and its column comments,
  in English and Chinese (the language of the comment decides which templates fit);
- `from_glossary`: requests that use a glossary term or one of its synonyms, labelled with the
  term's tables;
- `LlmClient` (optional, off by default): asks an OpenAI-compatible chat endpoint to write
  requests for a table. It uses httpx with tenacity retries; tests never call it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence

from assetmatch.config import Settings
from assetmatch.matching.synthetic import EN_TERM, ZH_TERM
from assetmatch.models import GlossaryTerm, TableAsset
from assetmatch.recall.tokenize import has_cjk
from assetmatch.training.pairs import LabelledRequirement

EN_TABLE = [
    "Show all {table}.",
    "List every {table} record.",
    "How many {table} are there?",
]
EN_COLUMN = [
    "Show the {col} of each {table}.",
    "What is the {col} of every {table}?",
    "List {table} ordered by {col}.",
    "Find the {table} with the highest {col}.",
    "Count {table} grouped by {col}.",
]
EN_TWO = [
    "Show the {col} and {col2} of each {table}.",
    "Which {table} has {col} above average, with its {col2}?",
]
ZH_TABLE = ["查询所有{table}", "列出全部{table}记录", "{table}一共有多少条"]
ZH_COLUMN = [
    "查看每个{table}的{col}",
    "按{col}统计{table}的数量",
    "{col}最高的{table}是哪个",
    "按{col}排序列出{table}",
]
ZH_TWO = ["查询{table}的{col}和{col2}"]


def _label(text: str, fallback: str) -> str:
    text = text.strip() or fallback
    return re.sub(r"[_]+", " ", text).strip()


def _rid(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16]


def from_comments(assets: Sequence[TableAsset], per_table: int, seed: int) -> list[LabelledRequirement]:
    """`per_table` templated requirements per table, each labelled with that one table."""
    rng = random.Random(seed)
    out: list[LabelledRequirement] = []
    for asset in sorted(assets, key=lambda a: a.asset_id):
        table = _label(asset.comment, asset.name)
        zh = has_cjk(table)
        cols = [_label(c.comment, c.name) for c in asset.columns if not c.primary_key] or [
            _label(c.comment, c.name) for c in asset.columns
        ]
        for n in range(per_table):
            if not cols or (n == 0 and rng.random() < 0.2):
                text = rng.choice(ZH_TABLE if zh else EN_TABLE).format(table=table)
            elif len(cols) > 1 and rng.random() < 0.3:
                col, col2 = rng.sample(cols, 2)
                text = rng.choice(ZH_TWO if zh else EN_TWO).format(table=table, col=col, col2=col2)
            else:
                col = rng.choice(cols)
                templates = ZH_COLUMN if zh or has_cjk(col) else EN_COLUMN
                text = rng.choice(templates).format(table=table, col=col)
            out.append(
                LabelledRequirement(
                    _rid("syn:", asset.asset_id, str(n), text),
                    asset.business,
                    text,
                    (asset.asset_id,),
                    "synthetic",
                )
            )
    return out


def from_glossary(
    terms: Sequence[GlossaryTerm], known_assets: set[str], seed: int
) -> list[LabelledRequirement]:
    """One requirement per glossary term and synonym that points at known tables."""
    rng = random.Random(seed)
    out: list[LabelledRequirement] = []
    for term in sorted(terms, key=lambda t: t.term):
        gold = tuple(a for a in term.assets if a in known_assets)
        if not gold:
            continue
        for word in [term.term, *term.synonyms]:
            text = rng.choice(ZH_TERM if has_cjk(word) else EN_TERM).format(term=word)
            out.append(
                LabelledRequirement(
                    _rid("gloss:", term.business, word), term.business, text, gold, "synthetic"
                )
            )
    return out


class LlmClient:
    """Minimal client of an OpenAI-compatible `/chat/completions` endpoint (settings.training.llm)."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmClient:
        llm = settings.training.llm
        key = llm.api_key.get_secret_value() if llm.api_key else None
        return cls(llm.base_url, llm.model, key, llm.timeout_s)

    def close(self) -> None:
        self._http.close()

    def _chat(self, prompt: str) -> str:
        from tenacity import retry, stop_after_attempt, wait_exponential

        @retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=4), reraise=True)
        def call() -> str:
            response = self._http.post(
                "/chat/completions",
                json={
                    "model": self.model,
                    "messages": [{"role": "user", "content": prompt}],
                    "temperature": 0.7,
                },
            )
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])

        return call()

    def requirements_for(self, asset: TableAsset, n: int) -> list[LabelledRequirement]:
        """Ask for `n` analyst requests this table answers; one per line of the reply."""
        columns = ", ".join(f"{c.name} ({c.comment})" if c.comment else c.name for c in asset.columns[:60])
        prompt = (
            f"Table {asset.name}: {asset.comment}\nColumns: {columns}\n"
            f"Write {n} short, different data requests an analyst could answer with this table. "
            "Use the language of the comments. One request per line, no numbering."
        )
        lines = [re.sub(r"^\s*[-*\d.)]+\s*", "", line).strip() for line in self._chat(prompt).splitlines()]
        texts = [line for line in lines if line][:n]
        return [
            LabelledRequirement(
                _rid("llm:", asset.asset_id, t), asset.business, t, (asset.asset_id,), "synthetic"
            )
            for t in texts
        ]


def synthesize(
    assets: Sequence[TableAsset],
    glossary: Sequence[GlossaryTerm],
    per_table: int,
    seed: int,
    llm: LlmClient | None = None,
    llm_per_table: int = 0,
) -> list[LabelledRequirement]:
    """All synthetic requirements of a business: templates + glossary (+ LLM when a client is given)."""
    known = {a.asset_id for a in assets}
    out = from_comments(assets, per_table, seed) + from_glossary(glossary, known, seed)
    if llm is not None and llm_per_table > 0:
        for asset in assets:
            out.extend(llm.requirements_for(asset, llm_per_table))
    return out


def describe(items: Sequence[LabelledRequirement]) -> str:
    """A short JSON summary (for logs and MLflow)."""
    return json.dumps({"count": len(items), "examples": [i.text for i in items[:5]]}, ensure_ascii=False)
