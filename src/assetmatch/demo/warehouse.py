"""The sample warehouse behind `assetmatch demo`: three mobile games, generated deterministically.

`build_demo(dir)` writes, for each game (`moba`, `farm`, `card`):

* `warehouse/<game>/dw.db` — a SQLite database with the game's 40 tables (layered names
  ods_/dwd_/dws_/ads_/dim_, primary and foreign keys, a few hundred consistent rows), so every
  query in the log really runs;
* `warehouse/<game>/catalog.jsonl` — the same tables as a metastore export *with comments*;
* `query_log/<game>.csv` — 90 days of analysts' queries (time, user, business, sql, requirement);
* `glossary/<game>.yaml` — business terms, synonyms (bilingual, colloquial) and their tables;
* `requirements/<game>.jsonl` — ~125 labelled requirements (benchmark format, train/test split),

plus `assetmatch.yaml`, a config whose every path is absolute and inside the demo folder.

Why a catalog export next to the database: SQLite has no table or column comments, and the
`sql` source reads none from it, while comments are most of what a matcher reads. A real
warehouse keeps them in its metastore (Hive, a data catalog), so the demo does the same: the
tables, keys and rows live in SQLite, the descriptions in an exported catalog read by the
`catalog_file` source. The export uses database `dw` and no schema, exactly what the `sql`
source reports for a SQLite file named `dw.db`, so asset ids agree whichever source reads the
tables: `<game>.dw.<table>`.

Everything is a pure function of `seed` and `reference_date` (the "today" of the query log):
the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from assetmatch.demo import catalog as cat
from assetmatch.demo.catalog import GameSpec, TableSpec
from assetmatch.demo.intents import PERIODS_EN, PERIODS_ZH, Intent, intents_for
from assetmatch.demo.sampledata import creation_order, generate_rows
from assetmatch.demo.sqlgen import adhoc_sql, build_sql
from assetmatch.models import default_asset_id
from assetmatch.serving.threads import default_threads

DEFAULT_SEED = 20240601
DATABASE = "dw"
MANIFEST = "demo.json"
LOG_DAYS = 90
TEST_SHARE = 0.25
REQUIREMENTS_PER_INTENT = 3
ANALYSTS_PER_GAME = 20
QUERIES_PER_WORKDAY = 16
LOG_REQUIREMENT_SHARE = 0.35
ZH_SHARE = 0.7
# The demo's rankers are sized for a 2-core CPU inside a 10-minute budget, not tuned models. Each
# adapter learns on top of the coarse ranking (`coarse_offset`: its logit is added to 0.5 x the
# coarse log-odds in the loss, so its steps go to what the coarse ranking gets wrong; the fusion adds
# the two back) under a long learning-rate schedule, so the rate has barely decayed where training
# stops. The shared adapter (all three games) trains 50 steps of a 500-step schedule: its plateau on
# every day measured (stopped at the first check without gain, it ran 100 steps and kept step 50;
# the same weights, without two checks over every game's validation lists and 50 steps thrown
# away). Each game's adapter starts from it and trains on its own pairs (gold and the coarse lists'
# hard negatives, no random ones; 800-step schedule) until its validation curve stops improving:
# a check every 50 steps, stopped at the first without gain (100-200 steps on the days measured),
# the best checkpoint kept, at most 400 steps (stopping after two checks without gain kept the same
# checkpoints on 2026-12-06, 150 more steps and 3 more checks later; one game's curve crept up to
# 650 steps on another day). Adapters that learned the whole relevance in 50 + 60 steps (the demo
# until then) gained about the width of the gate's intervals; trained this way the gate promoted a
# game on two days of three measured on a 2-core AMD EPYC, in 8.5-10.5 minutes where training runs
# in bf16 (`precision: auto` on CPUs with bf16 units; trained in float32 and judged in int8 on the
# same machine, 10:18 for one of those days), and on three days of seven on a 2-core Xeon with AMX,
# in 6-7 minutes (`benchmarks/demo_days.py`).
# docs/fine-ranking.md, "The demo trains on top of the coarse ranking".
# A shorter token budget and 10 reranked candidates (training, gate and serving). 40 % of each
# game's labelled requirements are held out (~78 instead of ~30 at the default 15 %, ~47 at 25 %): the
# A/B gate's paired comparison on ~50 requirements had 95 % intervals of +-0.03..0.05 set F1, wider
# than the gains the adapters make, so its verdicts were noise either way; its rules are the
# defaults. The validation curve starts at the first check, not before the first step: that
# baseline pass was an eighth of the demo's training time. Each game's tables live in one database
# (`dw`), so its adapters read no database context (`FeatureBuilder.siblings` shows it only where a
# business holds several). No LoRA dropout: drawing its random masks over every LoRA layer's input
# was a fifth of a CPU training step (~40 s of the demo's ~175 s of steps, under a profiler).
# Only the top 3 of the base's 6 layers train their LoRA updates (the lower ones keep the shared,
# and before it the packaged, adapter's): the backward pass stops halfway down, a float32 step 1.3x
# faster on a 2-core CPU without bf16 units, where the demo took 994 s and then 867 s with the
# gate's verdicts on that day's data unchanged within their intervals (428-486 s on three days since
# the checks score two lists at once; docs/measured.md).
DEMO_RANKER = {
    "max_steps": 400,
    "schedule_steps": 800,
    "eval_every": 50,
    "patience": 1,
    "coarse_offset": 0.5,
    "random_negatives": 0,
    "candidate_k": 10,
    "validation_fraction": 0.4,
    "eval_at_start": False,
    "lora_dropout": 0.0,
    "trainable_layers": 3,
}
# The shared adapter's own 500-step schedule (`shared_ranker` overrides `ranker` key by key: on the
# games' 800-step one it ran 200 steps on 2026-12-05, best 150, and moba's adapter from it gained
# +0.01 cross-fitted set F1 where it had gained +0.07 from the 500-step one's step 50), no checks.
DEMO_SHARED_RANKER = {"max_steps": 50, "schedule_steps": 500, "eval_every": 0}
# 64 tokens per (requirement, table) pair: the requirement, the table's name and comment and its most
# relevant columns (`ranking.prompt`). At 96 the demo took 676 s on a slower 2-core CPU and the fine
# stage's p95 (210 ms) broke the gate's 200 ms budget; at 64: 446 s, and the adapters' held-out set F1
# was within noise of 96's (docs/fine-ranking.md).
DEMO_MAX_LENGTH = 64
CST = timezone(timedelta(hours=8), "CST")  # the analysts work in Beijing time

ANALYST_POOL = (
    "zhang.wei", "li.na", "wang.fang", "liu.yang", "chen.jing", "yang.lei", "zhao.min", "huang.tao",
    "zhou.xin", "wu.hao", "xu.lin", "sun.yue", "ma.chao", "zhu.qian", "hu.bo", "guo.ting",
    "he.jun", "lin.xiao", "luo.peng", "gao.yan", "liang.yu", "song.kai", "tang.li", "han.mei",
)  # fmt: skip


@dataclass(frozen=True)
class DemoPaths:
    """Where everything of one generated demo lives (all absolute)."""

    root: Path
    config: Path
    reference_date: date
    seed: int
    businesses: tuple[str, ...]
    databases: dict[str, Path] = field(default_factory=dict)
    catalogs: dict[str, Path] = field(default_factory=dict)
    query_logs: dict[str, Path] = field(default_factory=dict)
    glossaries: dict[str, Path] = field(default_factory=dict)
    requirements: dict[str, Path] = field(default_factory=dict)

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def index_root(self) -> Path:
        return self.root / "indexes"

    @property
    def feast_dir(self) -> Path:
        """Feast's registry and SQLite online store (the repository itself is the project's feature_repo/)."""
        return self.root / "feast"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    def data_files(self) -> list[Path]:
        """Every generated input file (databases, catalogs, logs, glossaries, requirements, config)."""
        files = [self.config]
        for group in (self.databases, self.catalogs, self.query_logs, self.glossaries, self.requirements):
            files.extend(group[b] for b in self.businesses)
        return files


def asset_id(game: str, table: str) -> str:
    """The asset id a demo table gets when ingested (`<game>.dw.<table>`)."""
    return default_asset_id(game, DATABASE, "", table)


def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random(":".join([str(seed), *parts]))


# ---- 1. SQLite warehouse -----------------------------------------------------------------------
def _ddl(table: TableSpec) -> str:
    """CREATE TABLE with keys; comments as SQL `--` remarks (kept by SQLite in sqlite_master)."""
    pk = [c.name for c in table.columns if c.pk]
    parts: list[tuple[str, str]] = [
        (f"{c.name} {c.type}" + (" NOT NULL" if c.pk else ""), c.comment) for c in table.columns
    ]
    if pk:
        parts.append((f"PRIMARY KEY ({', '.join(pk)})", ""))
    for fk in table.foreign_keys:
        parts.append(
            (
                f"FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES {fk.ref_table} ({', '.join(fk.ref_columns)})",
                "",
            )
        )
    lines = []
    for i, (text, comment) in enumerate(parts):
        sep = "," if i < len(parts) - 1 else ""
        lines.append(f"    {text}{sep}" + (f"  -- {comment}" if comment else ""))
    return f"CREATE TABLE {table.name} (  -- {table.comment}\n" + "\n".join(lines) + "\n)"


def write_database(game: GameSpec, path: Path, reference: date, seed: int) -> dict[str, int]:
    """Create the game's SQLite database (tables, keys, rows). Returns row counts per table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rows = generate_rows(game, reference, _rng(seed, game.key, "rows"))
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        with conn:
            for table in creation_order(game):
                conn.execute(_ddl(table))
                marks = ", ".join("?" for _ in table.columns)
                conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", rows[table.name])
        conn.execute("VACUUM")
    finally:
        conn.close()
    return {name: len(r) for name, r in rows.items()}


def write_catalog(game: GameSpec, path: Path, row_counts: dict[str, int], reference: date) -> None:
    """The metastore export: one JSON line per table with its comments, keys and row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for table in game.tables:
            layer = table.layer
            record = {
                "business": game.key,
                "database": DATABASE,
                "table": table.name,
                "table_comment": table.comment,
                "columns": [
                    {"name": c.name, "type": c.type, "comment": c.comment, "primary_key": c.pk}
                    for c in table.columns
                ],
                "foreign_keys": [
                    {
                        "columns": list(fk.columns),
                        "ref_table": fk.ref_table,
                        "ref_columns": list(fk.ref_columns),
                    }
                    for fk in table.foreign_keys
                ],
                "row_count": row_counts.get(table.name, 0),
                "properties": {
                    "layer": layer,
                    "owner": "dw_team" if layer in ("ods", "dwd", "dim") else "bi_team",
                    "last_modified": (
                        reference - timedelta(days=75 if table.abandoned_twin_of else 1)
                    ).isoformat(),
                },
            }
            out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


# ---- 2. query log ------------------------------------------------------------------------------
def _fill(template: str, periods: tuple[str, ...], rng: random.Random) -> str:
    return template.replace("{p}", rng.choice(periods)) if "{p}" in template else template


def phrase(intent: Intent, rng: random.Random, used: set[str] | None = None) -> str:
    """One requirement text for an intent (Chinese ~70%), avoiding templates in `used`."""
    zh = [t for t in intent.zh if not used or t not in used]
    en = [t for t in intent.en if not used or t not in used]
    pick_zh = bool(zh) and (not en or rng.random() < ZH_SHARE)
    template = rng.choice(zh if pick_zh else en)
    if used is not None:
        used.add(template)
    return _fill(template, PERIODS_ZH if pick_zh else PERIODS_EN, rng)


def split_intents(game: str, seed: int) -> dict[str, str]:
    """intent key -> 'train' | 'test'; about a quarter of the intents (all their phrasings) are test."""
    keys = [i.key for i in intents_for(game)]
    rng = _rng(seed, game, "split")
    shuffled = sorted(keys)
    rng.shuffle(shuffled)
    n_test = round(len(keys) * TEST_SHARE)
    test = set(shuffled[:n_test])
    return {k: ("test" if k in test else "train") for k in keys}


def _analysts(game: str, seed: int) -> list[tuple[str, float, dict[str, float]]]:
    """(name, activity, per-intent preference): a few heavy users, many occasional ones."""
    rng = _rng(seed, game, "analysts")
    names = sorted(rng.sample(ANALYST_POOL, ANALYSTS_PER_GAME))
    keys = [i.key for i in intents_for(game)]
    return [(n, rng.paretovariate(1.5), {k: rng.gammavariate(0.7, 1.0) for k in keys}) for n in names]


def _timestamp(day: date, rng: random.Random) -> datetime:
    hour = min(22, max(9, int(rng.gauss(15, 3))))
    return datetime.combine(day, time(hour, rng.randint(0, 59), rng.randint(0, 59)), CST)


def query_log_rows(game: GameSpec, reference: date, seed: int) -> list[dict[str, str]]:
    """90 days of queries: intents weighted by popularity and analyst taste; ad-hoc peeks at tables
    weighted by usage; abandoned twins only touched a few times, two to three months ago.
    Requirement texts are logged for a share of queries of train intents only, so the log never
    holds a test requirement's wording."""
    rng = _rng(seed, game.key, "query_log")
    intents = intents_for(game.key)
    split = split_intents(game.key, seed)
    analysts = _analysts(game.key, seed)
    adhoc_tables = [t for t in game.tables if t.usage > 0]
    twins = [t for t in game.tables if t.abandoned_twin_of]
    rows: list[tuple[datetime, dict[str, str]]] = []

    def add(ts: datetime, user: str, sql: str, requirement: str = "") -> None:
        record = {
            "time": ts.isoformat(),
            "user": user,
            "business": game.key,
            "sql": sql,
            "requirement": requirement,
        }
        rows.append((ts, record))

    for back in range(LOG_DAYS, 0, -1):
        day = reference - timedelta(days=back)
        volume = QUERIES_PER_WORKDAY if day.weekday() < 5 else QUERIES_PER_WORKDAY // 4
        for _ in range(max(1, int(rng.gauss(volume, volume / 4)))):
            name, _activity, taste = rng.choices(analysts, weights=[a[1] for a in analysts])[0]
            start = day - timedelta(days=rng.choice((1, 7, 14, 30)))
            ts = _timestamp(day, rng)
            if rng.random() < 0.15:
                table = rng.choices(adhoc_tables, weights=[t.usage for t in adhoc_tables])[0]
                add(ts, name, adhoc_sql(table, start, day))
                continue
            intent = rng.choices(intents, weights=[i.weight * taste[i.key] for i in intents])[0]
            text = ""
            if split[intent.key] == "train" and rng.random() < LOG_REQUIREMENT_SHARE:
                text = phrase(intent, rng)
            add(ts, name, build_sql(game, list(intent.tables), start, day), text)
    for twin in twins:  # the twin's short life: a few looks, 60-90 days ago, by one or two analysts
        users = rng.sample([a[0] for a in analysts], 2)
        for _ in range(rng.randint(2, 4)):
            day = reference - timedelta(days=rng.randint(61, LOG_DAYS))
            add(_timestamp(day, rng), rng.choice(users), adhoc_sql(twin, day - timedelta(days=7), day))
    rows.sort(key=lambda r: (r[0], r[1]["user"], r[1]["sql"]))
    return [r for _, r in rows]


def write_query_log(rows: Iterable[dict[str, str]], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(
            out, fieldnames=["time", "user", "business", "sql", "requirement"], lineterminator="\n"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


# ---- 3. glossary -------------------------------------------------------------------------------
COMMON_TERMS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("日活", ("DAU", "daily active users", "日活跃用户", "普通活跃", "活跃玩家"),
     "当天登录过的去重用户数", ("dws_user_active_1d",)),
    ("周活", ("WAU", "weekly active users", "周活跃用户"),
     "滚动7天或自然周的活跃用户", ("dws_user_active_7d", "ads_active_user_wi")),
    ("付费用户", ("付费", "充值用户", "paying users", "payers", "付费人数"),
     "当天有成功充值的用户", ("dws_user_pay_1d",)),
    ("大R", ("大R用户", "鲸鱼用户", "whale", "big spender", "土豪", "高付费用户"),
     "近7日充值金额排名前1%的玩家", ("dws_user_pay_7d",)),
    ("首充", ("首次付费", "first purchase", "first top-up"), "账号第一次充值", ("dwd_pay_order_di",)),
    ("流水", ("收入", "充值流水", "revenue", "GMV", "营收"), "充值收入（元）", ("ads_revenue_report_1d",)),
    ("ARPPU", ("每付费用户平均收入", "average revenue per paying user"), "收入/付费人数",
     ("ads_revenue_report_1d",)),
    ("新增", ("新增用户", "新用户", "拉新", "新注册", "new users", "installs"),
     "当天首次注册的账号", ("dws_user_new_1d", "dwd_user_register_di")),
    ("留存", ("次留", "七留", "留存率", "retention", "D1 retention"),
     "注册后第N天仍登录的比例", ("dws_user_retention_1d", "ads_retention_report_1d")),
    ("流失", ("流失用户", "churn", "churned users", "回不来的玩家"),
     "连续7天未登录", ("dws_user_churn_wi",)),
    ("LTV", ("生命周期价值", "lifetime value", "用户价值"), "注册批次的累计收入/人数", ("ads_ltv_report_1d",)),
    ("A渠道", ("渠道A", "channel A", "联运A"), "A组联运渠道（应用宝、华为）", ("ads_channel_a_kpi_1d",)),
    ("B渠道", ("渠道B", "channel B", "联运B"), "B组联运渠道（小米、OPPO）", ("ads_channel_b_kpi_1d",)),
    ("官方渠道", ("官服", "官方", "official channel", "官网包"), "官方商城与 App Store",
     ("ads_channel_official_kpi_1d",)),
    ("买量", ("广告投放", "投放", "UA", "user acquisition", "ad spend", "广告消耗"),
     "付费广告获取用户", ("dws_ad_cost_1d", "dwd_ad_spend_di")),
    ("ROI", ("回本", "投资回报率", "return on ad spend", "ROAS"), "广告回收收入/消耗", ("ads_ad_roi_1d",)),
    ("大盘", ("核心指标", "KPI", "overview", "日报"), "DAU、新增、付费、收入的全局汇总", ("ads_kpi_daily_1d",)),
    ("道具", ("物品", "item", "items", "道具消耗"), "游戏内物品", ("dim_item", "dws_item_consume_1d")),
    ("公会", ("帮派", "guild", "clan", "战队"), "玩家组织", ("dim_guild", "dws_guild_active_1d")),
    ("区服", ("服务器", "server", "新服", "开服"), "游戏区服", ("dim_server",)),
)  # fmt: skip
GENRE_TERMS: dict[str, tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...]] = {
    "moba": (
        ("对局", ("比赛", "match", "matches", "开黑", "排位", "打了几局"), "一场5v5比赛",
         ("dwd_match_detail_di", "dws_match_user_1d")),
        ("英雄", ("hero", "heroes", "英雄胜率", "版本强势英雄"), "可选角色", ("dim_hero", "dws_hero_stats_1d")),
    ),
    "farm": (
        ("作物", ("庄稼", "crop", "crops", "种菜", "收菜"), "可种植物", ("dim_crop", "dwd_harvest_di")),
        ("偷菜", ("互访", "好友拜访", "steal", "visits"), "拜访好友农场", ("dws_farm_visit_1d",)),
        ("订单", ("交付订单", "NPC订单", "orders"), "交付作物换金币", ("dws_farm_order_1d",)),
    ),
    "card": (
        ("抽卡", ("抽奖", "gacha", "十连", "pull", "draw"), "消耗钻石从卡池获得卡牌",
         ("dwd_card_draw_di", "dws_card_pool_1d")),
        ("出货率", ("SSR概率", "drop rate", "爆率"), "抽到高稀有度卡牌的比例", ("dwd_card_draw_di", "dim_card")),
        ("卡组", ("套牌", "deck", "decks", "天梯"), "对战所用卡牌组合", ("dwd_pvp_battle_di",)),
    ),
}  # fmt: skip


def glossary_terms(game: GameSpec) -> list[dict[str, Any]]:
    """The game's glossary entries (asset ids resolved); terms that name no table of the game are left out."""
    names = set(game.table_names())
    terms = []
    for term, synonyms, description, tables in COMMON_TERMS + GENRE_TERMS.get(game.key, ()):
        assets = [asset_id(game.key, t) for t in tables if t in names]
        if assets:
            terms.append(
                {"business": game.key, "term": term, "synonyms": list(synonyms), "description": description,
                 "assets": assets}
            )  # fmt: skip
    return terms


def write_glossary(game: GameSpec, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    terms = glossary_terms(game)
    body = yaml.safe_dump({"terms": terms}, allow_unicode=True, sort_keys=False, width=120)
    path.write_text(f"# {game.name_zh} ({game.name_en}) business glossary\n" + body, encoding="utf-8")
    return len(terms)


# ---- 4. labelled requirements ------------------------------------------------------------------
def requirement_records(game: GameSpec, reference: date, seed: int) -> list[dict[str, Any]]:
    """REQUIREMENTS_PER_INTENT phrasings per intent; split by intent; ts spread over the log window."""
    rng = _rng(seed, game.key, "requirements")
    split = split_intents(game.key, seed)
    records = []
    for intent in intents_for(game.key):
        used: set[str] = set()
        for k in range(REQUIREMENTS_PER_INTENT):
            day = reference - timedelta(days=rng.randint(1, LOG_DAYS))
            start = day - timedelta(days=7)
            records.append(
                {
                    "id": f"{game.key}.{intent.key}.{k + 1}",
                    "business": game.key,
                    "text": phrase(intent, rng, used),
                    "gold_assets": [asset_id(game.key, t) for t in intent.tables],
                    "split": split[intent.key],
                    "ts": _timestamp(day, rng).astimezone(UTC).isoformat(),
                    "sql": build_sql(game, list(intent.tables), start, day),
                }
            )
    return records


def intent_of(requirement_id: str) -> str:
    """The intent (template group) of a demo requirement id `<game>.<intent>.<n>`."""
    return requirement_id.split(".")[1]


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


# ---- 5. config -----------------------------------------------------------------------------------
def demo_settings(paths: DemoPaths) -> dict[str, Any]:
    """The demo's assetmatch.yaml as a dict: absolute paths, everything inside the demo folder."""
    root = paths.root
    sources: list[dict[str, Any]] = []
    for game in paths.businesses:
        sources.append(
            {
                "name": f"catalog-{game}",
                "type": "catalog_file",
                "business": game,
                "mode": "full",
                "options": {"path": str(paths.catalogs[game])},
            }
        )
    sources += [
        {"name": "query-log", "type": "query_log", "mode": "incremental",
         "options": {"path": str(root / "query_log" / "*.csv"), "database": DATABASE}},
        {"name": "glossary", "type": "glossary", "options": {"path": str(root / "glossary" / "*.yaml")}},
        {"name": "requirements", "type": "requirements",
         "options": {"path": str(root / "requirements" / "*.jsonl")}},
    ]  # fmt: skip
    return {
        "env": "local",
        "lake": {"uri": str(paths.lake)},
        "businesses": [
            {"name": g.key, "description": g.description} for g in cat.GAMES if g.key in paths.businesses
        ],
        "sources": sources,
        "mlflow": {
            "tracking_uri": f"sqlite:///{paths.mlflow_db}",
            "artifact_location": str(paths.mlartifacts),
        },
        "feast": {"data_dir": str(paths.feast_dir), "online_store": "sqlite"},
        "recall": {"index_root": str(paths.index_root)},
        "ranker": {"max_length": DEMO_MAX_LENGTH},
        "matching": {"fine_top_n": DEMO_RANKER["candidate_k"]},
        "training": {
            "adapters_dir": str(paths.adapters),
            "ranker": dict(DEMO_RANKER),
            "shared_ranker": dict(DEMO_SHARED_RANKER),
            # a rerun that refits the coarse model (new code, new data) retrains the adapters too: their
            # calibration is fitted on the coarse lists
            "retrain_on_coarse_refit": True,
        },
        # the demo serves on loopback only; a real deployment lists sha256 digests in serving.api_keys
        "serving": {
            "host": "127.0.0.1",
            "require_api_key": False,
            "reload_interval_s": 0,
            # the fine ranker's threads wherever it serves or is judged (checks, gate), whichever
            # command runs on this config: the demo's own, so `assetmatch serve` / `promote` agree
            # with it. One on two cores: two served 19.9 requests/s at concurrency 16, one 24.4.
            "torch_threads": default_threads(),
        },
    }


def write_config(paths: DemoPaths) -> None:
    header = (
        "# assetmatch config of the generated demo (written by `assetmatch demo`; paths are absolute\n"
        "# and inside this folder, so the demo touches nothing outside it).\n"
    )
    body = yaml.safe_dump(demo_settings(paths), allow_unicode=True, sort_keys=False, width=120)
    paths.config.write_text(header + body, encoding="utf-8")


# ---- entry point ---------------------------------------------------------------------------------
def _as_date(value: date | datetime | str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ValueError(f"reference date {value!r} is not an ISO date (YYYY-MM-DD)") from None


def build_demo(
    dir: str | Path,
    seed: int = DEFAULT_SEED,
    reference_date: date | datetime | str | None = None,
    businesses: Iterable[str] | None = None,
    fresh: bool = False,
) -> DemoPaths:
    """Generate the sample warehouse and its files under `dir`; returns where everything is.

    reference_date: the demo's "today" (default: the date the folder was first generated with, else
    the current UTC date); the query log covers the 90 days before it. fresh: delete `dir` first
    (lake, indexes and models included). Without `fresh`, a folder whose lake was built from other
    settings (seed, reference date, businesses) is refused with a ValueError, never overwritten.
    """
    root = Path(dir).expanduser().resolve()
    games = [cat.game(b) for b in businesses] if businesses is not None else list(cat.GAMES)
    keys = tuple(g.key for g in games)
    if fresh and root.exists():
        shutil.rmtree(root)
    elif (root / MANIFEST).exists():
        # An existing demo is pinned to its reference date: regenerating it for another day (or
        # seed) would mix two different query logs in its lake.
        previous = load_demo(root)
        if reference_date is None:
            reference_date = previous.reference_date
        wanted = (seed, _as_date(reference_date), keys)
        if wanted != (previous.seed, previous.reference_date, previous.businesses) and previous.lake.exists():
            raise ValueError(
                f"{root} holds a demo generated with seed {previous.seed}, reference date "
                f"{previous.reference_date}, businesses {list(previous.businesses)}, and its lake; "
                "use --fresh to start over with other settings"
            )
    root.mkdir(parents=True, exist_ok=True)
    reference = _as_date(reference_date)
    paths = demo_paths(root, keys, reference, seed)
    for game in games:
        counts = write_database(game, paths.databases[game.key], reference, seed)
        write_catalog(game, paths.catalogs[game.key], counts, reference)
        write_query_log(query_log_rows(game, reference, seed), paths.query_logs[game.key])
        write_glossary(game, paths.glossaries[game.key])
        write_jsonl(requirement_records(game, reference, seed), paths.requirements[game.key])
    write_config(paths)
    manifest = {"seed": seed, "reference_date": reference.isoformat(), "businesses": list(paths.businesses)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return paths


def demo_paths(root: Path, businesses: tuple[str, ...], reference: date, seed: int) -> DemoPaths:
    """The layout of a demo folder (nothing is read or written)."""
    return DemoPaths(
        root=root,
        config=root / "assetmatch.yaml",
        reference_date=reference,
        seed=seed,
        businesses=businesses,
        databases={k: root / "warehouse" / k / f"{DATABASE}.db" for k in businesses},
        catalogs={k: root / "warehouse" / k / "catalog.jsonl" for k in businesses},
        query_logs={k: root / "query_log" / f"{k}.csv" for k in businesses},
        glossaries={k: root / "glossary" / f"{k}.yaml" for k in businesses},
        requirements={k: root / "requirements" / f"{k}.jsonl" for k in businesses},
    )


def load_demo(dir: str | Path) -> DemoPaths:
    """An already generated demo folder (read from its manifest); FileNotFoundError if there is none."""
    root = Path(dir).expanduser().resolve()
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"no generated demo in {root} (no {MANIFEST}): run `assetmatch demo` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return demo_paths(
        root,
        tuple(manifest["businesses"]),
        date.fromisoformat(manifest["reference_date"]),
        int(manifest["seed"]),
    )
