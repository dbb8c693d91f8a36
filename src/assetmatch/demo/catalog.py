"""The sample warehouse's tables: three mobile games with layered warehouse naming.

Every game gets the shared analytics core (users, payments, channels, retention, items, guilds,
ad spend) plus a few tables of its own genre (matches and heroes for the MOBA, crops for the
farming sim, card draws for the card game). On purpose the catalog is hard to match on words
alone, as real warehouses are:

* active vs paying vs new users (日活 / 付费 / 新增) live in look-alike `dws_user_*` tables;
* daily and weekly aggregates sit side by side (`_1d`, `_7d`, `_wi`);
* each channel (A渠道 / B渠道 / 官方渠道) has its own report table;
* a popular table has an abandoned twin with the same comment and columns
  (`_bak`, `_old`, `tmp_`), which analysts stopped using months ago.

The twins differ per game, so a ranker cannot learn "never pick `_bak`" from one game and
ignore usage everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ColumnSpec:
    """One column: name, SQLite type, comment (Chinese or English), primary-key flag."""

    name: str
    type: str
    comment: str
    pk: bool = False


@dataclass(frozen=True)
class ForeignKeySpec:
    """`columns` of this table reference `ref_columns` of table `ref_table` (same game)."""

    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    """One warehouse table of one game.

    `usage` is the relative popularity of the table for ad-hoc queries in the query log;
    `abandoned_twin_of` marks a stale copy of another table (rarely and only long ago used).
    """

    name: str
    comment: str
    columns: tuple[ColumnSpec, ...]
    foreign_keys: tuple[ForeignKeySpec, ...] = ()
    usage: float = 1.0
    abandoned_twin_of: str | None = None

    @property
    def layer(self) -> str:
        """Warehouse layer from the name prefix (ods/dwd/dws/ads/dim/tmp)."""
        return self.name.split("_", 1)[0]

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")


@dataclass(frozen=True)
class GameSpec:
    """One business: its key (tenant id), names and tables."""

    key: str
    name_zh: str
    name_en: str
    genre: str
    tables: tuple[TableSpec, ...] = field(default=())

    @property
    def description(self) -> str:
        return f"{self.name_zh} ({self.name_en}), {self.genre}"

    def table(self, name: str) -> TableSpec:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"game {self.key!r} has no table {name!r}")

    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]


def C(name: str, type_: str, comment: str, pk: bool = False) -> ColumnSpec:
    return ColumnSpec(name, type_, comment, pk)


def FK(column: str, ref_table: str, ref_column: str | None = None) -> ForeignKeySpec:
    return ForeignKeySpec((column,), ref_table, (ref_column or column,))


# ---- shared columns ---------------------------------------------------------------------------
DT = C("dt", "TEXT", "统计日期 yyyy-MM-dd")
USER = C("user_id", "INTEGER", "用户ID")
CHANNEL = C("channel_id", "INTEGER", "渠道ID")
SERVER = C("server_id", "INTEGER", "区服ID")
ITEM = C("item_id", "INTEGER", "道具ID")
GUILD = C("guild_id", "INTEGER", "公会ID")


def _pk(col: ColumnSpec) -> ColumnSpec:
    return ColumnSpec(col.name, col.type, col.comment, True)


# ---- dimensions --------------------------------------------------------------------------------
DIM_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "dim_user",
        "用户维度表，每个账号一行（注册信息、设备、地区、VIP等级）",
        (
            _pk(USER),
            C("register_dt", "TEXT", "注册日期"),
            C("register_channel_id", "INTEGER", "注册渠道ID"),
            C("country", "TEXT", "国家/地区"),
            C("device_os", "TEXT", "设备系统 iOS/Android"),
            C("vip_level", "INTEGER", "VIP等级"),
        ),
        (FK("register_channel_id", "dim_channel", "channel_id"),),
        usage=5.0,
    ),
    TableSpec(
        "dim_channel",
        "渠道维度表：渠道名称与渠道分组（官方渠道 / A渠道 / B渠道）",
        (
            _pk(CHANNEL),
            C("channel_name", "TEXT", "渠道名称"),
            C("channel_group", "TEXT", "渠道分组：official / channel_a / channel_b"),
            C("revenue_share", "REAL", "渠道分成比例"),
        ),
        usage=6.0,
    ),
    TableSpec(
        "dim_date",
        "Calendar dimension: one row per day with week, month and holiday flags",
        (
            _pk(DT),
            C("week_id", "TEXT", "ISO week, e.g. 2026-W07"),
            C("month_id", "TEXT", "month yyyy-MM"),
            C("is_weekend", "INTEGER", "1 if Saturday or Sunday"),
            C("is_holiday", "INTEGER", "1 on public holidays (节假日)"),
        ),
        usage=1.5,
    ),
    TableSpec(
        "dim_item",
        "道具维度表：道具名称、类型、钻石价格",
        (
            _pk(ITEM),
            C("item_name", "TEXT", "道具名称"),
            C("item_type", "TEXT", "道具类型（消耗品/礼包/皮肤/材料）"),
            C("price_diamond", "INTEGER", "钻石价格"),
            C("is_tradeable", "INTEGER", "是否可交易"),
        ),
        usage=3.0,
    ),
    TableSpec(
        "dim_server",
        "区服维度表：区服名称、大区、开服日期",
        (
            _pk(SERVER),
            C("server_name", "TEXT", "区服名称"),
            C("region", "TEXT", "大区"),
            C("open_dt", "TEXT", "开服日期"),
        ),
        usage=2.0,
    ),
    TableSpec(
        "dim_guild",
        "公会维度表：公会名称、会长、所在区服",
        (
            _pk(GUILD),
            C("guild_name", "TEXT", "公会名称"),
            C("leader_user_id", "INTEGER", "会长用户ID"),
            SERVER,
            C("create_dt", "TEXT", "创建日期"),
        ),
        (FK("server_id", "dim_server"), FK("leader_user_id", "dim_user", "user_id")),
        usage=1.5,
    ),
)

# ---- raw (ODS) ---------------------------------------------------------------------------------
ODS_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "ods_login_log_di",
        "登录日志原始表（客户端上报，未清洗）",
        (
            C("log_id", "TEXT", "日志ID", pk=True),
            USER,
            C("login_time", "TEXT", "登录时间"),
            C("ip", "TEXT", "客户端IP"),
            C("device_id", "TEXT", "设备ID"),
            SERVER,
        ),
        usage=0.6,
    ),
    TableSpec(
        "ods_pay_order_di",
        "支付订单原始表（支付网关回调，含测试单与重复回调）",
        (
            C("order_id", "TEXT", "订单号", pk=True),
            USER,
            C("amount", "REAL", "金额"),
            C("currency", "TEXT", "币种"),
            C("pay_time", "TEXT", "支付时间"),
            C("gateway", "TEXT", "支付网关"),
            C("status", "TEXT", "回调状态"),
        ),
        usage=0.6,
    ),
)

# ---- detail (DWD) ------------------------------------------------------------------------------
DWD_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "dwd_user_login_di",
        "用户登录明细表（每次登录一行，含在线时长）",
        (
            USER,
            DT,
            C("login_time", "TEXT", "登录时间"),
            C("online_seconds", "INTEGER", "本次在线时长（秒）"),
            SERVER,
            CHANNEL,
        ),
        (
            FK("user_id", "dim_user"),
            FK("dt", "dim_date"),
            FK("server_id", "dim_server"),
            FK("channel_id", "dim_channel"),
        ),
        usage=3.0,
    ),
    TableSpec(
        "dwd_user_register_di",
        "新增用户注册明细表（每个新注册账号一行）",
        (
            _pk(USER),
            DT,
            CHANNEL,
            C("device_os", "TEXT", "设备系统"),
            C("country", "TEXT", "国家/地区"),
        ),
        (FK("user_id", "dim_user"), FK("channel_id", "dim_channel")),
        usage=2.0,
    ),
    TableSpec(
        "dwd_pay_order_di",
        "充值订单明细表（已去重、已剔除测试单）",
        (
            C("order_id", "TEXT", "订单号", pk=True),
            USER,
            DT,
            CHANNEL,
            C("item_id", "INTEGER", "购买的商品/礼包ID"),
            C("pay_amount", "REAL", "充值金额（元）"),
            C("is_first_pay", "INTEGER", "是否首充"),
        ),
        (FK("user_id", "dim_user"), FK("channel_id", "dim_channel"), FK("item_id", "dim_item")),
        usage=4.0,
    ),
    TableSpec(
        "dwd_item_flow_di",
        "道具流水明细表（获取与消耗）",
        (
            USER,
            DT,
            ITEM,
            C("change_type", "TEXT", "变动类型：gain 获取 / cost 消耗"),
            C("change_num", "INTEGER", "变动数量"),
            C("reason", "TEXT", "变动原因（商城购买、任务奖励、活动消耗…）"),
        ),
        (FK("user_id", "dim_user"), FK("item_id", "dim_item")),
        usage=2.0,
    ),
    TableSpec(
        "dwd_guild_member_di",
        "公会成员变动明细（加入、退出、职位变化）",
        (
            GUILD,
            USER,
            DT,
            C("action", "TEXT", "变动：join / leave / promote"),
            C("guild_role", "TEXT", "公会职位"),
        ),
        (FK("guild_id", "dim_guild"), FK("user_id", "dim_user")),
        usage=1.0,
    ),
    TableSpec(
        "dwd_ad_spend_di",
        "Ad campaign spend detail: one row per campaign and day (impressions, clicks, installs)",
        (
            C("campaign_id", "TEXT", "广告计划ID"),
            DT,
            CHANNEL,
            C("spend", "REAL", "spend in CNY"),
            C("impressions", "INTEGER", "曝光"),
            C("clicks", "INTEGER", "点击"),
            C("installs", "INTEGER", "激活安装"),
        ),
        (FK("channel_id", "dim_channel"),),
        usage=1.5,
    ),
)

# ---- aggregates (DWS) and reports (ADS) --------------------------------------------------------
_ACTIVE_1D_COLS = (
    DT,
    USER,
    CHANNEL,
    C("login_cnt", "INTEGER", "当日登录次数"),
    C("online_seconds", "INTEGER", "当日在线时长（秒）"),
    C("is_new", "INTEGER", "是否当日新增"),
)
_PAY_1D_COLS = (
    DT,
    USER,
    CHANNEL,
    C("pay_amount", "REAL", "当日充值金额（元）"),
    C("pay_cnt", "INTEGER", "当日充值次数"),
    C("is_first_pay", "INTEGER", "是否当日首充"),
)
_REVENUE_COLS = (
    DT,
    CHANNEL,
    C("revenue", "REAL", "充值收入（元）"),
    C("paying_users", "INTEGER", "付费人数"),
    C("arppu", "REAL", "ARPPU"),
)
_USER_FKS = (FK("user_id", "dim_user"), FK("dt", "dim_date"), FK("channel_id", "dim_channel"))
_KPI_COLS = (
    DT,
    C("dau", "INTEGER", "日活跃用户数 DAU"),
    C("new_users", "INTEGER", "新增用户数"),
    C("paying_users", "INTEGER", "付费用户数"),
    C("revenue", "REAL", "收入（元）"),
)

SUMMARY_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "dws_user_active_1d",
        "用户日活跃汇总表（日活 DAU，每用户每天一行）",
        _ACTIVE_1D_COLS,
        _USER_FKS,
        usage=10.0,
    ),
    TableSpec(
        "dws_user_active_7d",
        "用户近7日活跃汇总表（滚动7天，周活 WAU）",
        (
            DT,
            USER,
            C("active_days_7d", "INTEGER", "近7日活跃天数"),
            C("online_seconds_7d", "INTEGER", "近7日在线时长（秒）"),
        ),
        (FK("user_id", "dim_user"),),
        usage=3.0,
    ),
    TableSpec(
        "dws_user_pay_1d",
        "付费用户日汇总表（每个付费用户每天一行）",
        _PAY_1D_COLS,
        _USER_FKS,
        usage=7.0,
    ),
    TableSpec(
        "dws_user_pay_7d",
        "用户近7日充值汇总表（滚动7天充值金额、次数）",
        (
            DT,
            USER,
            C("pay_amount_7d", "REAL", "近7日充值金额（元）"),
            C("pay_cnt_7d", "INTEGER", "近7日充值次数"),
        ),
        (FK("user_id", "dim_user"),),
        usage=2.5,
    ),
    TableSpec(
        "dws_user_new_1d",
        "新增用户日汇总表（按渠道、设备统计当日新增）",
        (
            DT,
            CHANNEL,
            C("device_os", "TEXT", "设备系统"),
            C("new_users", "INTEGER", "新增用户数"),
        ),
        (FK("dt", "dim_date"), FK("channel_id", "dim_channel")),
        usage=5.0,
    ),
    TableSpec(
        "dws_user_retention_1d",
        "新增用户留存汇总表（按注册日期：次留、3日留存、7日留存）",
        (
            C("register_dt", "TEXT", "注册日期"),
            CHANNEL,
            C("new_users", "INTEGER", "当日新增"),
            C("day1_retained", "INTEGER", "次日留存人数"),
            C("day3_retained", "INTEGER", "3日留存人数"),
            C("day7_retained", "INTEGER", "7日留存人数"),
        ),
        (FK("channel_id", "dim_channel"),),
        usage=4.0,
    ),
    TableSpec(
        "dws_user_churn_wi",
        "流失用户周汇总表（连续7日未登录视为流失，按自然周）",
        (
            C("week_id", "TEXT", "自然周"),
            USER,
            C("last_login_dt", "TEXT", "最后登录日期"),
            C("lifetime_pay", "REAL", "历史累计充值（元）"),
        ),
        (FK("user_id", "dim_user"),),
        usage=1.5,
    ),
    TableSpec(
        "dws_item_consume_1d",
        "道具消耗日汇总表（按道具统计消耗数量与人数）",
        (DT, ITEM, C("consume_num", "INTEGER", "消耗数量"), C("consume_users", "INTEGER", "消耗人数")),
        (FK("item_id", "dim_item"), FK("dt", "dim_date")),
        usage=2.0,
    ),
    TableSpec(
        "dws_guild_active_1d",
        "公会活跃日汇总表（活跃成员数、公会等级）",
        (DT, GUILD, C("active_members", "INTEGER", "活跃成员数"), C("guild_level", "INTEGER", "公会等级")),
        (FK("guild_id", "dim_guild"),),
        usage=1.5,
    ),
    TableSpec(
        "dws_ad_cost_1d",
        "广告消耗日汇总（按渠道：花费、激活、CPI）",
        (
            DT,
            CHANNEL,
            C("spend", "REAL", "消耗金额（元）"),
            C("installs", "INTEGER", "激活数"),
            C("cpi", "REAL", "单个激活成本 CPI"),
        ),
        (FK("channel_id", "dim_channel"),),
        usage=2.5,
    ),
    TableSpec(
        "ads_kpi_daily_1d",
        "核心指标日报（大盘：DAU、新增、付费人数、收入）",
        _KPI_COLS,
        usage=6.0,
    ),
    TableSpec(
        "ads_revenue_report_1d",
        "收入日报（充值流水、付费人数、ARPPU，按渠道）",
        _REVENUE_COLS,
        (FK("channel_id", "dim_channel"),),
        usage=6.0,
    ),
    TableSpec(
        "ads_retention_report_1d",
        "留存报表（按注册日期和渠道的次留/7留/30留率）",
        (
            C("register_dt", "TEXT", "注册日期"),
            CHANNEL,
            C("day1_rate", "REAL", "次日留存率"),
            C("day7_rate", "REAL", "7日留存率"),
            C("day30_rate", "REAL", "30日留存率"),
        ),
        (FK("channel_id", "dim_channel"),),
        usage=3.0,
    ),
    TableSpec(
        "ads_ltv_report_1d",
        "User LTV report: cumulative revenue per install cohort (LTV1/7/30)",
        (
            C("register_dt", "TEXT", "install cohort date"),
            CHANNEL,
            C("ltv_1", "REAL", "LTV day 1"),
            C("ltv_7", "REAL", "LTV day 7"),
            C("ltv_30", "REAL", "LTV day 30"),
        ),
        (FK("channel_id", "dim_channel"),),
        usage=1.5,
    ),
    TableSpec(
        "ads_ad_roi_1d",
        "广告投放ROI报表（按渠道与投放日期的回本率）",
        (
            DT,
            CHANNEL,
            C("spend", "REAL", "消耗（元）"),
            C("revenue_7d", "REAL", "7日回收收入"),
            C("roi_7d", "REAL", "7日ROI"),
        ),
        (FK("channel_id", "dim_channel"),),
        usage=2.0,
    ),
    TableSpec(
        "ads_active_user_wi",
        "周活跃用户报表（按自然周统计活跃人数）",
        (
            C("week_id", "TEXT", "自然周"),
            C("wau", "INTEGER", "周活跃用户数"),
            C("avg_active_days", "REAL", "人均活跃天数"),
        ),
        usage=2.0,
    ),
    TableSpec(
        "ads_channel_a_kpi_1d",
        "A渠道核心指标日报（活跃、新增、收入）",
        _KPI_COLS,
        usage=2.0,
    ),
    TableSpec(
        "ads_channel_b_kpi_1d",
        "B渠道核心指标日报（活跃、新增、收入）",
        _KPI_COLS,
        usage=1.5,
    ),
    TableSpec(
        "ads_channel_official_kpi_1d",
        "官方渠道核心指标日报（活跃、新增、收入）",
        _KPI_COLS,
        usage=2.0,
    ),
)


def _twin(live: TableSpec, name: str) -> TableSpec:
    """An abandoned copy of `live`: same comment and columns, another name, almost no usage."""
    return TableSpec(
        name, live.comment, live.columns, live.foreign_keys, usage=0.0, abandoned_twin_of=live.name
    )


def _by_name(tables: tuple[TableSpec, ...]) -> dict[str, TableSpec]:
    return {t.name: t for t in tables}


_CORE = DIM_TABLES + ODS_TABLES + DWD_TABLES + SUMMARY_TABLES
_CORE_BY_NAME = _by_name(_CORE)

# ---- genre tables ------------------------------------------------------------------------------
MOBA_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "dim_hero",
        "英雄维度表：英雄名称、定位（坦克/法师/射手/刺客/辅助）",
        (
            C("hero_id", "INTEGER", "英雄ID", pk=True),
            C("hero_name", "TEXT", "英雄名称"),
            C("role", "TEXT", "定位"),
        ),
        usage=3.0,
    ),
    TableSpec(
        "dwd_match_detail_di",
        "对局明细表（每局每个玩家一行：英雄、胜负、KDA、时长、模式）",
        (
            C("match_id", "TEXT", "对局ID"),
            USER,
            DT,
            C("hero_id", "INTEGER", "使用英雄ID"),
            C("mode", "TEXT", "模式：排位/匹配/娱乐"),
            C("is_win", "INTEGER", "是否胜利"),
            C("kda", "REAL", "KDA"),
            C("duration_seconds", "INTEGER", "对局时长（秒）"),
        ),
        (FK("user_id", "dim_user"), FK("hero_id", "dim_hero")),
        usage=5.0,
    ),
    TableSpec(
        "dws_hero_stats_1d",
        "英雄日汇总表（出场率、胜率、禁用率）",
        (
            DT,
            C("hero_id", "INTEGER", "英雄ID"),
            C("pick_rate", "REAL", "出场率"),
            C("win_rate", "REAL", "胜率"),
            C("ban_rate", "REAL", "禁用率"),
        ),
        (FK("hero_id", "dim_hero"),),
        usage=4.0,
    ),
    TableSpec(
        "dws_match_user_1d",
        "玩家对局日汇总表（每人每天的对局数、胜场、排位分变化）",
        (
            DT,
            USER,
            C("match_cnt", "INTEGER", "对局数"),
            C("win_cnt", "INTEGER", "胜场数"),
            C("rank_score_delta", "INTEGER", "排位分变化"),
        ),
        (FK("user_id", "dim_user"),),
        usage=4.0,
    ),
)

FARM_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "dim_crop",
        "作物维度表：作物名称、成熟时长、季节",
        (
            C("crop_id", "INTEGER", "作物ID", pk=True),
            C("crop_name", "TEXT", "作物名称"),
            C("grow_minutes", "INTEGER", "成熟时长（分钟）"),
            C("season", "TEXT", "季节"),
        ),
        usage=3.0,
    ),
    TableSpec(
        "dwd_harvest_di",
        "收获明细表（玩家每次收获作物一行）",
        (
            USER,
            DT,
            C("crop_id", "INTEGER", "作物ID"),
            C("harvest_num", "INTEGER", "收获数量"),
            C("plot_id", "INTEGER", "地块ID"),
        ),
        (FK("user_id", "dim_user"), FK("crop_id", "dim_crop")),
        usage=4.0,
    ),
    TableSpec(
        "dws_farm_order_1d",
        "订单日汇总表（NPC订单与好友订单的交付数、金币收入）",
        (
            DT,
            USER,
            C("order_type", "TEXT", "订单类型：npc / friend"),
            C("delivered_cnt", "INTEGER", "交付订单数"),
            C("coin_income", "INTEGER", "金币收入"),
        ),
        (FK("user_id", "dim_user"),),
        usage=3.0,
    ),
    TableSpec(
        "dws_farm_visit_1d",
        "Friend farm visits per user and day (steal, help water)",
        (
            DT,
            USER,
            C("visit_cnt", "INTEGER", "visits"),
            C("steal_cnt", "INTEGER", "偷菜次数"),
            C("help_cnt", "INTEGER", "help actions"),
        ),
        (FK("user_id", "dim_user"),),
        usage=2.0,
    ),
)

CARD_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "dim_card",
        "卡牌维度表：卡牌名称、稀有度（R/SR/SSR）、阵营",
        (
            C("card_id", "INTEGER", "卡牌ID", pk=True),
            C("card_name", "TEXT", "卡牌名称"),
            C("rarity", "TEXT", "稀有度 R/SR/SSR"),
            C("faction", "TEXT", "阵营"),
        ),
        usage=3.0,
    ),
    TableSpec(
        "dwd_card_draw_di",
        "抽卡明细表（每次抽卡一行：卡池、抽到的卡、是否保底）",
        (
            USER,
            DT,
            C("pool_id", "INTEGER", "卡池ID"),
            C("card_id", "INTEGER", "抽到的卡牌ID"),
            C("is_pity", "INTEGER", "是否保底"),
            C("cost_diamond", "INTEGER", "消耗钻石"),
        ),
        (FK("user_id", "dim_user"), FK("card_id", "dim_card")),
        usage=5.0,
    ),
    TableSpec(
        "dws_card_pool_1d",
        "卡池日汇总表（抽卡次数、抽卡人数、SSR出货数）",
        (
            DT,
            C("pool_id", "INTEGER", "卡池ID"),
            C("draw_cnt", "INTEGER", "抽卡次数"),
            C("draw_users", "INTEGER", "抽卡人数"),
            C("ssr_cnt", "INTEGER", "SSR出货数"),
        ),
        usage=4.0,
    ),
    TableSpec(
        "dwd_pvp_battle_di",
        "PVP对战明细表（每场天梯对战一行：卡组、胜负、段位）",
        (
            C("battle_id", "TEXT", "对战ID"),
            USER,
            DT,
            C("deck_id", "INTEGER", "卡组ID"),
            C("is_win", "INTEGER", "是否胜利"),
            C("ladder_tier", "TEXT", "天梯段位"),
        ),
        (FK("user_id", "dim_user"),),
        usage=3.0,
    ),
)


def _game(
    key: str, name_zh: str, name_en: str, genre: str, extra: tuple[TableSpec, ...], twins: dict[str, str]
) -> GameSpec:
    """Core tables + genre tables + abandoned twins (twin name -> live table name)."""
    extra_by_name = _by_name(extra)
    twin_specs = tuple(
        _twin(_CORE_BY_NAME.get(live) or extra_by_name[live], name) for name, live in twins.items()
    )
    return GameSpec(key, name_zh, name_en, genre, _CORE + extra + twin_specs)


GAMES: tuple[GameSpec, ...] = (
    _game(
        "moba",
        "星耀对决",
        "Star Clash",
        "5v5 MOBA",
        MOBA_TABLES,
        {
            "dws_user_active_1d_bak": "dws_user_active_1d",
            "tmp_dws_user_pay_1d": "dws_user_pay_1d",
            "ads_revenue_report_1d_old": "ads_revenue_report_1d",
        },
    ),
    _game(
        "farm",
        "田园物语",
        "Harvest Tales",
        "farming simulation",
        FARM_TABLES,
        {
            "dws_user_active_1d_old": "dws_user_active_1d",
            "dws_user_pay_1d_bak": "dws_user_pay_1d",
            "tmp_dwd_harvest_di": "dwd_harvest_di",
        },
    ),
    _game(
        "card",
        "幻境卡牌",
        "Mythic Cards",
        "collectible card game",
        CARD_TABLES,
        {
            "tmp_dws_user_active_1d": "dws_user_active_1d",
            "ads_revenue_report_1d_bak": "ads_revenue_report_1d",
            "dws_card_pool_1d_old": "dws_card_pool_1d",
        },
    ),
)


def game(key: str) -> GameSpec:
    for spec in GAMES:
        if spec.key == key:
            return spec
    raise KeyError(f"no demo game {key!r} (known: {[g.key for g in GAMES]})")
