"""The Dask path of dense embedding (`assetmatch.recall.distributed`) on a real LocalCluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from assetmatch.config import RecallConfig
from assetmatch.recall.distributed import embed_texts, encoder_loads
from assetmatch.recall.encoder import EncoderSpec, encode


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes of one thread: the smallest cluster where chunks really spread."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=0
    ) as local:
        yield local


def test_dask_vectors_equal_in_process_vectors(cluster: Any, encoder: Any) -> None:
    texts = [
        "dws_user_active_1d: 日活跃用户汇总; user_id 用户ID, active_days 活跃天数",
        "dwd_pay_order_di: payment orders; order_id, user_id, pay_amount 支付金额",
        "dim_user: user dimension; user_id, register_channel 注册渠道",
        "dim_item: game items; item_id, item_name",
        "singer: singer; Singer_ID, Name, Country, Age",
        "concert: concert; concert_ID, concert_Name, Year",
        "singer_in_concert; concert_ID, Singer_ID",
        "whales by total recharge",
        "每日活跃用户",
        "daily active users per channel",
    ]
    recall = RecallConfig(dask_address=cluster.scheduler_address, dask_chunk_size=3)
    done: list[int] = []
    on_dask = embed_texts(EncoderSpec(), texts, recall, advance=done.append, use_dask=True)
    in_process = encode(encoder, texts)
    assert on_dask.shape == in_process.shape == (len(texts), 384)
    np.testing.assert_allclose(on_dask, in_process, atol=1e-5)
    assert sum(done) == len(texts) and len(done) == 4  # one progress step per chunk of 3

    from distributed import Client

    with Client(cluster.scheduler_address) as client:
        loads = client.run(encoder_loads)  # worker address -> encoder loads in that process
    assert len(loads) == 2
    assert all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1  # once per process, not per chunk


def test_small_jobs_stay_in_process(encoder: Any) -> None:
    recall = RecallConfig(dask_address="tcp://127.0.0.1:1", dask_min_tables=100)  # unreachable: never used
    vectors = embed_texts(EncoderSpec(), ["daily active users"], recall)
    np.testing.assert_allclose(vectors, encode(encoder, ["daily active users"]), atol=1e-6)


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    import dask

    from assetmatch.recall.distributed import dask_client

    recall = RecallConfig(dask_address="tcp://127.0.0.1:9")  # discard port: nothing listens
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(ConnectionError, match=r"recall.dask_address tcp://127.0.0.1:9 is unreachable"),
        dask_client(recall),
    ):
        pass
