"""The lake on S3-compatible object storage: deltalake through `lake.storage_options`, against an S3
server (moto's) started by the test on a free local port. Merges are idempotent, reads and time
travel work as on a local folder."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from assetmatch.config import Settings
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.models import Column, TableAsset

pytestmark = pytest.mark.integration

BUCKET = "assetmatch-test"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server on 127.0.0.1 with an empty bucket; stopped afterwards. It skips with the
    reason when the server cannot start, and fails instead under ASSETMATCH_REQUIRE_SERVICES=1 (CI,
    where moto[server] comes with the dev extras)."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer

        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    except Exception as exc:  # not installed, or no local port
        message = f"cannot start a local S3-compatible server (moto[server]): {exc!r}"
        if os.environ.get("ASSETMATCH_REQUIRE_SERVICES", "") not in ("", "0", "false"):
            pytest.fail(f"{message} (ASSETMATCH_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name=KEYS["AWS_REGION"],
        ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def asset(name: str, comment: str = "") -> TableAsset:
    return TableAsset(
        business="g1",
        source="wh",
        database="dw",
        name=name,
        comment=comment,
        columns=[Column(name="id", type="int", primary_key=True), Column(name="v", comment="value")],
    )


def test_lake_round_trips_on_s3(s3_endpoint: str) -> None:
    settings = Settings(
        lake={
            "uri": f"s3://{BUCKET}/lake",
            "storage_options": {
                **KEYS,
                "AWS_ENDPOINT_URL": s3_endpoint,
                "AWS_ALLOW_HTTP": "true",  # a local server without TLS
                "AWS_S3_ALLOW_UNSAFE_RENAME": "true",  # one writer per lake (the lake's own lock)
            },
        }
    )
    lake = Lake.from_settings(settings)

    first = lake.merge_assets([asset("a"), asset("b")], "run-1", snapshot_of="wh")
    assert (first.inserted, first.version) == (2, 0)
    again = lake.merge_assets([asset("a"), asset("b")], "run-2", snapshot_of="wh")
    assert (again.inserted, again.updated, again.unchanged, again.wrote) == (0, 0, 2, False)
    changed = lake.merge_assets([asset("a", comment="new words"), asset("b")], "run-3", snapshot_of="wh")
    assert (changed.updated, changed.version) == (1, 1)

    fresh = Lake.from_settings(settings)  # another process would see the same lake
    assert {a.asset_id: a.comment for a in fresh.read_assets()} == {"g1.dw.a": "new words", "g1.dw.b": ""}
    assert {a.asset_id: a.comment for a in fresh.read_assets(version=0)} == {"g1.dw.a": "", "g1.dw.b": ""}
    assert fresh.version(T.ASSETS) == 1
