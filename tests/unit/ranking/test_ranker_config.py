"""RankerConfig: help on every field, validation errors that name the field, JSON round trip."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from assetmatch.ranking.config import RankerConfig


def test_every_field_has_help() -> None:
    assert all(f.metadata.get("help") for f in fields(RankerConfig))


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"lora_r": 0}, "lora_r"),
        ({"max_length": 4}, "max_length"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"validation_fraction": 0.9}, "validation_fraction"),
        ({"device": "tpu"}, "device"),
        ({"target_modules": []}, "target_modules"),
        ({"hard_negatives": 0, "random_negatives": 0}, "hard_negatives"),
        ({"max_steps": -1}, "max_steps"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        RankerConfig(**kwargs)  # type: ignore[arg-type]


def test_save_load_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    config = RankerConfig(lora_r=4, target_modules=["query"], max_steps=7)
    config.save(tmp_path)
    assert RankerConfig.load(tmp_path) == config
    assert config.to_params()["ranker.target_modules"] == "query"
    with pytest.raises(ValueError, match="unknown field"):
        RankerConfig.from_dict({"lora_rank": 4})
    with pytest.raises(FileNotFoundError, match="not a ranker adapter folder"):
        RankerConfig.load(tmp_path / "missing")
