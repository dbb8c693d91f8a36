"""Golden-file tests, one per source kind: a fixture in, the exact records and report out.

Each case runs a real source on a fixture under tests/fixtures/sources/ and compares everything it
yields (every field of every record, in order), its counts and the records it refused (with their
reasons) with `golden/<case>.json`. A change in what a source yields shows as a diff of that file.

After an intended change, regenerate and review:

    .venv/bin/pytest tests/unit/sources/test_golden.py --update-golden
    git diff tests/unit/sources/golden/
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from assetmatch.config import SourceSpec
from assetmatch.sources import registry

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
FIXTURES = HERE.parents[1] / "fixtures" / "sources"
DBT = FIXTURES / "dbt_versions"

CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # case: (source type, spec fields, options); "{fixtures}" / "{tmp}" are filled in
    "sql_sqlite": ("sql", {"business": "shop"}, {"url": "sqlite:///{tmp}/warehouse.db"}),
    "dbt_v3_snowflake": (
        "dbt",
        {"business": "shop"},
        {"manifest_path": f"{DBT}/v3/manifest.json", "catalog_path": f"{DBT}/v3/catalog.json"},
    ),
    "dbt_v8_sqlserver": (
        "dbt",
        {"business": "erp"},
        {"manifest_path": f"{DBT}/v8/manifest.json", "catalog_path": f"{DBT}/v8/catalog.json"},
    ),
    "dbt_v12_bigquery": (
        "dbt",
        {"business": "game"},
        {"manifest_path": f"{DBT}/v12/manifest.json", "catalog_path": f"{DBT}/v12/catalog.json"},
    ),
    "dbt_v12_no_catalog": ("dbt", {"business": "game"}, {"manifest_path": f"{DBT}/v12/manifest.json"}),
    "dbt_v12_jaffle_shop": (
        "dbt",
        {"business": "shop"},
        {
            "manifest_path": f"{FIXTURES}/dbt/manifest.json",
            "catalog_path": f"{FIXTURES}/dbt/catalog.json",
        },
    ),
    "catalog_file_jsonl": ("catalog_file", {}, {"path": f"{FIXTURES}/catalog/tables.jsonl"}),
    "catalog_file_csv": ("catalog_file", {}, {"path": f"{FIXTURES}/catalog/tables.csv"}),
    "catalog_file_yaml": ("catalog_file", {}, {"path": f"{FIXTURES}/catalog/tables.yaml"}),
    "catalog_file_defects": ("catalog_file", {}, {"path": f"{FIXTURES}/catalog/defects.jsonl"}),
    "query_log_csv": (
        "query_log",
        {"business": "game1"},
        {"path": f"{FIXTURES}/query_log/log.csv", "database": "dw"},
    ),
    "query_log_jsonl": (
        "query_log",
        {"business": "game1"},
        {"path": f"{FIXTURES}/query_log/log.jsonl", "database": "dw"},
    ),
    "requirements_yaml": ("requirements", {}, {"path": f"{FIXTURES}/requirements/reqs.yaml"}),
    "requirements_csv": ("requirements", {}, {"path": f"{FIXTURES}/requirements/reqs.csv"}),
    "glossary_yaml": ("glossary", {}, {"path": f"{FIXTURES}/glossary/terms.yaml"}),
    "glossary_jsonl": ("glossary", {}, {"path": f"{FIXTURES}/glossary/terms.jsonl"}),
}


def _portable(value: Any, replacements: dict[str, str]) -> Any:
    """The value with this checkout's and this run's paths replaced by placeholders."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    for path, placeholder in replacements.items():
        text = text.replace(path, placeholder)
    return json.loads(text)


def run_case(case: str, tmp: Path) -> dict[str, Any]:
    kind, fields, options = CASES[case]
    if kind == "sql":
        with sqlite3.connect(tmp / "warehouse.db") as conn:
            conn.executescript((FIXTURES / "sql" / "warehouse.sql").read_text(encoding="utf-8"))
    options = {k: v.replace("{tmp}", str(tmp)) if isinstance(v, str) else v for k, v in options.items()}
    source = registry.create(SourceSpec(name=case, type=kind, options=options, **fields))
    try:
        records = {
            "assets": [a.model_dump(mode="json") for a in source.iter_assets()],
            "query_log": [q.model_dump(mode="json") for q in source.iter_query_log()],
            "requirements": [r.model_dump(mode="json") for r in source.iter_requirements()],
            "glossary": [g.model_dump(mode="json") for g in source.iter_glossary()],
        }
    finally:
        source.close()
    out = {
        "source": {"type": kind, **fields, "options": options},
        "records": {k: v for k, v in records.items() if v},
        "report": {
            "counts": dict(sorted(source.report.counts.items())),
            "rejected": [
                {"table": r.table, "key": r.key, "reason": r.reason, "record": r.record}
                for r in source.report.rejected
            ],
            "warnings": source.report.warnings,
            "failures": source.report.failures,
        },
    }
    return _portable(out, {str(tmp): "<tmp>", str(FIXTURES): "<fixtures>"})


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, tmp_path: Path, update_golden: bool) -> None:
    actual = run_case(case, tmp_path)
    path = GOLDEN / f"{case}.json"
    if update_golden:
        path.write_text(
            json.dumps(actual, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
    assert path.is_file(), f"no golden file {path.name}: run pytest {Path(__file__).name} --update-golden"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert actual == expected, (
        f"{case}: output differs from golden/{path.name} (see the docstring to regenerate)"
    )


def test_every_source_kind_has_a_golden_case() -> None:
    assert {kind for kind, _, _ in CASES.values()} >= set(registry.available())
