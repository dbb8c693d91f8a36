"""Train one business's LoRA fine ranker. `train_business` reads top to bottom as numbered steps:

 1. load      the shared base model (seeded), frozen, with a fresh LoRA adapter
 2. data      labelled requirements (+ synthetic ones) -> (requirement, table, label) pairs
 3. hard negatives  recall candidates that are not gold (counted per kind)
 4. baseline  evaluate coarse-only ranking and the current champion on the validation requirements
 5. train     listwise loss (BCE + per-requirement softmax), AdamW, warm-up/decay, bf16 on GPU
 6. evaluate  score validation candidates, fit the logit + coarse-rank fusion, calibrate the
              set-selection threshold on the fused probabilities
 7. save      adapter + RankerConfig + calibration + eval report + plot in one folder

`run_training` adds step 0 (read the lake) and step 8 (log to MLflow, register as `challenger`).
The core takes requirements, assets and a candidate function as arguments, so it runs the same
from the CLI, a Prefect task, a benchmark or a test.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assetmatch.models import TableAsset
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import Fusion, read_calibration, write_calibration
from assetmatch.training import evaluate as ev
from assetmatch.training.pairs import Candidates, LabelledRequirement, Pair, TrainingData, build_pairs


@dataclass
class FitStats:
    steps: int
    seconds: float
    losses: list[float]
    pairs: int
    pair_kinds: dict[str, int]


@dataclass
class TrainResult:
    """What a training run produced: the adapter folder and everything to log about it."""

    business: str
    adapter_dir: Path
    config: RankerConfig
    fit: FitStats
    threshold: float
    reports: dict[str, ev.EvalReport]  # coarse_only, champion (if any), challenger
    data_counts: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "train_seconds": self.fit.seconds,
            "train_steps": float(self.fit.steps),
            "train_pairs": float(self.fit.pairs),
            "final_loss": self.fit.losses[-1] if self.fit.losses else 0.0,
            "threshold": self.threshold,
        }
        for name, rep in self.reports.items():
            out.update({f"{name}.{k}": v for k, v in rep.means().items()})
        return out


def _batches(pairs: list[Pair], config: RankerConfig, generator: Any) -> Iterator[list[Pair]]:
    """One epoch of batches. Listwise loss needs a requirement's pairs together: batches are whole
    requirement groups (about `batch_size` pairs each); pointwise BCE takes pairs in any order."""
    import torch

    if config.loss == "bce":
        order = torch.randperm(len(pairs), generator=generator).tolist()
        for i in range(0, len(order), config.batch_size):
            yield [pairs[j] for j in order[i : i + config.batch_size]]
        return
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.requirement_id, []).append(p)
    keys = list(groups)
    batch: list[Pair] = []
    for j in torch.randperm(len(keys), generator=generator).tolist():
        batch.extend(groups[keys[j]])
        if len(batch) >= config.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def pair_loss(logits: Any, batch: list[Pair], loss: str) -> Any:
    """BCE on every pair; `listwise` adds, per requirement, the softmax cross-entropy of its gold
    tables against its negatives (-log sum_gold e^s / sum_all e^s): the ranking signal that
    pointwise BCE dilutes when most pairs are negatives."""
    import torch

    labels = torch.tensor([p.label for p in batch], dtype=torch.float32, device=logits.device)
    out = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    if loss == "bce":
        return out
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(batch):
        groups.setdefault(p.requirement_id, []).append(i)
    terms = []
    for idx in groups.values():
        s = logits[idx]
        gold = labels[idx] > 0.5
        if gold.any() and not gold.all():
            terms.append(torch.logsumexp(s, 0) - torch.logsumexp(s[gold], 0))
    if terms:
        out = out + torch.stack(terms).mean()
    return out


def fit_adapter(
    peft_model: Any,
    tokenizer: Any,
    pairs: list[Pair],
    documents: dict[tuple[str, str], str],
    config: RankerConfig,
    device: str,
    progress: Any = None,
) -> FitStats:
    """Step 5: train the adapter's parameters (the base stays frozen) on `config.loss`."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    steps_per_epoch = sum(1 for _ in _batches(pairs, config, torch.Generator().manual_seed(0)))
    total = config.max_steps or steps_per_epoch * config.epochs  # max_steps overrides epochs (as in HF)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * config.warmup_ratio), max(1, total))
    generator = torch.Generator().manual_seed(config.seed)
    peft_model.train()
    losses: list[float] = []
    step, start = 0, time.perf_counter()
    task = progress.add_task("training", total=total) if progress is not None else None
    while step < total:
        for batch in _batches(pairs, config, generator):
            if step >= total:
                break
            enc = tokenizer(
                [p.text for p in batch],
                [documents[(p.text, p.asset_id)] for p in batch],
                truncation="only_second",
                max_length=config.max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = peft_model(**enc).logits.view(-1)
            loss = pair_loss(logits.float(), batch, config.loss)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if task is not None:
                progress.update(task, advance=1, description=f"training loss {losses[-1]:.3f}")
    peft_model.eval()
    kinds: Counter[str] = Counter(p.kind for p in pairs)
    return FitStats(step, time.perf_counter() - start, losses, len(pairs), dict(kinds))


Scored = tuple[LabelledRequirement, list[str], list[float], float]


def _validation_logits(
    adapter_dir: Path,
    library: dict[str, TableAsset],
    validation: list[LabelledRequirement],
    candidates: Candidates,
    k: int,
) -> list[Scored]:
    """(requirement, top-k candidates in coarse order, adapter logits, ms) per validation requirement,
    scored by the adapter saved in `adapter_dir` (with the base and token budget it was trained with)."""
    from assetmatch.ranking.finerank import LoraFineRanker

    config = RankerConfig.load(adapter_dir)
    ranker = LoraFineRanker.from_folders(
        {"_eval": (adapter_dir, "eval")}, config.base, config.device, config.max_length
    )
    out = []
    for req in validation:
        cands = candidates(req.business, req.text, k)
        start = time.perf_counter()
        logits = ranker.logits("_eval", req.text, [library[i] for i in cands]) if cands else []
        out.append((req, cands, logits, (time.perf_counter() - start) * 1000))
    return out


def train_business(
    business: str,
    data: TrainingData,
    assets: list[TableAsset],
    candidates: Candidates,
    config: RankerConfig,
    out_dir: str | Path,
    champion_dir: str | Path | None = None,
    progress: Any = None,
) -> TrainResult:
    """Train, evaluate and save one business's adapter (see the module docstring for the steps)."""
    from assetmatch.ranking.model import load_base, new_adapter, save_adapter, seed_everything
    from assetmatch.ranking.prompt import table_prompt, tokenizer_counter

    out = Path(out_dir)
    library = {a.asset_id: a for a in assets if a.business == business}
    if not library:
        raise ValueError(f"business {business!r} has no tables: nothing to rank")
    if not data.train and not data.synthetic:
        raise ValueError(f"business {business!r} has no labelled or synthetic requirements to train on")

    # 1. load: the shared base, frozen, with a fresh adapter (seeded: same data -> same adapter)
    seed_everything(config.seed)
    tokenizer, base_model, device = load_base(config.base, config.device)
    peft_model = new_adapter(base_model, config)
    count = tokenizer_counter(tokenizer)

    # 2. data + 3. hard negatives: gold pairs, recall twins that are not gold, a few random tables
    train_reqs = [r for r in [*data.train, *data.synthetic] if all(g in library for g in r.gold)]
    pairs = build_pairs(
        train_reqs,
        list(library),
        candidates,
        config.hard_negatives,
        config.random_negatives,
        config.candidate_k,
        config.seed,
    )
    documents: dict[tuple[str, str], str] = {}
    for p in pairs:
        if (p.text, p.asset_id) not in documents:
            budget = max(8, config.max_length - count(p.text) - 3)
            documents[(p.text, p.asset_id)] = table_prompt(p.text, library[p.asset_id], budget, count)

    # 4. baseline first: coarse-only, and the current champion when there is one
    validation = [r for r in data.validation if all(g in library for g in r.gold)] or train_reqs[:50]
    if config.max_validation and len(validation) > config.max_validation:
        validation = random.Random(config.seed).sample(validation, config.max_validation)
    reports: dict[str, ev.EvalReport] = {}
    coarse = ev.rank_requirements(validation, candidates, config.candidate_k, None)
    reports["coarse_only"] = ev.report("coarse_only", coarse, top_n=ev.calibrate_top_n(coarse))
    if champion_dir is not None:  # with the fusion it was calibrated with
        champion_fusion = read_calibration(champion_dir).fusion
        scored = _validation_logits(Path(champion_dir), library, validation, candidates, config.candidate_k)
        ranked = [ev.reranked(r, c, champion_fusion.probs(logits), ms) for r, c, logits, ms in scored]
        reports["champion"] = ev.report("champion", ranked, threshold=ev.calibrate_threshold(ranked))

    # 5. train
    fit = fit_adapter(peft_model, tokenizer, pairs, documents, config, device, progress)

    # 6. evaluate the new adapter on the same validation requirements: fit the fusion of its logits
    #    with the coarse rank, then calibrate the set-selection threshold on the fused probabilities
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(peft_model, tmp, config)
        scored = _validation_logits(Path(tmp), library, validation, candidates, config.candidate_k)
    fusion = Fusion.fit([(logits, [c in r.gold for c in cands]) for r, cands, logits, _ in scored])
    ranked = [ev.reranked(r, cands, fusion.probs(logits), ms) for r, cands, logits, ms in scored]
    threshold = ev.calibrate_threshold(ranked)
    reports["challenger"] = ev.report("challenger", ranked, threshold=threshold)

    # 7. save: adapter, config, calibration, report and plot together
    if out.exists():
        shutil.rmtree(out)
    save_adapter(peft_model, out, config)
    write_calibration(out, threshold, fusion, validation_requirements=len(validation))
    result = TrainResult(business, out, config, fit, threshold, reports, data.counts())
    (out / "eval_report.json").write_text(
        json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=1), encoding="utf-8"
    )
    ev.plot_reports(list(reports.values()), str(out / "eval_plot.png"))
    return result


def load_training_data(
    lake: Any, business: str, assets: list[TableAsset], config: RankerConfig, settings: Any = None
) -> TrainingData:
    """Step 0: the business's labelled requirements from the lake, split, plus synthetic ones."""
    from assetmatch.lake import tables as T
    from assetmatch.training import augment
    from assetmatch.training.pairs import fingerprint, labelled_from_lake, split_holdout

    known = {a.asset_id for a in assets}
    labelled = labelled_from_lake(lake, business, known)
    train, validation = split_holdout(labelled, config.validation_fraction)
    llm = None
    if settings is not None and settings.training.llm.enabled:
        llm = augment.LlmClient.from_settings(settings)
    synthetic = augment.synthesize(
        assets,
        lake.read_glossary(business=business),
        config.synthetic_per_table,
        config.seed,
        llm,
        settings.training.llm.per_table if llm is not None else 0,
    )
    versions = {t: lake.version(t) for t in (T.ASSETS, T.REQUIREMENTS, T.QUERY_LOG, T.FEEDBACK, T.GLOSSARY)}
    return TrainingData(business, train, validation, synthetic, versions, fingerprint(labelled, assets))


def ranker_config(settings: Any, **overrides: Any) -> RankerConfig:
    """RankerConfig from settings.model (base, device, token budget) + settings.training.ranker +
    explicit overrides: the adapter trains with the token budget serving will give it."""
    values: dict[str, Any] = {
        "base": settings.model.base,
        "device": settings.model.device,
        "max_length": settings.model.max_length,
    }
    values.update(settings.training.ranker)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RankerConfig.from_dict(values)


def run_training(
    settings: Any,
    business: str,
    candidates: Candidates | None = None,
    config: RankerConfig | None = None,
    progress: Any = None,
    index_manifest: str = "",
) -> tuple[TrainResult, str]:
    """Train `business` from the lake and register it as `challenger`. Returns (result, model version)."""
    from assetmatch.lake.delta import Lake
    from assetmatch.ranking.candidates import Bm25Candidates
    from assetmatch.registry.mlflow import Registry

    # 0. read the lake: the business's live tables and labelled requirements
    lake = Lake.from_settings(settings)
    config = config or ranker_config(settings)
    assets = lake.read_assets(businesses=[business])
    data = load_training_data(lake, business, assets, config, settings)
    candidates = candidates or Bm25Candidates(assets)

    registry = Registry.from_settings(settings)
    champion = registry.version_by_alias(business, "champion")
    out_dir = Path(settings.training.adapters_dir) / business / time.strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        champion_dir = (
            registry.download_adapter(business, str(champion.version), Path(tmp) / "champion")
            if champion
            else None
        )
        result = train_business(business, data, assets, candidates, config, out_dir, champion_dir, progress)

    # 8. log params, metrics, report, plot and adapter to MLflow; register as `challenger`
    run_id = registry.log_training(business, result, data, index_manifest=index_manifest)
    version = registry.register(business, run_id, alias="challenger")
    return result, version


__all__ = [
    "FitStats",
    "LabelledRequirement",
    "TrainResult",
    "fit_adapter",
    "load_training_data",
    "plan_training",
    "ranker_config",
    "run_training",
    "train_business",
]


@dataclass
class TrainingPlan:
    """Whether a business needs a new adapter: its data fingerprint against the last run's."""

    business: str
    fingerprint: str
    last_fingerprint: str | None
    labelled: int

    @property
    def changed(self) -> bool:
        return self.fingerprint != self.last_fingerprint


def plan_training(settings: Any, businesses: list[str] | None = None) -> list[TrainingPlan]:
    """One plan per business: fingerprint of (labelled requirements, library) vs the last MLflow run."""
    from assetmatch.lake.delta import Lake
    from assetmatch.registry.mlflow import Registry
    from assetmatch.training.pairs import fingerprint, labelled_from_lake

    lake = Lake.from_settings(settings)
    registry = Registry.from_settings(settings)
    names = businesses or settings.business_names() or sorted({a.business for a in lake.read_assets()})
    plans = []
    for business in names:
        assets = lake.read_assets(businesses=[business])
        labelled = labelled_from_lake(lake, business, {a.asset_id for a in assets})
        plans.append(
            TrainingPlan(
                business, fingerprint(labelled, assets), registry.last_fingerprint(business), len(labelled)
            )
        )
    return plans
