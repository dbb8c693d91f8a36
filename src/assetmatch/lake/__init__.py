"""The Delta lake: table schemas (`tables`) and the `Lake` handle (`delta`)."""

from assetmatch.lake.delta import Lake, MergeResult

__all__ = ["Lake", "MergeResult"]
