"""Rows for the sample SQLite databases: small, deterministic, and consistent with the keys.

Dimensions get a handful of readable rows (channel names, countries, heroes, crops, cards);
facts reference them through their foreign keys, so joins in the sample query log return rows.
Abandoned twins only hold data from before they were abandoned.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from assetmatch.demo.catalog import ColumnSpec, GameSpec, TableSpec

VALUES: dict[str, tuple[Any, ...]] = {
    "channel_name": ("官方商城", "App Store", "A渠道-应用宝", "A渠道-华为", "B渠道-小米", "B渠道-OPPO"),
    "channel_group": ("official", "official", "channel_a", "channel_a", "channel_b", "channel_b"),
    "country": ("中国大陆", "中国台湾", "日本", "韩国", "美国", "泰国", "越南"),
    "device_os": ("iOS", "Android"),
    "item_type": ("消耗品", "礼包", "皮肤", "材料"),
    "region": ("华东", "华南", "华北", "海外"),
    "role": ("坦克", "法师", "射手", "刺客", "辅助"),
    "season": ("春", "夏", "秋", "冬"),
    "rarity": ("R", "R", "R", "SR", "SR", "SSR"),
    "mode": ("排位", "匹配", "娱乐"),
    "change_type": ("gain", "cost"),
    "action": ("join", "leave", "promote"),
    "order_type": ("npc", "friend"),
    "currency": ("CNY", "USD", "JPY"),
    "gateway": ("alipay", "wechat", "apple_iap", "google_play"),
    "status": ("success", "success", "success", "duplicate", "test"),
    "guild_role": ("会长", "副会长", "精英", "成员"),
    "ladder_tier": ("青铜", "白银", "黄金", "钻石", "大师"),
    "faction": ("光明", "暗影", "自然", "机械"),
}
NAMES: dict[str, tuple[str, ...]] = {
    "item_name": ("体力药水", "钻石礼包", "月卡", "复活币", "经验卡", "限定皮肤", "强化石", "改名卡"),
    "hero_name": ("破晓", "霜语", "烈焰", "影刃", "磐石", "星弦", "风行", "雷鸣"),
    "crop_name": ("小麦", "玉米", "草莓", "胡萝卜", "南瓜", "向日葵", "葡萄", "茶叶"),
    "card_name": (
        "龙骑士",
        "月光女神",
        "机械巨像",
        "森林守卫",
        "暗影刺客",
        "圣光祭司",
        "火焰术士",
        "冰霜巨龙",
    ),
    "server_name": ("一区·黎明", "二区·星河", "三区·苍穹", "四区·沧海", "海外一服", "海外二服"),
    "guild_name": ("天下第一", "星辰大海", "快乐农场", "无敌战队", "夜猫子", "佛系玩家"),
}
DIM_ROWS = {"dim_user": 300, "dim_channel": 6, "dim_item": 24, "dim_server": 6, "dim_guild": 18}
FACT_ROWS_POPULAR = 160
FACT_ROWS = 60
HISTORY_DAYS = 120  # dim_date covers this many days up to the reference date


def creation_order(game: GameSpec) -> list[TableSpec]:
    """Tables ordered so every table comes after the tables its foreign keys reference."""
    done: list[TableSpec] = []
    names: set[str] = set()
    pending = list(game.tables)
    while pending:
        progressed = False
        for table in list(pending):
            refs = {fk.ref_table for fk in table.foreign_keys if fk.ref_table != table.name}
            if refs <= names:
                done.append(table)
                names.add(table.name)
                pending.remove(table)
                progressed = True
        if not progressed:
            raise ValueError(f"{game.key}: foreign-key cycle among {[t.name for t in pending]}")
    return done


def _value(col: ColumnSpec, i: int, rng: random.Random, day: date) -> Any:
    if col.name in ("dt", "register_dt", "open_dt", "create_dt", "last_login_dt"):
        return day.isoformat()
    if col.name == "week_id":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if col.name == "month_id":
        return day.strftime("%Y-%m")
    if col.name.endswith("_time"):
        return f"{day.isoformat()} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if col.name in VALUES:
        return VALUES[col.name][i % len(VALUES[col.name])]
    if col.name in NAMES:
        pool = NAMES[col.name]
        return pool[i % len(pool)] + ("" if i < len(pool) else f"{i // len(pool) + 1}")
    if col.type == "TEXT":
        return f"{col.name.removesuffix('_id')}_{i:05d}"
    if col.name.startswith("is_"):
        return int(rng.random() < 0.2)
    if col.type == "REAL":
        if "rate" in col.name or col.name == "revenue_share":
            return round(rng.uniform(0.01, 0.6), 4)
        return round(rng.lognormvariate(3.5, 1.2), 2)
    if col.name.endswith("_id"):
        return rng.randint(1, 50)
    return rng.randint(0, 200)


def generate_rows(game: GameSpec, reference: date, rng: random.Random) -> dict[str, list[tuple[Any, ...]]]:
    """Rows per table (column order as in the spec), keys consistent across tables."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    keys: dict[tuple[str, str], list[Any]] = {}  # (table, column) -> values, for foreign keys
    dates = [reference - timedelta(days=d) for d in range(HISTORY_DAYS - 1, -1, -1)]
    for table in creation_order(game):
        fk_of = {fk.columns[0]: fk for fk in table.foreign_keys}
        if table.name == "dim_date":
            data = [
                (d.isoformat(), f"{d.isocalendar().year}-W{d.isocalendar().week:02d}", d.strftime("%Y-%m"),
                 int(d.weekday() >= 5), int((d.month, d.day) in {(1, 1), (5, 1), (10, 1), (10, 2), (10, 3)}))
                for d in dates
            ]  # fmt: skip
        else:
            if table.layer == "dim":
                n = DIM_ROWS.get(table.name, 16)
            else:
                n = FACT_ROWS_POPULAR if table.usage >= 3 else FACT_ROWS
            # abandoned twins stopped being loaded ~60 days ago
            window = dates[: HISTORY_DAYS - 60] if table.abandoned_twin_of else dates[-90:]
            pk_unique = {c.name: list(keys.get((fk_of[c.name].ref_table, fk_of[c.name].ref_columns[0]), []))
                         for c in table.columns if c.pk and c.name in fk_of}  # fmt: skip
            for pool in pk_unique.values():
                rng.shuffle(pool)
            n = min([n, *(len(p) for p in pk_unique.values())])
            data = []
            for i in range(n):
                day = rng.choice(window)
                row: list[Any] = []
                for col in table.columns:
                    if col.name in pk_unique:
                        row.append(pk_unique[col.name][i])
                    elif col.name in fk_of:
                        fk = fk_of[col.name]
                        pool = keys[(fk.ref_table, fk.ref_columns[0])]
                        row.append(
                            day.isoformat()
                            if col.name == "dt" and day.isoformat() in pool
                            else rng.choice(pool)
                        )
                    elif col.pk and col.type == "INTEGER":
                        row.append(i + 1)
                    elif col.pk:
                        row.append(f"{table.name.split('_')[1]}{reference:%Y%m}{i:06d}")
                    else:
                        row.append(_value(col, i, rng, day))
                data.append(tuple(row))
        rows[table.name] = data
        for idx, col in enumerate(table.columns):
            if col.pk:
                keys[(table.name, col.name)] = [r[idx] for r in data]
    return rows
