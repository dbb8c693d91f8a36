"""Tokenizer: identifiers, English, Chinese, mixed and full-width text, CC-CEDICT glosses."""

from __future__ import annotations

import pytest

from assetmatch.recall.tokenize import (
    gloss_sentence,
    has_cjk,
    split_identifier,
    tokenize,
    translate_zh,
    weighted_gloss_tokens,
)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("dws_user_active_1d", ["user", "active", "1d"]),
        ("ods_pay_order_di", ["pay", "order"]),
        ("dim_user", ["user"]),
        ("OrderItemID", ["order", "item", "id"]),
        ("HTTPServerLog", ["http", "server", "log"]),
        ("user2id", ["user", "2", "id"]),
        ("music.Singer_in_Concert", ["music", "singer", "in", "concert"]),
        ("ods", ["ods"]),  # a bare prefix is a word, not a prefix
        ("", []),
    ],
)
def test_split_identifier(name: str, words: list[str]) -> None:
    assert split_identifier(name) == words


def test_english_is_lowercased_stemmed_and_stop_words_dropped() -> None:
    assert tokenize("Show the Names of all Students who have Pets") == ["name", "student", "pet"]


def test_identifiers_inside_text_are_split() -> None:
    assert tokenize("rows of dws_user_active_1d") == ["row", "user", "activ", "1d"]


def test_chinese_is_cut_with_jieba_and_function_words_dropped() -> None:
    tokens = tokenize("哪些用户的支付金额最高？")
    assert "用户" in tokens and "支付" in tokens and "金额" in tokens
    assert not {"哪些", "的", "最", "？"} & set(tokens)


def test_long_chinese_words_add_character_bigrams() -> None:
    tokens = tokenize("注册渠道转化率")
    assert {"注册", "渠道"} <= set(tokens)
    # whatever jieba makes of 转化率, its bigrams are there, so 转化 in a comment still matches
    assert "转化" in tokens


def test_mixed_and_full_width_text() -> None:
    # full-width Latin letters and digits are folded (NFKC) before tokenizing
    assert tokenize("ＤＡＵ按渠道") == tokenize("DAU按渠道")
    tokens = tokenize("DAU按渠道")
    assert tokens[0] == "dau" and "渠道" in tokens


def test_has_cjk() -> None:
    assert has_cjk("A渠道") and not has_cjk("plain English, ümlaut")


def test_translate_zh_glosses_content_words_and_drops_question_words() -> None:
    glosses = translate_zh("每一个养猫或狗的学生的名字是什么？")
    assert {"cat", "dog", "student", "name"} <= set(glosses)
    assert translate_zh("我们有多少歌手？") == ["singer"]


def test_translate_zh_is_empty_for_non_cjk_text() -> None:
    assert translate_zh("how many singers do we have?") == []
    assert gloss_sentence("how many singers") == ""
    assert weighted_gloss_tokens("how many singers") == {}


def test_gloss_sentence_keeps_latin_pieces_in_order() -> None:
    sentence = gloss_sentence("歌手的DAU")
    assert sentence.startswith("singer") and sentence.endswith("DAU")


def test_each_chinese_word_weighs_one_in_total() -> None:
    weights = weighted_gloss_tokens("国家和歌手")  # two content words
    assert sum(weights.values()) == pytest.approx(2.0)
    assert weights["singer"] == pytest.approx(1.0)
    assert "countri" in weights  # stemmed like the English index
