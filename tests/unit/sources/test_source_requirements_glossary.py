"""requirements and glossary file sources: benchmark files, YAML / CSV / JSONL fixtures, bad records."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from assetmatch.config import SourceSpec
from assetmatch.sources.glossary_file import GlossaryFileSource
from assetmatch.sources.requirements_file import RequirementsFileSource

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"


def requirements(path: Path, business: str | None = None, **options: object) -> RequirementsFileSource:
    spec = SourceSpec(
        name="reqs", type="requirements", business=business, options={"path": str(path), **options}
    )
    source = RequirementsFileSource.create(spec)
    assert isinstance(source, RequirementsFileSource)
    return source


def test_spider_requirements_counts_by_split(shared_benchmarks: Path) -> None:
    source = requirements(shared_benchmarks / "spider" / "requirements.jsonl.gz")
    reqs = list(source.iter_requirements())
    # ../shared/benchmarks/spider/README.md: train 5,573 / test 1,427 / dev 1,034
    assert Counter(r.split for r in reqs) == {"train": 5573, "test": 1427, "dev": 1034}
    assert source.report.counts.get("bad_records", 0) == 0
    first = reqs[0]
    assert first.id == "spider.train_spider.0"
    assert (first.business, first.gold_assets) == ("department_management", ["department_management.head"])
    assert first.sql and first.sql.startswith("SELECT count(*) FROM head")
    multi = [r for r in reqs if r.split == "dev" and len(r.gold_assets) > 1]
    assert len(multi) == 459


def test_splits_option_and_extra_keys_ignored(shared_benchmarks: Path) -> None:
    source = requirements(shared_benchmarks / "cspider" / "requirements.jsonl.gz", splits=["dev"])
    reqs = list(source.iter_requirements())
    assert len(reqs) == 1034  # cspider lines carry an extra `aligned_id`, ignored
    assert reqs[0].text == "我们有多少歌手？"
    train_only = requirements(shared_benchmarks / "spider" / "requirements.jsonl.gz", splits=["train"])
    assert sum(1 for _ in train_only.iter_requirements()) == 5573
    assert train_only.report.counts["skipped_split"] == 1427 + 1034


def test_yaml_and_csv_requirements() -> None:
    yaml_source = requirements(FIXTURES / "requirements" / "reqs.yaml", business="game9")
    r1, r2 = yaml_source.iter_requirements()
    assert (r1.id, r1.business, r1.text, r1.split) == ("r1", "game1", "每日付费用户数", "train")
    assert r1.ts == datetime(2026, 10, 1, tzinfo=UTC)
    assert (r2.business, r2.split, r2.gold_assets) == ("game9", "test", ["game1.dw.dws.dim_user"])
    assert yaml_source.report.counts["bad_records"] == 1  # r3 has no text
    assert any("reqs.yaml:12" in w for w in yaml_source.report.warnings)

    csv_reqs = list(requirements(FIXTURES / "requirements" / "reqs.csv").iter_requirements())
    assert [r.gold_assets for r in csv_reqs] == [
        ["game1.dw.dws.pay_user_daily", "game1.dw.dws.dim_user"],
        ["game1.dw.dws.login_log"],
        [],
    ]
    assert csv_reqs[0].sql == "SELECT 1" and csv_reqs[1].sql is None


def test_glossary_yaml_mapping_business_to_terms() -> None:
    spec = SourceSpec(name="g", type="glossary", options={"path": str(FIXTURES / "glossary" / "terms.yaml")})
    source = GlossaryFileSource.create(spec)
    terms = list(source.iter_glossary())
    assert [(t.business, t.term) for t in terms] == [
        ("game1", "付费用户"),
        ("game1", "DAU"),
        ("game2", "流水"),
    ]
    payer = terms[0]
    assert payer.synonyms == ["paying users", "付费玩家", "payer"]
    assert payer.assets == ["game1.dw.dws.pay_user_daily"]
    assert payer.description.startswith("Users with at least one")
    assert terms[1].synonyms == ["日活", "daily active users"]  # `a; b` string form
    assert terms[1].assets == ["game1.dw.dws.login_log"]
    assert source.report.counts == {"files": 1, "terms": 3, "bad_records": 1}
    assert "terms.yaml:9" in source.report.warnings[0]


def test_glossary_jsonl_with_bad_line_and_default_business() -> None:
    spec = SourceSpec(
        name="g",
        type="glossary",
        business="game3",
        options={"path": str(FIXTURES / "glossary" / "terms.jsonl")},
    )
    source = GlossaryFileSource.create(spec)
    terms = list(source.iter_glossary())
    assert [(t.business, t.term, t.synonyms) for t in terms] == [
        ("game2", "留存", ["retention"]),
        ("game3", "ARPU", []),
    ]
    assert source.report.counts["bad_records"] == 1
    assert "terms.jsonl:2" in source.report.warnings[0]


def test_a_requirement_may_name_the_scope_it_was_asked_in(tmp_path: Path) -> None:
    """`databases`: a list, or `a;b` in a CSV cell; absent or empty is no scope."""
    path = tmp_path / "reqs.jsonl"
    path.write_text(
        '{"id": "a", "business": "shop", "text": "invoices", "databases": ["sales"]}\n'
        '{"id": "b", "business": "shop", "text": "accounts", "databases": "billing;sales"}\n'
        '{"id": "c", "business": "shop", "text": "customers", "databases": ""}\n'
        '{"id": "d", "business": "shop", "text": "plans"}\n',
        encoding="utf-8",
    )
    reqs = {r.id: r.databases for r in requirements(path).iter_requirements()}
    assert reqs == {"a": ["sales"], "b": ["billing", "sales"], "c": None, "d": None}
