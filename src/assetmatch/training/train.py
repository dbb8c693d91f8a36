"""Train one business's LoRA fine ranker. `train_business` reads top to bottom as numbered steps:

 1. load      the shared base model (seeded), frozen, with a fresh LoRA adapter — or a copy of
              the shared adapter (`init_from`), which the business's adapter then specialises
 2. data      labelled requirements (+ synthetic ones) -> (requirement, table, label) pairs
 3. hard negatives  from the production coarse lists (`ranking.candidates.CoarseCandidates`:
              out of fold for requirements the coarse model was fitted on), i.e. what serving shows
 4. baseline  coarse-only (the coarse order and selection) and the current champion (with its own
              calibration) on the validation requirements
 5. train     listwise loss (BCE + per-requirement softmax), AdamW, warm-up/decay, bf16 on GPU
              and on CPUs that multiply bf16 in hardware (`RankerConfig.precision`);
              every `eval_every` steps the validation curve (all-gold@3, set F1), early stopping
              at the plateau, the best checkpoint kept
 6. evaluate  score the validation candidates and fit the business's `FineCalibration`: fusion of
              logits with coarse scores, selection on fused probabilities, the cascade; the
              reported figures are cross-fitted, as the A/B gate judges (skipped for the shared
              adapter, which is calibrated per business: `calibrate_adapter`)
 7. save      adapter + RankerConfig + calibration + eval report + plots in one folder, with the
              validation lists scored to calibrate it (`training.recorded`: the gate takes them)

`assetmatch.registry.training.run_training` adds step 0 (read the lake) and step 8 (log to MLflow,
register as `challenger`).
The core takes requirements, assets and a candidate source as arguments, so it runs the same
from the CLI, a Prefect task, a benchmark or a test.
"""

from __future__ import annotations

import json
import queue
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import cache, partial
from pathlib import Path
from typing import Any, Protocol

from assetmatch.config import Settings
from assetmatch.lake import tables as T
from assetmatch.lake.delta import Lake
from assetmatch.matching.fine import (
    Cascade,
    CoarseAnswer,
    FineCalibration,
    Fusion,
    log_odds,
    read_calibration,
    write_calibration,
)
from assetmatch.matching.matcher import visible_businesses
from assetmatch.matching.selection import Objective, SetSelector
from assetmatch.models import TableAsset
from assetmatch.ranking.config import RankerConfig
from assetmatch.ranking.finerank import LoraFineRanker
from assetmatch.ranking.model import (
    bf16_training,
    continue_adapter,
    inference_precision,
    lists_at_once,
    load_base,
    new_adapter,
    pick_device,
    save_adapter,
    scoring_threads,
    seed_everything,
    torch_threads,
    train_top_layers,
)
from assetmatch.ranking.prompt import document_budget, table_prompt, tokenizer_counter
from assetmatch.training import augment
from assetmatch.training import evaluate as ev
from assetmatch.training import recorded as rec
from assetmatch.training.pairs import (
    LabelledRequirement,
    Pair,
    TrainingData,
    build_pairs,
    fingerprint,
    labelled_from_lake,
    split_holdout,
)
from assetmatch.types import SELECTION_OBJECTIVES, Siblings


@dataclass
class FitStats:
    steps: int
    seconds: float
    losses: list[float]
    pairs: int
    pair_kinds: dict[str, int]
    curve: list[dict[str, float]] = field(default_factory=list)  # step, all_gold_at_3, set_f1
    best_step: int = 0  # the checkpoint kept (0: the last one, no validation curve)
    stopped_early: bool = False
    final_learning_rate: float = 0.0  # the rate of the last step: > 0 where the schedule outlasted training


@dataclass
class TrainResult:
    """What a training run produced: the adapter folder and everything to log about it."""

    business: str
    adapter_dir: Path
    config: RankerConfig
    fit: FitStats
    threshold: float
    reports: dict[str, ev.EvalReport]  # coarse_only, champion (if any), challenger, always_fine
    data_counts: dict[str, int] = field(default_factory=dict)
    calibration: FineCalibration = field(default_factory=FineCalibration)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "train_seconds": self.fit.seconds,
            "train_steps": float(self.fit.steps),
            "train_pairs": float(self.fit.pairs),
            "final_loss": self.fit.losses[-1] if self.fit.losses else 0.0,
            "threshold": self.threshold,
            "best_step": float(self.fit.best_step),
            "stopped_early": float(self.fit.stopped_early),
            "final_learning_rate": self.fit.final_learning_rate,
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
    pointwise BCE dilutes when most pairs are negatives. Each pair's `prior` is added to its logit
    first (zero unless the adapter learns on top of the coarse ranking: `coarse_priors`)."""
    import torch

    labels = torch.tensor([p.label for p in batch], dtype=torch.float32, device=logits.device)
    logits = logits + torch.tensor([p.prior for p in batch], dtype=logits.dtype, device=logits.device)
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


def coarse_priors(pairs: list[Pair], coarse: Callable[[str, str], CoarseAnswer], weight: float) -> list[Pair]:
    """Each pair with `weight` x the coarse log-odds of its table as its prior
    (`RankerConfig.coarse_offset`). `coarse(requirement_id, text)` is the requirement's coarse
    answer as serving would give it (out of fold for requirements the coarse model was fitted on);
    a table outside its list gets the list's lowest score. The loss then scores prior + logit, as
    boosting scores a new tree on top of the trees before it: a pair the coarse ranking already
    orders right adds little gradient, and the adapter learns what the coarse ranking misses."""
    if weight == 0:
        return pairs
    priors: dict[str, tuple[dict[str, float], float]] = {}  # requirement -> (prior by table, lowest)
    out = []
    for p in pairs:
        if p.requirement_id not in priors:  # one coarse answer per requirement, not per pair
            answer = coarse(p.requirement_id, p.text)
            odds = weight * log_odds(answer.scores or [0.5])
            priors[p.requirement_id] = (dict(zip(answer.ids, odds.tolist())), float(odds.min()))
        by_table, lowest = priors[p.requirement_id]
        out.append(replace(p, prior=by_table.get(p.asset_id, lowest)))
    return out


def validation_loss(judged: Sequence[ev.Judged], loss: str) -> float:
    """The training loss (`pair_loss`) on validation lists: each list's scored tables as one
    requirement's pairs, gold or not, each with the prior training gave it (the adapter's
    `coarse_offset` x the coarse log-odds). Unlike the answers' quality it moves with every margin the
    adapter learns, not only once a margin crosses the coarse ranking's and an answer changes."""
    import torch

    pairs: list[Pair] = []
    scored: list[float] = []  # prior + logit: what the loss scores (`Fusion.features`' first column)
    for i, j in enumerate(judged):
        if not j.logits:
            continue
        scored += Fusion.features(j.logits, j.coarse.scores, j.coarse_offset)[:, 0].tolist()
        for asset_id, gold in zip(j.coarse.ids, j.gold_flags(), strict=False):
            pairs.append(Pair(str(i), j.requirement.text, asset_id, float(gold), "hard"))
    if not pairs:
        return float("nan")
    return float(pair_loss(torch.tensor(scored, dtype=torch.float32), pairs, loss))


Validator = Callable[[Any], dict[str, float]]
"""validator(peft_model) -> validation metrics of the model as it is now (all_gold_at_3, set_f1,
and loss: `validation_loss`)."""


def fit_adapter(
    peft_model: Any,
    tokenizer: Any,
    pairs: list[Pair],
    documents: dict[tuple[str, str], str],
    config: RankerConfig,
    device: str,
    progress: Any = None,
    validator: Validator | None = None,
) -> FitStats:
    """Step 5: train the adapter's parameters (the base stays frozen) on `config.loss`.

    With a `validator` and `config.eval_every`, the model is scored on the validation requirements
    every `eval_every` steps (the validation curve); training stops once `config.patience` checks in
    a row did not improve what `config.stop_on` names (all-gold@3 + set F1, or the validation loss),
    and the best checkpoint's weights are restored.
    With `config.trainable_layers`, only the top layers' LoRA updates train (`train_top_layers`).
    On CPU, torch runs on `config.threads` threads meanwhile (`ranking.model.torch_threads`)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    bf16 = bf16_training(config.precision, device)
    with torch_threads(config.threads if device == "cpu" else 0):
        steps_per_epoch = sum(1 for _ in _batches(pairs, config, torch.Generator().manual_seed(0)))
        total = config.max_steps or steps_per_epoch * config.epochs  # max_steps overrides epochs (as in HF)
        train_top_layers(peft_model, config.trainable_layers)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        horizon = config.schedule_steps or total  # the schedule may outlast the steps trained
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(horizon * config.warmup_ratio), max(1, horizon)
        )
        generator = torch.Generator().manual_seed(config.seed)
        losses: list[float] = []
        curve: list[dict[str, float]] = []
        best: tuple[float, int, dict[str, Any]] | None = None
        stale, stopped = 0, False
        step, start = 0, time.perf_counter()
        task = progress.add_task("training", total=total) if progress is not None else None

        def check() -> bool:
            """Validation point; True when training should stop (plateau)."""
            nonlocal best, stale
            metrics = validator(peft_model) if validator is not None else {}
            peft_model.train()
            curve.append({"step": float(step), **metrics})
            if step == 0:  # the starting point is the curve's baseline, never the checkpoint kept
                return False
            if config.stop_on == "loss":
                value = -metrics.get("loss", float("inf"))
            else:
                value = metrics.get("all_gold_at_3", 0.0) + metrics.get("set_f1", 0.0)
            if best is None or value > best[0] + 1e-9:
                trained = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
                best, stale = (value, step, trained), 0
                return False
            stale += 1
            return stale >= config.patience

        validating = validator is not None and config.eval_every > 0
        if validating and config.eval_at_start:
            check()  # step 0: where training starts (the shared adapter, or an untrained head)
        peft_model.train()
        while step < total and not stopped:
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
                with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
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
                if validating and (step % config.eval_every == 0 or step == total) and check():
                    stopped = True
                    break
        best_step = 0
        if validating and best is not None:
            if curve[-1]["step"] != float(step):
                check()  # the last step, when it was not a validation point
            best_step = best[1]
            with torch.no_grad():  # back to the best checkpoint
                for name, param in peft_model.named_parameters():
                    if name in best[2]:
                        param.copy_(best[2][name])
        peft_model.eval()
        kinds: Counter[str] = Counter(p.kind for p in pairs)
        return FitStats(
            step,
            time.perf_counter() - start,
            losses,
            len(pairs),
            dict(kinds),
            curve,
            best_step,
            stopped,
            float(scheduler.get_last_lr()[0]),
        )


CHECKED = "_check"
"""The name a validation check loads the adapter under, in its own serving-path ranker."""


def kept_check(fit: FitStats, checks: int) -> int | None:
    """Which of the `checks` validation checks (in `fit.curve`'s order) judged the checkpoint
    training kept (`fit.best_step`), or None when no check kept it (no validation, or training kept
    its last weights)."""
    if not fit.best_step or checks != len(fit.curve):
        return None
    return [int(point["step"]) for point in fit.curve].index(fit.best_step)


class CoarseSource(Protocol):
    """A candidate source with the whole coarse answer (`ranking.candidates`)."""

    @property
    def assets(self) -> Mapping[str, TableAsset]: ...

    def __call__(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> list[str]: ...

    def coarse(
        self, business: str, text: str, k: int, databases: Collection[str] | None = None
    ) -> CoarseAnswer: ...

    def neighbors(self, asset_id: str) -> Collection[str]: ...

    def group_of(self, asset_id: str) -> str: ...

    def siblings(self, asset_id: str) -> tuple[str, ...] | None: ...


def selection_context(candidates: CoarseSource, coarse_selector: SetSelector | None = None) -> ev.Context:
    matcher = getattr(candidates, "matcher", None)
    selector = coarse_selector or (matcher.selector if matcher is not None else SetSelector())
    objective: Objective = (
        matcher.settings.matching.selection_objective if matcher is not None else SELECTION_OBJECTIVES[0]
    )
    return ev.Context(candidates.neighbors, candidates.group_of, selector, objective)


Scorer = Callable[[str, list[TableAsset], Mapping[str, str], Siblings], list[float]]
"""(requirement, tables, past requests by table id, other tables of each one's database) -> one
logit per table: an adapter's `logits` (`functools.partial(ranker.logits, name)`)."""

Scorers = Callable[[], Sequence[Scorer]]
"""Returns one adapter's scorers, its models loaded on the first call (`functools.cache` it): one
per list scored at once (`ranking.model.lists_at_once`), each on its own copy of the model. Called
only when a list must be scored, and before any list is timed: loading is no list's latency."""


def loaded(*scorers: Scorer) -> Scorers:
    """`Scorers` of models already loaded."""
    return lambda: scorers


def judge(
    scorers: Scorers | None,
    library: Mapping[str, TableAsset],
    validation: list[LabelledRequirement],
    candidates: CoarseSource,
    k: int,
    coarse_offset: float = 0.0,
    recorded: rec.Recorded | None = None,
) -> list[ev.Judged]:
    """Each validation requirement's coarse answer and the logits `scorers` give its top k (none
    when `scorers` is None: the coarse-only arm). `coarse_offset`: the adapter's
    (`RankerConfig.coarse_offset`), for the fusion fitted on these lists. `recorded`: lists this
    adapter already scored here (`training.recorded`), taken as they were."""
    answers = [(req, candidates.coarse(req.business, req.text, k, req.databases)) for req in validation]
    return judge_answers(scorers, library, answers, candidates, k, coarse_offset, recorded)


def judge_answers(
    scorers: Scorers | None,
    library: Mapping[str, TableAsset],
    answers: Sequence[tuple[LabelledRequirement, CoarseAnswer]],
    candidates: CoarseSource,
    k: int,
    coarse_offset: float = 0.0,
    recorded: rec.Recorded | None = None,
) -> list[ev.Judged]:
    """`judge` on coarse answers already known (each requirement with its own)."""
    out: list[ev.Judged] = []
    todo: list[tuple[int, tuple[str, list[TableAsset], Mapping[str, str], Siblings]]] = []
    for req, coarse in answers:
        top = [a for a in coarse.ids[:k] if a in library]
        if not (top and scorers):  # the coarse-only arm reads no documents
            out.append(ev.Judged(req, coarse, [], 0.0, coarse_offset, ""))
            continue
        siblings = {a: candidates.siblings(a) for a in top}
        assets = [library[a] for a in top]
        key = rec.list_key(req.text, assets, coarse.examples, siblings)
        if recorded and key in recorded:
            logits, latency = recorded[key]
        else:  # scored below, side by side with the other lists to score
            logits, latency = [], 0.0
            todo.append((len(out), (req.text, assets, coarse.examples, siblings)))
        out.append(ev.Judged(req, coarse, list(logits), latency, coarse_offset, key))
    if todo:
        assert scorers is not None
        scored = score_side_by_side(scorers(), [args for _, args in todo])
        for (i, _), (logits, latency) in zip(todo, scored, strict=True):
            out[i] = replace(out[i], logits=logits, latency_ms=latency)
    return out


def score_side_by_side(
    scorers: Sequence[Scorer], lists: Sequence[tuple[Any, ...]]
) -> list[tuple[list[float], float]]:
    """Each list's logits and the milliseconds its scorer took, in order: the lists shared out among
    `scorers`, each scoring in a thread of its own (torch releases the GIL inside its kernels).

    Hand-rolled over `ThreadPoolExecutor.map` because each thread must keep one scorer (a model is
    not safe to call from two threads at once) while taking the next list as it frees up."""
    results: list[tuple[list[float], float]] = [([], 0.0)] * len(lists)
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(lists)):
        pending.put(i)

    def work(score: Scorer) -> None:
        try:
            while True:
                try:
                    i = pending.get_nowait()
                except queue.Empty:
                    return
                start = time.perf_counter()
                logits = score(*lists[i])
                results[i] = (logits, (time.perf_counter() - start) * 1000)
        except BaseException:
            with suppress(queue.Empty):  # the other threads stop after their list
                while True:
                    pending.get_nowait()
            raise

    if len(scorers) == 1:
        work(scorers[0])
    else:
        with ThreadPoolExecutor(len(scorers), thread_name_prefix="assetmatch-judge") as pool:
            for done in [pool.submit(work, score) for score in scorers]:
                done.result()
    return results


def judge_folder(
    adapter_dir: Path,
    library: Mapping[str, TableAsset],
    validation: list[LabelledRequirement],
    candidates: CoarseSource,
    k: int,
    quantize: str = "none",
    use_recorded: bool = True,
) -> list[ev.Judged]:
    """`judge` with the adapter saved in `adapter_dir` (the base and token budget it was trained with),
    run as serving runs it (`quantize`: the logits calibration is fitted on, and the latency the gate
    measures, are those of the deployed inference) on this process's torch threads, `lists_at_once`
    side by side. Lists the folder's record holds for this runtime (`training.recorded`) are taken
    from it unless `use_recorded` is False; the models are loaded only for a list it does not hold."""
    config = RankerConfig.load(adapter_dir)
    runtime = runtime_of(config.device, quantize)
    held = rec.recorded(adapter_dir, runtime) if use_recorded else {}

    @cache
    def scorers() -> list[Scorer]:
        adapters = {"_eval": (adapter_dir, "eval")}
        rankers = judging_rankers(adapters, config.base, config.device, config.max_length, quantize)
        return [partial(ranker.logits, "_eval") for ranker in rankers]

    return judge(scorers, library, validation, candidates, k, config.coarse_offset, held)


def judging_rankers(
    adapters: Mapping[str, tuple[str | Path, str]],
    base: str,
    device: str,
    max_length: int,
    quantize: str,
    threads: int = 0,
) -> list[LoraFineRanker]:
    """The rankers an adapter's judging scores with, run as deployed: one per list scored at once
    (`lists_at_once` at `threads` torch threads; 0: torch's threads now), each a copy of `base`
    holding `adapters` (`LoraFineRanker.from_folders`).

    Loading draws random head and LoRA weights (the saved ones then replace them) from torch's
    generator, whose stream a training's dropout masks follow: the loads run on a fork of it, so
    what training does not depend on how many models judge it."""
    import torch

    count = lists_at_once(pick_device(device)[0], threads)
    with torch.random.fork_rng():
        return [
            LoraFineRanker.from_folders(adapters, base, device, max_length, quantize=quantize)
            for _ in range(count)
        ]


def runtime_of(device: str, quantize: str) -> rec.Runtime:
    """This process as it runs an adapter on `device` with `ranker.quantize` (both as configured)."""
    resolved = pick_device(device)[0]
    return rec.Runtime.here(resolved, inference_precision(quantize, resolved))


def familiar_tables(
    requirements: list[LabelledRequirement], library: Mapping[str, TableAsset]
) -> frozenset[str]:
    """Where an adapter's scores mean something: every table of the `library` whose database holds a
    gold table of a real (not synthetic) training requirement. It read those databases' tables as
    answers and as their confusable neighbours; a database it never learned (one added since, or
    another team's) it can only guess at. (Counting only the gold tables themselves, on Spider's
    union the cascade found tables of learned databases "unfamiliar" on validation, learned to
    ignore familiarity, and then fine-ranked 92 % of the `dev` requests, whose databases no adapter
    saw: set F1 0.496 -> 0.337. Per database: 33 % fine-ranked, 0.502.)"""
    learned = {
        (library[g].business, library[g].database)
        for r in requirements
        if r.origin != "synthetic"
        for g in r.gold
        if g in library
    }
    return frozenset(a.asset_id for a in library.values() if (a.business, a.database) in learned)


def train_business(
    business: str,
    data: TrainingData,
    assets: list[TableAsset],
    candidates: CoarseSource,
    config: RankerConfig,
    out_dir: str | Path,
    champion_dir: str | Path | None = None,
    progress: Any = None,
    init_from: str | Path | None = None,
    familiar: frozenset[str] | None = None,
    quantize: str = "none",
    evaluate: bool = True,
    threads: int = 0,
) -> TrainResult:
    """Train, evaluate and save one business's adapter (see the module docstring for the steps).

    `assets`: the library the business sees (its own tables and shared ones). `init_from`: an
    adapter folder to start from (the shared adapter) instead of a fresh adapter. `familiar`: the
    tables the cascade treats as known (default: the gold tables of the labelled training data,
    plus those of the starting adapter). `quantize` and `threads`: the inference serving runs
    (`ranker.quantize`, `serving.torch_threads`; 0: this process's threads), which every judging of
    an adapter here runs too; the calibration is fitted on its logits. `evaluate=False` skips step 6: the adapter is saved
    with a calibration that only records the tables it learned, and its reports are coarse-only's
    (and the champion's). The shared adapter is trained so: it is judged and calibrated per
    business (`calibrate_adapter`), which is what the gate reads, so a report on all businesses'
    lists together would score every validation list a second time for nobody (on the demo, 31 s
    of a 520 s build)."""

    out = Path(out_dir)
    library = {a.asset_id: a for a in assets}
    if not library:
        raise ValueError(f"business {business!r} has no tables: nothing to rank")
    if not data.train and not data.synthetic:
        raise ValueError(f"business {business!r} has no labelled or synthetic requirements to train on")

    # 1. load: the shared base, frozen, with a fresh adapter or the shared one (seeded)
    import torch

    served = threads or torch.get_num_threads()  # before training sets its own (`config.threads`)
    seed_everything(config.seed)
    tokenizer, base_model, device = load_base(config.base, config.device)
    if init_from is not None:
        peft_model = continue_adapter(base_model, init_from, config)
        peft_model.to(device)
    else:
        peft_model = new_adapter(base_model, config)
    count = tokenizer_counter(tokenizer)

    def document(req: LabelledRequirement, asset_id: str) -> str:
        key = (req.text, asset_id)
        if key not in documents:
            budget = document_budget(req.text, config.max_length, count)
            # the past request serving would show beside this table (the coarse list's usage vote,
            # this requirement's own entries left out); none for tables outside the coarse list
            example = (
                candidates.coarse(req.business, req.text, config.candidate_k, req.databases).examples.get(
                    asset_id, ""
                )
                if config.past_requests
                else ""
            )
            siblings = candidates.siblings(asset_id) if config.database_context else None
            documents[key] = table_prompt(req.text, library[asset_id], budget, count, example, siblings)
        return documents[key]

    # 2. data + 3. hard negatives: gold pairs, coarse-list twins that are not gold, a few random tables
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
    requirement_of = {r.id: r for r in train_reqs}
    pairs = coarse_priors(
        pairs,
        lambda rid, text: candidates.coarse(
            requirement_of[rid].business, text, config.candidate_k, requirement_of[rid].databases
        ),
        config.coarse_offset,
    )
    for p in pairs:
        document(requirement_of[p.requirement_id], p.asset_id)
    familiar = familiar if familiar is not None else familiar_tables(data.train, library)
    if init_from is not None:
        familiar = familiar | (read_calibration(init_from).familiar or frozenset())

    # 4. baseline first: coarse-only, and the current champion (with its own calibration)
    validation = [r for r in data.validation if all(g in library for g in r.gold)] or train_reqs[:50]
    if config.max_validation and len(validation) > config.max_validation:
        validation = random.Random(config.seed).sample(validation, config.max_validation)
    ctx = selection_context(candidates)
    k = config.candidate_k
    reports: dict[str, ev.EvalReport] = {}
    coarse_lists = judge(None, library, validation, candidates, k)
    reports["coarse_only"] = ev.report("coarse_only", [ev.coarse_ranked(j) for j in coarse_lists])
    if champion_dir is not None:
        champion = read_calibration(champion_dir)
        with torch_threads(served):
            as_served = judge_folder(Path(champion_dir), library, validation, candidates, k, quantize)
        reports["champion"] = ev.report("champion", [ev.fine_ranked(j, champion, ctx) for j in as_served])

    # 5. train, with the validation curve and early stopping. Each check answers the validation lists
    # as serving would answer them (the adapter as saved, run with `quantize`: int8 is 1.4x float32 on
    # a CPU without bf16 units), so the best checkpoint's lists are the very ones step 6 would score
    # again: its calibration is fitted on them (on the demo, 55 s of a 1,000 s build on such a CPU).
    # one per validation check, in the curve's order: its lists, and how they were scored (the
    # runtime, the adapter's digest)
    checked: list[tuple[list[ev.Judged], tuple[rec.Runtime, str]]] = []
    checkers = (  # the checks' rankers (bases of their own, run as deployed), only where checks run
        judging_rankers({}, config.base, device, config.max_length, quantize, served)
        if config.eval_every
        else []
    )

    def validator(model: Any) -> dict[str, float]:
        with torch.random.fork_rng():  # loading each check's adapter draws too (`judging_rankers`)
            return check(model)

    def check(model: Any) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            save_adapter(model, tmp, config)
            for checker in checkers:
                checker.add(CHECKED, tmp, "check")  # replaces the previous check's weights
            digest = rec.adapter_digest(tmp)
        answers = [(j.requirement, j.coarse) for j in coarse_lists]
        scorers = loaded(*(partial(checker.logits, CHECKED) for checker in checkers))
        with torch_threads(served):  # on serving's threads, not the training's
            lists = judge_answers(scorers, library, answers, candidates, k, config.coarse_offset)
            runtime = rec.Runtime.here(checkers[0].scorer.device, checkers[0].scorer.quantize)
        checked.append((lists, (runtime, digest)))
        return {**ev.curve_point(lists, ctx), "loss": validation_loss(lists, config.loss)}

    fit = fit_adapter(peft_model, tokenizer, pairs, documents, config, device, progress, validator)
    checkers.clear()  # their bases are not needed past training

    # 6. evaluate the new adapter on the same validation requirements and fit its calibration
    calibration = FineCalibration(familiar=familiar)
    scored_as: tuple[rec.Runtime, str] | None = None  # how the lists calibrated on were scored
    judged: list[ev.Judged] = []
    if evaluate:
        kept = kept_check(fit, len(checked))
        if kept is not None:
            judged, scored_as = checked[kept]
        else:  # no validation check kept the weights: score them now
            with tempfile.TemporaryDirectory() as tmp, torch_threads(served):
                save_adapter(peft_model, tmp, config)
                judged = judge_folder(Path(tmp), library, validation, candidates, k, quantize)
                scored_as = runtime_of(config.device, quantize), rec.adapter_digest(tmp)
        calibration = ev.calibrate(judged, ctx, familiar)
        # What training reports is what the gate will judge: each validation requirement answered with
        # the calibration fitted on the other folds. Answered with the calibration fitted on it, the
        # adapter read ~0.1 set F1 better than it served on Spider (and the demo's +0.03..0.05 was ~0).
        crossed = ev.cross_fitted_calibrations(judged, ctx, familiar)
        reports["challenger"] = ev.report("challenger", ev.answered(judged, crossed, ctx))
        always = [replace(c, cascade=Cascade.always()) for c in crossed]
        reports["always_fine"] = ev.report("always_fine", ev.answered(judged, always, ctx))
    calibration.extra = {"validation_requirements": len(validation), "best_step": fit.best_step}

    # 7. save: adapter, config, calibration, report and plots together
    if out.exists():
        shutil.rmtree(out)
    save_adapter(peft_model, out, config)
    write_calibration(out, calibration)
    # the gate takes these lists as they were scored (`training.recorded`), where the saved weights
    # are the very ones scored
    if scored_as is not None and rec.adapter_digest(out) == scored_as[1]:
        rec.record(out, judged, *scored_as)
    threshold = calibration.threshold if calibration.threshold is not None else 0.5
    result = TrainResult(business, out, config, fit, threshold, reports, data.counts(), calibration)
    (out / "eval_report.json").write_text(
        json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=1), encoding="utf-8"
    )
    ev.plot_reports(list(reports.values()), str(out / "eval_plot.png"))
    if fit.curve:
        ev.plot_curve(fit.curve, fit.best_step, str(out / "validation_curve.png"))
    return result


def load_training_data(
    lake: Lake,
    business: str,
    assets: list[TableAsset],
    config: RankerConfig,
    settings: Settings | None = None,
) -> TrainingData:
    """Step 0: the business's labelled requirements from the lake, split, plus synthetic ones."""

    known = {a.asset_id for a in assets}
    labelled = labelled_from_lake(lake, business, known)
    train, validation = split_holdout(labelled, config.validation_fraction)
    llm, per_table = None, 0
    if settings is not None and settings.training.llm.enabled:
        llm, per_table = augment.LlmClient.from_settings(settings), settings.training.llm.per_table
    synthetic = augment.synthesize(
        assets,
        lake.read_glossary(business=business),
        config.synthetic_per_table,
        config.seed,
        llm,
        per_table,
    )
    versions = {t: lake.version(t) for t in (T.ASSETS, T.REQUIREMENTS, T.QUERY_LOG, T.FEEDBACK, T.GLOSSARY)}
    return TrainingData(business, train, validation, synthetic, versions, fingerprint(labelled, assets))


def ranker_config(settings: Settings, **overrides: Any) -> RankerConfig:
    """RankerConfig from settings.ranker (base, device, token budget) + settings.training.ranker +
    explicit overrides: the adapter trains with the token budget serving will give it."""
    values: dict[str, Any] = {
        "base": settings.ranker.base,
        "device": settings.ranker.device,
        "max_length": settings.ranker.max_length,
    }
    values.update(settings.training.ranker)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RankerConfig.from_dict(values)


def business_inputs(
    lake: Lake, settings: Settings, business: str, config: RankerConfig
) -> tuple[TrainingData, list[TableAsset]]:
    """(training data, visible library) of one business: its own tables and the shared ones it sees."""

    own = lake.read_assets(businesses=[business])
    visible = lake.read_assets(businesses=visible_businesses(settings, business))
    return load_training_data(lake, business, own, config, settings), visible


def calibrate_adapter(
    business: str,
    adapter_dir: str | Path,
    data: TrainingData,
    assets: list[TableAsset],
    candidates: CoarseSource,
    out_dir: str | Path,
    quantize: str = "none",
    threads: int = 0,
) -> TrainResult:
    """A copy of an adapter (the shared one) with `business`'s own calibration — fusion, selection
    and cascade fitted on its validation requirements — and its reports, as `train_business` gives
    (judged as served: `quantize`, `threads`)."""
    config = RankerConfig.load(adapter_dir)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(adapter_dir, out)
    library = {a.asset_id: a for a in assets}
    validation = [r for r in data.validation if all(g in library for g in r.gold)]
    if config.max_validation and len(validation) > config.max_validation:
        validation = random.Random(config.seed).sample(validation, config.max_validation)
    ctx = selection_context(candidates)
    with scoring_threads(threads):
        judged = judge_folder(out, library, validation, candidates, config.candidate_k, quantize)
        rec.record(out, judged, runtime_of(config.device, quantize), rec.adapter_digest(out))
    familiar = familiar_tables(data.train, library) | (read_calibration(adapter_dir).familiar or frozenset())
    calibration = ev.calibrate(judged, ctx, familiar)
    calibration.extra = {"validation_requirements": len(validation), "calibrated_for": business}
    write_calibration(out, calibration)
    reports = {
        "coarse_only": ev.report("coarse_only", [ev.coarse_ranked(j) for j in judged]),
        "challenger": ev.report("challenger", ev.cross_fitted(judged, ctx, familiar)),
    }
    (out / "eval_report.json").write_text(
        json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=1), encoding="utf-8"
    )
    fit = FitStats(0, 0.0, [], 0, {})
    threshold = calibration.threshold if calibration.threshold is not None else 0.5
    return TrainResult(business, out, config, fit, threshold, reports, data.counts(), calibration)


__all__ = [
    "FitStats",
    "LabelledRequirement",
    "TrainResult",
    "business_inputs",
    "calibrate_adapter",
    "fit_adapter",
    "load_training_data",
    "ranker_config",
    "train_business",
]
