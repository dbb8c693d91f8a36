"""The demo warehouse generator: deterministic, really keyed, consistent labels, informative usage."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from assetmatch.config import SourceSpec, load_settings
from assetmatch.demo import catalog
from assetmatch.demo.warehouse import DemoPaths, asset_id, build_demo, intent_of, load_demo
from assetmatch.sources import registry

REFERENCE = date(2026, 3, 1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return build_demo(tmp_path_factory.mktemp("demo"), reference_date=REFERENCE)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def ingested_asset_ids(paths: DemoPaths) -> set[str]:
    """The asset ids the configured catalog sources yield, i.e. what ingest writes to the lake."""
    settings = load_settings(paths.config)
    ids: set[str] = set()
    for spec in settings.sources:
        if spec.type == "catalog_file":
            source = registry.create(spec)
            ids |= {a.asset_id for a in source.iter_assets()}
            assert not source.report.warnings, source.report.warnings
    return ids


def test_same_seed_gives_identical_files(tmp_path: Path, demo: DemoPaths) -> None:
    again = build_demo(tmp_path / "again", reference_date=REFERENCE)
    for original in demo.data_files():
        copy = again.root / original.relative_to(demo.root)
        if original.name == "assetmatch.yaml":  # holds the folder's absolute path, nothing else differs
            assert original.read_text().replace(str(demo.root), "R") == copy.read_text().replace(
                str(again.root), "R"
            )
        else:
            assert original.read_bytes() == copy.read_bytes(), original


def test_another_seed_or_date_gives_another_log(tmp_path: Path, demo: DemoPaths) -> None:
    other_seed = build_demo(tmp_path / "seed", seed=1, reference_date=REFERENCE, businesses=["moba"])
    other_day = build_demo(
        tmp_path / "day", reference_date=REFERENCE + timedelta(days=1), businesses=["moba"]
    )
    original = demo.query_logs["moba"].read_bytes()
    assert other_seed.query_logs["moba"].read_bytes() != original
    assert other_day.query_logs["moba"].read_bytes() != original


@pytest.mark.parametrize("game", [g.key for g in catalog.GAMES])
def test_sqlite_database_has_the_tables_and_keys(demo: DemoPaths, game: str) -> None:
    spec = catalog.game(game)
    assert 25 <= len(spec.tables) <= 40
    conn = sqlite3.connect(demo.databases[game])
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert names == set(spec.table_names())
        for table in spec.tables:
            info = conn.execute(f"PRAGMA table_info({table.name})").fetchall()
            assert [r[1] for r in info] == [c.name for c in table.columns]
            assert {r[1] for r in info if r[5]} == {c.name for c in table.columns if c.pk}
            fks = {(r[2], r[3], r[4]) for r in conn.execute(f"PRAGMA foreign_key_list({table.name})")}
            assert fks == {(fk.ref_table, fk.columns[0], fk.ref_columns[0]) for fk in table.foreign_keys}
            assert conn.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()[0] > 0
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []  # every fact row joins its dims
        with_fks = sum(1 for t in spec.tables if t.foreign_keys and t.layer != "dim")
        assert with_fks >= 20
    finally:
        conn.close()


def test_catalog_is_layered_bilingual_and_confusable() -> None:
    for game in catalog.GAMES:
        names = game.table_names()
        assert {n.split("_")[0] for n in names} >= {"ods", "dwd", "dws", "ads", "dim", "tmp"}
        assert any(n.endswith(s) for n in names for s in ("_di",)) and any(n.endswith("_wi") for n in names)
        assert any(n.endswith("_1d") for n in names) and any(n.endswith("_7d") for n in names)
        comments = [t.comment for t in game.tables]
        assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in c) for c in comments) > len(comments) * 0.7
        assert any(c.isascii() for c in comments)  # some English-only comments too
        twins = [t for t in game.tables if t.abandoned_twin_of]
        assert len(twins) >= 2
        for twin in twins:  # the twin looks exactly like the live table
            live = game.table(twin.abandoned_twin_of or "")
            assert twin.comment == live.comment and twin.columns == live.columns
        for word in ("A渠道", "B渠道", "官方渠道", "日活", "付费", "新增", "留存", "道具", "公会"):
            assert any(word in c for c in comments), word


def test_catalog_sources_yield_every_table_with_comments(demo: DemoPaths) -> None:
    ids = ingested_asset_ids(demo)
    assert len(ids) == sum(len(catalog.game(g).tables) for g in demo.businesses)
    assert asset_id("moba", "dws_user_active_1d") in ids
    # the sql source reading the SQLite file gives the same ids and keys (only comments are missing)
    spec = SourceSpec(
        name="db", type="sql", business="moba", options={"url": f"sqlite:///{demo.databases['moba']}"}
    )
    source = registry.create(spec)
    try:
        from_db = {a.asset_id: a for a in source.iter_assets()}
    finally:
        source.close()
    assert set(from_db) == {i for i in ids if i.startswith("moba.")}
    fks = {
        (fk.columns[0], fk.ref_asset_id)
        for fk in from_db[asset_id("moba", "dws_user_active_1d")].foreign_keys
    }
    assert (("user_id", asset_id("moba", "dim_user"))) in fks


def test_requirements_gold_assets_exist_and_format(demo: DemoPaths) -> None:
    ids = ingested_asset_ids(demo)
    for game in demo.businesses:
        records = read_jsonl(demo.requirements[game])
        assert 100 <= len(records) <= 140
        assert len({r["id"] for r in records}) == len(records)
        for r in records:
            assert set(r) == {"id", "business", "text", "gold_assets", "split", "ts", "sql"}
            assert r["business"] == game and 1 <= len(r["gold_assets"]) <= 3
            assert set(r["gold_assets"]) <= ids, r
            ts = datetime.fromisoformat(r["ts"]).date()
            assert REFERENCE - timedelta(days=91) <= ts <= REFERENCE
        chinese = sum(any("\u4e00" <= ch <= "\u9fff" for ch in r["text"]) for r in records)
        assert 0.55 < chinese / len(records) < 0.9  # Chinese mostly, English too


def test_train_test_split_shares_no_template_group(demo: DemoPaths) -> None:
    for game in demo.businesses:
        records = read_jsonl(demo.requirements[game])
        groups: dict[str, set[str]] = {}
        for r in records:
            groups.setdefault(intent_of(r["id"]), set()).add(r["split"])
        assert all(len(splits) == 1 for splits in groups.values())
        test_share = sum(r["split"] == "test" for r in records) / len(records)
        assert 0.2 <= test_share <= 0.3
        train_texts = {r["text"] for r in records if r["split"] == "train"}
        assert not train_texts & {r["text"] for r in records if r["split"] == "test"}


def test_glossary_points_at_existing_assets(demo: DemoPaths) -> None:
    ids = ingested_asset_ids(demo)
    settings = load_settings(demo.config)
    source = registry.create(settings.source("glossary"))
    terms = list(source.iter_glossary())
    assert not source.report.warnings
    assert {t.business for t in terms} == set(demo.businesses)
    for term in terms:
        assert term.assets and set(term.assets) <= ids, term
    synonyms = {s for t in terms for s in t.synonyms} | {t.term for t in terms}
    assert {"普通活跃", "A渠道", "大R", "流失", "DAU", "churn"} <= synonyms


def test_query_log_is_realistic_and_runs(demo: DemoPaths) -> None:
    for game in demo.businesses:
        rows = read_csv(demo.query_logs[game])
        assert list(rows[0]) == ["time", "user", "business", "sql", "requirement"]
        assert 600 <= len(rows) <= 2000
        users = Counter(r["user"] for r in rows)
        assert 15 <= len(users) <= 20
        assert users.most_common(1)[0][1] > 4 * min(users.values())  # a few heavy users
        times = [datetime.fromisoformat(r["time"]).date() for r in rows]
        assert min(times) >= REFERENCE - timedelta(days=90) and max(times) < REFERENCE
        with_text = [r for r in rows if r["requirement"]]
        assert 0.15 < len(with_text) / len(rows) < 0.5
        assert any(" JOIN " in r["sql"] for r in rows)
        conn = sqlite3.connect(demo.databases[game])
        try:
            for r in rows:  # every logged query really runs on the sample database
                conn.execute(r["sql"]).fetchall()
        finally:
            conn.close()


def test_usage_tells_the_live_table_from_its_abandoned_twin(demo: DemoPaths) -> None:
    """The signal the usage path and features rely on: analysts use the live table, daily.

    Tables are read from the log by the real query_log source (sqlglot), for one game to keep the
    test fast; the other games' logs come from the same generator."""
    settings = load_settings(demo.config)
    spec = settings.source("query-log").model_copy(deep=True)
    spec.options["path"] = str(demo.query_logs["moba"])
    source = registry.create(spec)
    entries = list(source.iter_query_log())
    assert source.report.counts.get("unparsed_sql", 0) == 0
    game = catalog.game("moba")
    uses: dict[str, list[datetime]] = {}
    for e in entries:
        for t in e.tables:
            uses.setdefault(t, []).append(e.ts)
    assert set(uses) <= {asset_id("moba", t) for t in game.table_names()}
    for twin in (t for t in game.tables if t.abandoned_twin_of):
        twin_uses = uses.get(asset_id(game.key, twin.name), [])
        live_uses = uses[asset_id(game.key, twin.abandoned_twin_of or "")]
        assert 0 < len(twin_uses) <= 5
        assert len(live_uses) > 5 * len(twin_uses)
        assert max(twin_uses).date() <= REFERENCE - timedelta(days=60)
        assert max(live_uses).date() >= REFERENCE - timedelta(days=7)
    # gold tables of the labelled requirements are used tables, never abandoned twins
    gold = {g for r in read_jsonl(demo.requirements[game.key]) for g in r["gold_assets"]}
    twins = {asset_id(game.key, t.name) for t in game.tables if t.abandoned_twin_of}
    assert not gold & twins and all(uses.get(g) for g in gold)


def test_log_never_holds_a_test_requirement_text(demo: DemoPaths) -> None:
    for game in demo.businesses:
        test_texts = {r["text"] for r in read_jsonl(demo.requirements[game]) if r["split"] == "test"}
        logged = {r["requirement"] for r in read_csv(demo.query_logs[game]) if r["requirement"]}
        assert not test_texts & logged


def test_config_keeps_everything_inside_the_demo_folder(demo: DemoPaths) -> None:
    settings = load_settings(demo.config)
    assert settings.business_names() == list(demo.businesses)
    assert {s.type for s in settings.sources} == {"catalog_file", "query_log", "glossary", "requirements"}
    locations = [
        settings.lake.uri,
        settings.recall.index_root,
        settings.feast.data_dir,
        settings.training.adapters_dir,
        settings.mlflow.artifact_location,
        settings.mlflow.tracking_uri.removeprefix("sqlite:///"),
    ]
    locations += [str(s.options["path"]) for s in settings.sources]  # fmt: skip
    for location in locations:
        assert Path(location).is_absolute() and Path(location).is_relative_to(demo.root), location
    raw = yaml.safe_load(demo.config.read_text(encoding="utf-8"))
    assert raw["lake"]["uri"] == str(demo.root / "lake")


def test_load_demo_reads_the_manifest(demo: DemoPaths, tmp_path: Path) -> None:
    loaded = load_demo(demo.root)
    assert loaded == demo
    with pytest.raises(FileNotFoundError, match="no generated demo"):
        load_demo(tmp_path / "nothing-here")


def test_rebuild_keeps_pipeline_state_unless_fresh(tmp_path: Path) -> None:
    paths = build_demo(tmp_path / "d", reference_date=REFERENCE, businesses=["card"])
    marker = paths.lake / "keep.txt"
    marker.parent.mkdir(parents=True)
    marker.write_text("lake data")
    build_demo(paths.root, reference_date=REFERENCE, businesses=["card"])
    assert marker.read_text() == "lake data"  # regenerating inputs never touches the lake
    assert build_demo(paths.root, businesses=["card"]).reference_date == REFERENCE  # pinned date reused
    with pytest.raises(ValueError, match="use --fresh"):  # another day's log would mix into the lake
        build_demo(paths.root, reference_date=REFERENCE + timedelta(days=1), businesses=["card"])
    assert marker.read_text() == "lake data"
    assert load_demo(paths.root).reference_date == REFERENCE
    build_demo(paths.root, reference_date=REFERENCE, businesses=["card"], fresh=True)
    assert not marker.exists()


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an ISO date"):
        build_demo(tmp_path, reference_date="yesterday-ish")
    with pytest.raises(KeyError, match="no demo game 'chess'"):
        build_demo(tmp_path, businesses=["chess"])
