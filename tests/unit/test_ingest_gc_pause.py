"""The cyclic-GC pause around catalog reads restores the collector's state, also across threads."""

from __future__ import annotations

import gc
import threading

from assetmatch.ingest import _CyclicGcPause


def test_pause_restores_enabled_collector_after_nested_and_threaded_use() -> None:
    pause = _CyclicGcPause()
    assert gc.isenabled()
    entered, release = threading.Event(), threading.Event()

    def other_source() -> None:
        with pause():
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=other_source)
    with pause():
        assert not gc.isenabled()
        worker.start()
        assert entered.wait(5)
    assert not gc.isenabled()  # the other read still runs
    release.set()
    worker.join(5)
    assert gc.isenabled()


def test_pause_leaves_a_disabled_collector_disabled() -> None:
    pause = _CyclicGcPause()
    gc.disable()
    try:
        with pause():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pause_restores_the_collector_when_the_read_raises() -> None:
    pause = _CyclicGcPause()
    try:
        with pause():
            raise RuntimeError("source failed")
    except RuntimeError:
        pass
    assert gc.isenabled()
