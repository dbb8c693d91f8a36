"""What analysts ask of the sample warehouse: intents with their gold tables and phrasings.

An intent is one analytical need ("daily active users by channel") answered by 1-3 tables. Each
has several Chinese and English phrasings; `{p}` is replaced by a time window. The labelled
requirements, the requirement texts in the query log and the SQL of the query log are all drawn
from these intents, so the three agree with each other the way a real team's history does.

The train/test split is by intent: all phrasings of an intent land on the same side, so a test
requirement is never a paraphrase of a training one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Intent:
    """One analytical need: gold tables (names, resolved per game) and phrasings."""

    key: str
    tables: tuple[str, ...]
    zh: tuple[str, ...]
    en: tuple[str, ...]
    games: tuple[str, ...] = ()  # empty: every game
    weight: float = 1.0  # how often analysts query for it (query-log skew)

    def applies_to(self, game: str) -> bool:
        return not self.games or game in self.games


PERIODS_ZH = ("昨天", "上周", "近7天", "近30天", "本月", "过去两周", "上个月", "最近三天")
PERIODS_EN = (
    "yesterday",
    "last week",
    "the last 7 days",
    "the past 30 days",
    "this month",
    "the last two weeks",
)


def need(
    key: str, tables: str, zh: tuple[str, ...], en: tuple[str, ...], games: str = "", weight: float = 1.0
) -> Intent:
    return Intent(key, tuple(tables.split()), zh, en, tuple(games.split()), weight)


INTENTS: tuple[Intent, ...] = (
    # ---- active users --------------------------------------------------------------------------
    need("dau_trend", "dws_user_active_1d",
      ("看一下{p}的日活趋势", "{p}每天的DAU是多少", "统计{p}每日活跃用户数", "拉一下{p}普通活跃的人数，按天"),
      ("Daily active users trend for {p}", "How many DAU did we have {p}?"), weight=8),
    need("dau_by_channel", "dws_user_active_1d dim_channel",
      ("按渠道名称拆分{p}的日活", "{p}各渠道的日活跃用户对比", "每个渠道每天有多少活跃玩家"),
      ("DAU split by channel name for {p}", "Daily active players per channel")),
    need("dau_by_device", "dws_user_active_1d dim_user",
      ("{p}日活用户的设备系统和国家分布", "活跃用户里iOS和安卓各占多少", "按国家看{p}的活跃玩家"),
      ("Active users by device OS and country {p}", "Share of iOS vs Android among daily actives")),
    need("dau_holiday", "dws_user_active_1d dim_date",
      ("节假日和周末的日活对比", "{p}工作日与周末活跃人数差异", "国庆假期期间日活有没有上涨"),
      ("Compare DAU on weekends and holidays vs weekdays", "Did daily actives rise during the holiday?")),
    need("wau_rolling", "dws_user_active_7d",
      ("最近7天滚动活跃天数分布", "近7日活跃天数大于5天的核心玩家有多少", "每个玩家近一周在线时长"),
      ("Rolling 7-day active days per player", "Core players active 5+ of the last 7 days")),
    need("wau_weekly_report", "ads_active_user_wi",
      ("按自然周统计周活跃用户数", "周活WAU周报", "每周的活跃人数和人均活跃天数"),
      ("Weekly active users by calendar week", "WAU weekly report")),
    need("online_time_server", "dwd_user_login_di dim_server",
      ("各区服玩家的平均在线时长", "{p}每个区服的登录次数", "哪个大区的玩家在线最久"),
      ("Average online time per server {p}", "Logins per server and region")),
    need("new_server_login", "dwd_user_login_di dim_server dim_user",
      ("新开服的区服登录玩家的VIP等级分布", "新服玩家来自哪些国家", "{p}新开区服登录用户画像"),
      ("Profile of players logging into newly opened servers", "VIP levels of players on new servers"), weight=0.6),
    need("raw_login_ip", "ods_login_log_di",
      ("排查原始登录日志里的异常IP", "同一设备ID多账号登录的原始记录", "客户端上报的登录日志原始数据"),
      ("Raw client login logs to check suspicious IPs", "Multiple accounts per device id in raw login logs"),
      weight=0.4),
    # ---- paying users and revenue --------------------------------------------------------------
    need("paying_users", "dws_user_pay_1d",
      ("{p}每天的付费用户数", "{p}有多少人充值了", "每日付费人数和人均充值次数"),
      ("Number of paying users per day {p}", "How many players paid {p}?"), weight=6),
    need("pay_by_channel", "dws_user_pay_1d dim_channel",
      ("按渠道统计{p}付费人数", "各渠道付费用户对比", "哪个渠道的付费玩家最多"),
      ("Paying users by channel {p}", "Which channel brings the most payers?")),
    need("pay_rate", "dws_user_active_1d dws_user_pay_1d",
      ("{p}的付费率（付费用户/日活）", "活跃用户中付费的比例", "每天付费渗透率"),
      ("Daily pay rate: payers over DAU {p}", "Share of active users who paid")),
    need("first_pay_orders", "dwd_pay_order_di",
      ("{p}首充订单明细", "首充用户的充值金额分布", "首次付费的订单列表"),
      ("First-purchase orders {p}", "Distribution of first top-up amounts")),
    need("pay_by_item", "dwd_pay_order_di dim_item",
      ("各礼包的充值金额排行", "{p}哪个礼包卖得最好", "按商品统计充值订单数"),
      ("Top-up revenue per gift pack {p}", "Best-selling packs by order count")),
    need("whale_users", "dws_user_pay_7d dim_user",
      ("大R用户近7天充值排行", "近一周充值超过1000元的玩家名单及VIP等级", "鲸鱼用户的国家分布"),
      ("Top spenders (whales) over the last 7 days", "List of big spenders with their VIP level")),
    need("revenue_daily", "ads_revenue_report_1d",
      ("{p}收入日报", "{p}每天的充值流水", "每日流水和ARPPU走势"),
      ("Daily revenue report {p}", "Revenue and ARPPU trend {p}"), weight=6),
    need("revenue_by_channel", "ads_revenue_report_1d dim_channel",
      ("按渠道名称看{p}的收入", "各渠道流水占比", "渠道分组维度的充值收入"),
      ("Revenue by channel name {p}", "Revenue share of each channel group")),
    need("raw_pay_reconcile", "ods_pay_order_di",
      ("支付网关回调的原始订单对账", "查一下重复回调的支付订单", "含测试单的原始支付数据"),
      ("Reconcile raw payment gateway callbacks", "Find duplicate gateway callbacks"), weight=0.4),
    # ---- new users, retention, churn, LTV -----------------------------------------------------
    need("new_users_daily", "dws_user_new_1d",
      ("{p}每天新增用户数", "{p}新增注册人数趋势", "每日拉新人数按设备拆分"),
      ("New users per day {p}", "Daily new registrations by device")),
    need("new_by_channel", "dws_user_new_1d dim_channel",
      ("按渠道名称统计{p}新增", "各渠道带来的新用户数", "哪个渠道拉新最多"),
      ("New users by channel name {p}", "Which channel acquired the most new players?")),
    need("new_user_profile", "dwd_user_register_di dim_user",
      ("新注册用户的国家和VIP等级明细", "{p}新用户画像", "注册账号明细及其当前VIP等级"),
      ("Profile of newly registered accounts", "New sign-ups with country and current VIP level")),
    need("retention_counts", "dws_user_retention_1d",
      ("每个注册日期的次留和7日留存人数", "{p}新增用户的次日留存人数", "3日留存人数按注册日期"),
      ("Day-1 and day-7 retained users per install date", "How many new users came back the next day?")),
    need("retention_rate_channel", "ads_retention_report_1d dim_channel",
      ("按渠道看留存率报表", "各渠道30日留存率对比", "哪个渠道的次留率最高"),
      ("Retention rate report by channel", "Compare 30-day retention across channels")),
    need("churned_users", "dws_user_churn_wi dim_user",
      ("上周流失用户名单及其VIP等级", "连续7天没登录的玩家有哪些", "流失玩家的国家分布"),
      ("Churned players last week with their VIP level", "Who stopped logging in for 7 days?")),
    need("churned_whales", "dws_user_churn_wi dws_user_pay_7d",
      ("流失的大R用户有哪些", "流失前一周还在充值的玩家", "高付费玩家的流失情况"),
      ("Which big spenders churned?", "Churned players who still paid the week before"), weight=0.6),
    need("ltv_cohort", "ads_ltv_report_1d",
      ("新用户LTV7和LTV30", "按注册批次看LTV", "{p}注册用户的生命周期价值"),
      ("LTV by install cohort", "Day-30 LTV of users acquired {p}")),
    # ---- items, guilds ------------------------------------------------------------------------
    need("item_consume_rank", "dws_item_consume_1d dim_item",
      ("{p}道具消耗排行", "哪些道具消耗最多", "按道具类型统计消耗人数"),
      ("Most consumed items {p}", "Item consumption by item type")),
    need("item_flow_player", "dwd_item_flow_di dim_item",
      ("某个玩家的道具获取与消耗流水", "活动奖励发放了多少道具", "道具变动原因明细"),
      ("Item gain and spend history of a player", "Items granted as event rewards")),
    need("guild_activity", "dws_guild_active_1d dim_guild",
      ("{p}公会活跃度排行", "活跃成员最多的公会", "各公会等级与活跃人数"),
      ("Most active guilds {p}", "Guild level and active members")),
    need("guild_membership", "dwd_guild_member_di dim_guild",
      ("公会成员加入和退出明细", "{p}哪些公会流失成员最多", "公会职位变动记录"),
      ("Guild joins and leaves {p}", "Which guilds lost the most members?")),
    # ---- channels, ads, KPI -------------------------------------------------------------------
    need("kpi_overview", "ads_kpi_daily_1d",
      ("{p}大盘核心指标日报", "每天的DAU、新增、付费和收入汇总", "给老板看的核心数据日报"),
      ("Daily KPI overview {p}", "Headline metrics: DAU, new users, payers, revenue"), weight=5),
    need("channel_a_report", "ads_channel_a_kpi_1d",
      ("A渠道{p}的日报", "渠道A的活跃和收入", "A渠道核心数据"),
      ("Channel A daily report {p}", "Channel A actives and revenue")),
    need("channel_b_report", "ads_channel_b_kpi_1d",
      ("B渠道{p}的日报", "渠道B新增和收入", "B渠道核心数据"),
      ("Channel B daily report {p}", "Channel B new users and revenue")),
    need("channel_official_report", "ads_channel_official_kpi_1d",
      ("官方渠道{p}的日报", "官服的活跃和收入", "官方渠道核心数据"),
      ("Official channel daily report {p}", "Official store actives and revenue")),
    need("ad_spend_daily", "dws_ad_cost_1d",
      ("{p}每天的买量消耗", "广告花费和CPI走势", "每日投放激活成本"),
      ("Daily ad spend and CPI {p}", "User-acquisition cost per install")),
    need("ad_campaign_detail", "dwd_ad_spend_di dim_channel",
      ("各广告计划的曝光点击激活明细", "{p}每个投放计划的点击率", "按渠道看广告计划效果"),
      ("Impressions, clicks and installs per campaign {p}", "Campaign click-through rate by channel")),
    need("ad_roi", "ads_ad_roi_1d",
      ("{p}广告投放ROI", "买量回本情况，7日ROI", "各投放日期的回收率"),
      ("Ad ROI {p}", "7-day return on ad spend")),
    need("ad_roi_vs_ltv", "ads_ad_roi_1d ads_ltv_report_1d",
      ("广告ROI和LTV对照看", "投放回收与新用户LTV对比", "买量成本和LTV30的比较"),
      ("Compare ad ROI with cohort LTV", "Ad spend payback vs LTV30"), weight=0.6),
    # ---- MOBA -----------------------------------------------------------------------------------
    need("hero_winrate", "dws_hero_stats_1d dim_hero",
      ("{p}各英雄的胜率和出场率", "哪个英雄禁用率最高", "按英雄定位看胜率"),
      ("Hero win rate and pick rate {p}", "Most banned heroes"), games="moba", weight=4),
    need("match_per_player", "dws_match_user_1d",
      ("{p}每个玩家每天打几局", "玩家日均对局数和胜场", "排位分变化最大的玩家"),
      ("Matches per player per day {p}", "Biggest ranked score changes"), games="moba", weight=3),
    need("match_duration_mode", "dwd_match_detail_di",
      ("各模式的平均对局时长", "{p}排位赛的平均KDA", "对局明细里娱乐模式的胜负"),
      ("Average match duration per mode", "Average KDA in ranked matches {p}"), games="moba", weight=2),
    need("hero_by_player_level", "dwd_match_detail_di dim_hero dim_user",
      ("高VIP玩家最常用的英雄", "不同国家玩家偏好的英雄定位", "VIP等级高的玩家都玩什么英雄"),
      ("Favourite heroes of high-VIP players", "Hero roles preferred by country"), games="moba"),
    # ---- farming sim ----------------------------------------------------------------------------
    need("crop_harvest", "dwd_harvest_di dim_crop",
      ("{p}各作物的收获量", "哪种作物种得最多", "按季节统计收获数量"),
      ("Harvest volume per crop {p}", "Most planted crops by season"), games="farm", weight=4),
    need("farm_orders", "dws_farm_order_1d",
      ("{p}订单交付数和金币收入", "NPC订单和好友订单的交付对比", "每个玩家每天交付多少订单"),
      ("Delivered orders and coin income {p}", "NPC vs friend orders"), games="farm", weight=3),
    need("farm_visits", "dws_farm_visit_1d",
      ("玩家互访和偷菜次数", "{p}好友帮忙浇水的次数", "每天偷菜最多的玩家"),
      ("Friend visits and crop stealing {p}", "Who steals the most crops?"), games="farm", weight=2),
    need("harvest_by_vip", "dwd_harvest_di dim_crop dim_user",
      ("高VIP玩家偏爱种什么作物", "不同国家玩家的收获作物分布", "VIP等级高的玩家的种植偏好"),
      ("Crops preferred by high-VIP players", "Harvested crops by player country"), games="farm"),
    # ---- card game ------------------------------------------------------------------------------
    need("pool_draws", "dws_card_pool_1d",
      ("{p}每个卡池的抽卡次数", "卡池抽卡人数和SSR出货数", "新卡池上线后的抽卡热度"),
      ("Draws per card pool {p}", "Pool draw users and SSR drops"), games="card", weight=4),
    need("ssr_rate", "dwd_card_draw_di dim_card",
      ("SSR的实际出货率", "{p}保底抽到的是哪些卡", "按稀有度统计抽卡结果"),
      ("Actual SSR drop rate", "Cards obtained from pity draws {p}"), games="card", weight=3),
    need("deck_winrate", "dwd_pvp_battle_di",
      ("各卡组的天梯胜率", "{p}不同段位的对战胜负", "PVP对战明细里的卡组使用率"),
      ("Ladder win rate per deck", "PVP results by tier {p}"), games="card", weight=3),
    need("draw_by_vip", "dwd_card_draw_di dim_card dim_user",
      ("高VIP玩家抽到的SSR分布", "不同国家玩家抽卡的稀有度分布", "VIP等级高的玩家抽卡消耗的钻石"),
      ("SSR pulls of high-VIP players", "Card rarity pulled by player country"), games="card"),
)  # fmt: skip


def intents_for(game: str) -> list[Intent]:
    """The intents that apply to one game, in a fixed order."""
    return [i for i in INTENTS if i.applies_to(game)]
