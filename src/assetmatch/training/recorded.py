"""Validation scores kept with the adapter that gave them, so the same lists are not scored twice.

Training scores an adapter's validation lists the way serving runs it (the kept checkpoint's
check, or `train.judge_folder` for an adapter without one, such as the shared adapter calibrated
for a business), and the A/B gate then scores the same adapter on the same held-out lists again,
in the same way: on the demo, most of the promote step (121.8 s of it, 18.4 s without; 2-core CPU).
Training writes what it scored
into the adapter's folder (`SCORES_FILE`, logged to MLflow with the adapter), and `train.judge`
takes a list's logits and latency from there only where nothing that decides them changed:

- the adapter: a digest of its weight and configuration files (`adapter_digest`);
- how it ran (`Runtime`): the host, the device, the inference precision, torch's thread count and
  how many lists were scored side by side (`ranking.model.lists_at_once`), since the latency the
  gate holds against its budget is that of this machine as configured;
- what it read (`list_key`): the requirement, and for each table in coarse order its whole
  description, the past request and the database context shown beside it.

Any other list is scored, so a refitted coarse model, a table whose comment changed, another
precision or another machine means scoring afresh, never a stale score. The base model is named
in the adapter's configuration (part of the digest), not hashed: a deployment that replaces a base
under the same name must retrain its adapters anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assetmatch.models import TableAsset
from assetmatch.ranker_config import CONFIG_FILE
from assetmatch.types import Siblings

if TYPE_CHECKING:
    from assetmatch.training.evaluate import Judged

log = logging.getLogger(__name__)

SCORES_FILE = "validation_scores.json"
FORMAT = 2  # 2: the runtime names the lists scored side by side
# what decides an adapter's logits, beside the base it names: not its calibration or reports,
# which are written next to it after it was scored
_MODEL_FILES = ("adapter_config.json", CONFIG_FILE)  # PEFT's file name, and RankerConfig's
_WEIGHTS = ("*.safetensors", "*.bin")

Recorded = Mapping[str, tuple[list[float], float]]
"""list key (`list_key`) -> (logits of the list's tables in coarse order, milliseconds to score them)."""


@dataclass(frozen=True)
class Runtime:
    """Where and how an adapter was run: a recorded latency is this machine's, as configured."""

    host: str
    device: str
    precision: str
    threads: int
    side_by_side: int  # lists scored at once, each on `threads` threads

    @classmethod
    def here(cls, device: str, precision: str) -> Runtime:
        """This process now (`device` / `precision` as resolved by `ranking.model`)."""
        import torch

        from assetmatch.ranking.model import lists_at_once

        return cls(platform.node(), device, precision, torch.get_num_threads(), lists_at_once(device))


def adapter_digest(folder: str | Path) -> str:
    """sha256 over an adapter folder's weight and configuration files (names and bytes)."""
    root = Path(folder)
    files = sorted({p for pattern in _WEIGHTS for p in root.glob(pattern)} | {root / n for n in _MODEL_FILES})
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(path.name.encode("utf-8") + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def list_key(text: str, assets: Sequence[TableAsset], examples: Mapping[str, str], siblings: Siblings) -> str:
    """What a fine ranker reads for one list: the requirement and, per table in order, the table,
    its past request and its database's other tables (`train.judge_answers` passes the same)."""
    shown = [
        [
            a.model_dump(mode="json"),
            examples.get(a.asset_id, ""),
            list(siblings.get(a.asset_id) or ()),
        ]
        for a in assets
    ]
    payload = json.dumps([text, shown], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def record(folder: str | Path, judged: Iterable[Judged], runtime: Runtime, adapter: str) -> Path:
    """Write the scored lists of `judged` (those with a `key`) as the record of the adapter whose
    digest is `adapter` (`adapter_digest` of the folder that was scored) into `folder`."""
    lists = {j.key: {"logits": j.logits, "latency_ms": j.latency_ms} for j in judged if j.key}
    path = Path(folder) / SCORES_FILE
    data = {"format": FORMAT, "adapter": adapter, "runtime": asdict(runtime), "lists": lists}
    path.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    return path


def recorded(folder: str | Path, runtime: Runtime) -> Recorded:
    """The lists recorded in `folder` that may stand for scoring them again with its adapter on
    `runtime`; empty when there is no record, or it is of other weights or another runtime. A record
    that cannot be read is only a record lost (logged): the lists are scored instead."""
    path = Path(folder) / SCORES_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if (
            data.get("format") != FORMAT
            or data.get("adapter") != adapter_digest(folder)
            or data.get("runtime") != asdict(runtime)
        ):
            return {}
        return {
            str(key): ([float(v) for v in entry["logits"]], float(entry["latency_ms"]))
            for key, entry in data["lists"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        log.warning("ignoring the unreadable scores record %s (%s): its lists are scored again", path, exc)
        return {}
