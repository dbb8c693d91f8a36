"""A coroutine run every `interval_s` seconds in the server's event loop, until stopped.

The key watcher and the reloader both poll on the reload interval; this is their one loop. (Not
APScheduler or similar: one `asyncio.sleep` loop per watcher needs no scheduler, and its task is
cancelled with the server's lifespan.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


class Periodic:
    """Runs `action()` every `interval_s` (never when `interval_s` is 0) as one named asyncio task."""

    def __init__(self, action: Callable[[], Awaitable[Any]], interval_s: float, name: str) -> None:
        self.action = action
        self.interval_s = interval_s
        self.name = name
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.action()

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped (None: nothing to do)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
