"""A stand-in recall index for Matcher tests: a fixed list of tables, every one a lexical hit, and a
record of what each recall asked (the businesses, whether the requirement's own past entries were
left out of the vote, which tables were taken as never used, and the databases). Subclasses change the hits or the join graph."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from assetmatch.matching.types import Hit
from assetmatch.models import TableAsset


class ListIndex:
    """Answers `recall` with every table of `assets` (best first, in list order), whatever the
    businesses and databases asked: a path that ignored them would look like this, so a Matcher must
    isolate."""

    def __init__(self, assets: Sequence[TableAsset], version: str = "test") -> None:
        self.assets = {a.asset_id: a for a in assets}
        self.manifest = {"version": version, "id": version}
        self.asked: list[list[str]] = []  # each recall's businesses
        self.left_own_out: list[bool] = []  # each recall's leave_own_out
        self.unused: list[list[str]] = []  # each recall's unused_tables
        self.scopes: list[list[str] | None] = []  # each recall's databases

    def hits(self) -> list[Hit]:
        return [Hit(a, float(len(self.assets) - i), i + 1, "lexical") for i, a in enumerate(self.assets)]

    def recall(
        self,
        text: str,
        businesses: Collection[str],
        k: int = 50,
        paths: Sequence[str] | None = None,
        leave_own_out: bool = False,
        unused_tables: Collection[str] = (),
        databases: Collection[str] | None = None,
    ) -> dict[str, list[Hit]]:
        self.asked.append(list(businesses))
        self.left_own_out.append(leave_own_out)
        self.unused.append(list(unused_tables))
        self.scopes.append(None if databases is None else sorted(databases))
        return {"lexical": self.hits()}

    def used_tables(self) -> list[str]:
        return []  # no past request used any table

    def expand(
        self,
        seeds: Mapping[str, float],
        businesses: Collection[str],
        k: int = 20,
        unused_tables: Collection[str] = (),
        databases: Collection[str] | None = None,
    ) -> list[Hit]:
        return []

    def holds_database(self, businesses: Collection[str], database: str) -> bool:
        return any(a.business in businesses and a.database == database for a in self.assets.values())

    def neighbors(self, asset_id: str) -> set[str]:
        return set()
