"""The query-time encoder (numpy BERT) gives sentence-transformers' vectors, and the same rankings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assetmatch.recall.encoder import EncoderSpec, encode, load_query_encoder, model_path, query_vectors
from assetmatch.recall.query_encoder import NumpyBertEncoder, numpy_support

TEXTS = [
    "上周A渠道的付费用户数",
    "paying users last week by channel",
    "  surrounded by spaces  ",
    "",
    "dws_user_active_1d 日活跃用户汇总 daily active users",
    "How many heads of the departments are older than 56 ?",
    "card " * 300,  # longer than the token budget: truncated the same way
]

TABLES = [
    "dws_user_active_1d: 日活跃用户汇总; columns user_id 用户ID, active_days 活跃天数",
    "dwd_pay_order_di: 支付订单明细; columns order_id, user_id, amount 金额, channel 渠道",
    "dim_channel: 渠道维表; columns channel_id, channel_name",
    "ads_new_user_7d: 周新增用户; columns user_id, first_login",
    "songs: title, artist, release year",
    "concerts: stadium, year, singers",
]


def test_the_packaged_encoder_runs_in_numpy() -> None:
    assert numpy_support(model_path(EncoderSpec().name)) == ""
    assert isinstance(load_query_encoder(EncoderSpec()), NumpyBertEncoder)


def test_numpy_vectors_equal_sentence_transformers(encoder: Any) -> None:
    fast = load_query_encoder(EncoderSpec())
    together = fast.encode(TEXTS)
    reference = encode(encoder, TEXTS)
    assert together.shape == reference.shape and together.dtype == np.float32
    assert np.abs(together - reference).max() < 1e-5
    for text, row in zip(TEXTS, reference):  # alone (no padding) too
        assert np.abs(fast.encode([text])[0] - row).max() < 1e-5
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_same_ranking_of_tables(encoder: Any) -> None:
    fast = load_query_encoder(EncoderSpec())
    tables = encode(encoder, TABLES)
    for query in TEXTS[:6]:
        expected = np.argsort(-(tables @ encode(encoder, [query])[0]), kind="stable")
        got = np.argsort(-(tables @ fast.encode([query])[0]), kind="stable")
        assert list(got) == list(expected), query


def test_an_unrecognised_model_is_left_to_sentence_transformers(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_path(EncoderSpec().name), folder)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text(encoding="utf-8"))
    pooling.write_text(
        json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}),
        encoding="utf-8",
    )
    assert "pooling" in numpy_support(folder)
    (folder / "model.safetensors").unlink()
    assert "model.safetensors" in numpy_support(folder)


@pytest.mark.parametrize("empty", [[], ()])
def test_no_text_no_rows(empty: list[str]) -> None:
    assert load_query_encoder(EncoderSpec()).encode(empty).shape == (0, 384)


def test_query_vectors_are_encoded_once_per_process() -> None:
    spec = EncoderSpec()
    texts = ("上周A渠道的付费用户数 (cache test)", "paying users by channel (cache test)")
    before = query_vectors.cache_info()
    first = query_vectors(spec, texts)
    again = query_vectors(spec, texts)
    after = query_vectors.cache_info()
    assert again is first  # the second ask is answered from memory
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert np.array_equal(first, load_query_encoder(spec).encode(list(texts)))
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 0.0  # shared by every caller: nobody may change it


def test_recall_encodes_every_query_when_the_cache_is_off(built: Any) -> None:
    """`recall.cache_query_vectors: false` (what the latency benchmarks set): nothing from memory."""
    from assetmatch.config import Settings
    from assetmatch.matching.matcher import Matcher

    settings = Settings(
        lake={"uri": str(built.folder.parent.parent / "lake")},
        recall={"index_root": str(built.folder.parent), "cache_query_vectors": False},
    )
    index = Matcher.from_settings(settings).index
    assert index.cache_query_vectors is False
    text = "singers and their concerts (no cache)"
    before = query_vectors.cache_info()
    for _ in range(2):
        index.recall(text, ["music"])
    assert query_vectors.cache_info() == before
    index.cache_query_vectors = True  # the default
    for _ in range(2):
        index.recall(text, ["music"])
    after = query_vectors.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
