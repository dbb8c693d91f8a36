"""RankerConfig, where the ranking code looks for it. It is defined at the bottom of the package
(`assetmatch.ranker_config`, standard library only) so that `assetmatch.config` can check the
`training.ranker` overrides against it when the settings load."""

from assetmatch.ranker_config import AUTO_TARGETS, CONFIG_FILE, DEFAULT_BASE, RankerConfig

__all__ = ["AUTO_TARGETS", "CONFIG_FILE", "DEFAULT_BASE", "RankerConfig"]
