"""The serving state: everything one answer depends on, immutable, swapped by one reference.

A `ServingState` holds the index version, the Matcher of each A/B arm and the model version of
every (business, arm). Requests read `holder.current` once and use that object to the end, so a hot
swap never mixes versions inside one answer. `StateHolder` also counts in-flight requests per
state, so adapters only the old state used are unloaded once its last request has finished.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from assetmatch.matching.types import MatchResult
from assetmatch.serving.schemas import Arm


class MatchEngine(Protocol):
    """What serving needs from `assetmatch.matching.matcher.Matcher`."""

    def match(
        self, business: str, text: str, k: int = 10, databases: Collection[str] | None = None
    ) -> MatchResult: ...


@dataclass(frozen=True)
class ModelRef:
    """One registered ranker version of one business, on one arm."""

    business: str
    arm: Arm
    version: str
    path: str = ""  # local adapter folder

    @property
    def adapter_name(self) -> str:
        """Name inside the shared scorer: per version, so old and new coexist during a swap."""
        return f"{self.business}@{self.version}"


@dataclass(frozen=True)
class Versions:
    """What the watcher compares: the index id and every (business, arm, version)."""

    index: str
    models: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def of(cls, index: str, refs: Mapping[tuple[str, str], ModelRef]) -> Versions:
        return cls(index, tuple(sorted((b, a, r.version) for (b, a), r in refs.items())))


class _Counter:
    """In-flight requests on one state (mutable, but outside the frozen state's identity)."""

    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()


@dataclass(frozen=True)
class BusinessInfo:
    name: str
    description: str = ""


@dataclass(frozen=True)
class ServingState:
    """Immutable: a new version is a new object, never an edit of this one."""

    versions: Versions
    engines: Mapping[str, MatchEngine]  # arm -> engine ("champion" always present)
    models: Mapping[tuple[str, str], ModelRef]  # (business, arm) -> model
    businesses: tuple[BusinessInfo, ...]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    loaded_at: float = field(default_factory=time.time)
    inflight: _Counter = field(default_factory=_Counter, compare=False, repr=False)

    @property
    def index_version(self) -> str:
        return self.versions.index

    def model(self, business: str, arm: str) -> ModelRef | None:
        return self.models.get((business, arm))

    def has_challenger(self, business: str) -> bool:
        return (business, "challenger") in self.models and "challenger" in self.engines

    def adapter_names(self) -> set[str]:
        return {ref.adapter_name for ref in self.models.values()}

    def business_names(self) -> list[str]:
        return [b.name for b in self.businesses]


class StateHolder:
    """The one mutable reference to the current state, plus the latest reload outcome."""

    def __init__(self) -> None:
        self._state: ServingState | None = None
        self.last_error: str | None = None  # message of the latest failed load (None after a success)
        self.last_attempt: float | None = None

    @property
    def current(self) -> ServingState | None:
        return self._state

    def swap(self, new: ServingState) -> ServingState | None:
        """Make `new` current (one reference assignment: atomic for readers); returns the old one."""
        old, self._state = self._state, new
        self.last_error = None
        return old

    @contextmanager
    def use(self) -> Iterator[ServingState]:
        """The current state, counted as in flight until the block ends."""
        state = self._state
        if state is None:
            raise StateUnavailable("no serving state is loaded yet")
        with state.inflight.lock:
            state.inflight.value += 1
        try:
            yield state
        finally:
            with state.inflight.lock:
                state.inflight.value -= 1


class StateUnavailable(RuntimeError):
    """Nothing is loaded (startup, or the first load failed)."""
