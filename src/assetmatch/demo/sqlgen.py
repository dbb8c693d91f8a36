"""SQL an analyst would write for an intent: the fact table joined to its dimensions.

Built from the catalog's keys (foreign key first, shared `dt`/`user_id`/`channel_id` columns
otherwise), so every query in the sample log really runs against the sample SQLite database.
"""

from __future__ import annotations

from datetime import date

from assetmatch.demo.catalog import GameSpec, TableSpec

# Columns an analyst groups by when a dimension is joined, most descriptive first.
LABELS = (
    "channel_name",
    "channel_group",
    "country",
    "device_os",
    "vip_level",
    "item_name",
    "item_type",
    "server_name",
    "region",
    "guild_name",
    "hero_name",
    "role",
    "crop_name",
    "season",
    "card_name",
    "rarity",
    "is_weekend",
    "is_holiday",
)
DATE_COLUMNS = ("dt", "register_dt", "week_id")
SHARED_JOIN_COLUMNS = ("dt", "user_id", "channel_id")
ALIASES = "abcdefgh"


def measure(table: TableSpec) -> str | None:
    """First numeric column that is not a key or a flag: what a query sums."""
    for col in table.columns:
        if (
            col.type in ("INTEGER", "REAL")
            and not col.pk
            and not col.name.endswith("_id")
            and not (col.name.startswith("is_"))
        ):
            return col.name
    return None


def date_column(table: TableSpec) -> str | None:
    names = {c.name for c in table.columns}
    return next((d for d in DATE_COLUMNS if d in names), None)


def label(table: TableSpec) -> str | None:
    names = {c.name for c in table.columns}
    return next((n for n in LABELS if n in names), None)


def join_condition(left: TableSpec, la: str, right: TableSpec, ra: str) -> str | None:
    """`la.x = ra.y` from a foreign key either way, else from shared key columns; None if unrelated."""
    for fk in left.foreign_keys:
        if fk.ref_table == right.name:
            return " AND ".join(f"{la}.{c} = {ra}.{r}" for c, r in zip(fk.columns, fk.ref_columns))
    for fk in right.foreign_keys:
        if fk.ref_table == left.name:
            return " AND ".join(f"{ra}.{c} = {la}.{r}" for c, r in zip(fk.columns, fk.ref_columns))
    left_cols = {c.name for c in left.columns}
    shared = [c for c in SHARED_JOIN_COLUMNS if c in left_cols and c in {x.name for x in right.columns}]
    if shared:
        return " AND ".join(f"{la}.{c} = {ra}.{c}" for c in shared)
    return None


def _date_filter(table: TableSpec, alias: str, start: date, end: date) -> str | None:
    col = date_column(table)
    if col is None:
        return None
    if col == "week_id":
        return f"{alias}.week_id >= '{start.isocalendar().year}-W{start.isocalendar().week:02d}'"
    return f"{alias}.{col} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'"


def build_sql(game: GameSpec, tables: list[str], start: date, end: date) -> str:
    """A SELECT reading exactly `tables` (first one is the fact), filtered to [start, end]."""
    specs = [game.table(t) for t in tables]
    fact = specs[0]
    if len(specs) == 1:
        group = date_column(fact) or label(fact)
        value = measure(fact)
        where = _date_filter(fact, fact.name, start, end)
        where_sql = f" WHERE {where.replace(fact.name + '.', '')}" if where else ""
        if group and value:
            return (
                f"SELECT {group}, SUM({value}) AS {value} FROM {fact.name}{where_sql} "
                f"GROUP BY {group} ORDER BY {group}"
            )
        return f"SELECT * FROM {fact.name}{where_sql} LIMIT 100"

    joins: list[str] = []
    for i, spec in enumerate(specs[1:], start=1):
        condition = None
        for j in range(i):  # join to the first earlier table it relates to
            condition = join_condition(specs[j], ALIASES[j], spec, ALIASES[i])
            if condition:
                break
        if condition is None:
            raise ValueError(f"{game.key}: no join path from {tables[:i]} to {spec.name}")
        joins.append(f"JOIN {spec.name} {ALIASES[i]} ON {condition}")
    groups = [f"{ALIASES[i]}.{label(s)}" for i, s in enumerate(specs) if i > 0 and label(s) is not None] or [
        f"a.{date_column(fact) or fact.columns[0].name}"
    ]
    values = [
        f"SUM({ALIASES[i]}.{m}) AS {m}_{ALIASES[i]}"
        for i, s in enumerate(specs)
        if s.layer != "dim" and (m := measure(s)) is not None
    ][:2] or ["COUNT(*) AS n"]
    where = _date_filter(fact, "a", start, end)
    return (
        f"SELECT {', '.join(groups)}, {', '.join(values)} FROM {fact.name} a {' '.join(joins)}"
        + (f" WHERE {where}" if where else "")
        + f" GROUP BY {', '.join(groups)}"
    )


def adhoc_sql(table: TableSpec, start: date, end: date) -> str:
    """A quick look at one table, as analysts do before writing the real query."""
    where = _date_filter(table, table.name, start, end)
    if where:
        return f"SELECT * FROM {table.name} WHERE {where.replace(table.name + '.', '')} LIMIT 100"
    return f"SELECT * FROM {table.name} LIMIT 100"
