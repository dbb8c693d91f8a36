"""The packaged starting adapter: a LoRA cross-encoder pre-trained on public text-to-SQL data.

A fine ranker trained from a fresh adapter learns the general skill — does this table answer this
request? — from one warehouse's few hundred labelled requirements, in the few hundred steps a CPU
affords. It does not: after 100 steps on the demo its logits rank gold tables barely better than
chance (ROC AUC ~0.58, on its own training requirements too). The starting adapter carries that
general skill in: it is trained once, offline, on the `train` split of Spider (7,000 English
questions over 140 databases, tables named by their gold SQL), and every business's training starts
from it (through the shared adapter when there is one). Local vocabulary and habits are still
learned per business; the A/B gate still decides whether the result beats coarse-only ranking.

Reproduce the packaged one (about 40 minutes on two CPU cores; the `dev` split and its databases
are never read, so Spider dev figures stay honest):

    assetmatch models pretrain --data ../shared/benchmarks/spider --steps 1200 \\
        --out src/assetmatch/ranking/starting_adapter

Spider is CC BY-SA 4.0 (Yu et al., EMNLP 2018); the adapter is a derivative and carries that
licence, attributed in NOTICE and in the folder's `provenance.json`.

`training.starting_adapter` chooses what a business's training starts from: `packaged` (default:
this adapter, when the ranker base is the one it was trained on), `none` (a fresh adapter), or an
adapter folder.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assetmatch.models import TableAsset
from assetmatch.ranking.config import RankerConfig
from assetmatch.text import same_query_key
from assetmatch.training.pairs import Candidates, LabelledRequirement, Pair, build_pairs, split_holdout

if TYPE_CHECKING:
    from assetmatch.ranking.candidates import Bm25Candidates

log = logging.getLogger(__name__)

PACKAGED_DIR = Path(__file__).resolve().parents[1] / "ranking" / "starting_adapter"
PROVENANCE_FILE = "provenance.json"
TRAIN_SPLIT = "train"
_UNION = "_union"  # one business holding every database's tables: cross-database hard negatives


def packaged_adapter() -> Path | None:
    """The packaged starting adapter's folder, when it is installed."""
    return PACKAGED_DIR if (PACKAGED_DIR / "adapter_config.json").exists() else None


def resolve_starting_adapter(choice: str, base: str) -> Path | None:
    """The folder a business's first adapter starts from, or None for a fresh adapter.

    `choice` is `training.starting_adapter`: "packaged", "none" or a folder. The packaged adapter
    is used only with the base it was trained on (another base: fresh adapter, logged); a folder
    that is not an adapter is an error naming it."""
    if choice == "none":
        return None
    if choice == "packaged":
        folder = packaged_adapter()
        if folder is None:
            log.info("no packaged starting adapter installed: training starts from a fresh adapter")
            return None
        trained_on = RankerConfig.load(folder).base
        if trained_on != base:
            log.info(
                "the packaged starting adapter was trained on base %r, the ranker base is %r: "
                "training starts from a fresh adapter",
                trained_on,
                base,
            )
            return None
        return folder
    folder = Path(choice)
    if not (folder / "adapter_config.json").exists():
        raise ValueError(
            f"training.starting_adapter: {folder} is not an adapter folder (no adapter_config.json)"
        )
    return folder


# How `hold_out` chose the questions left out (`training.pairs.split_holdout`); an adapter pre-trained
# under another rule may have learned what a benchmark now holds out.
HOLDOUT_KEY = "query-else-text"


def read_dataset(data: Path) -> tuple[list[TableAsset], list[LabelledRequirement]]:
    """Tables and `train` requirements of a benchmark folder (`evaluation.harness.read_benchmark`,
    one business per database).

    Only the databases that `train` requirements ask about are kept: the other splits' questions
    and databases are never used."""
    from assetmatch.evaluation.harness import read_benchmark

    assets, rows = read_benchmark(data, "business")
    requirements = [
        LabelledRequirement(
            r.id, r.business, r.text, tuple(r.gold_assets), query=same_query_key(r.sql, r.gold_assets)
        )
        for r in rows
        if r.split == TRAIN_SPLIT and r.gold_assets
    ]
    if not requirements:
        raise ValueError(f"{data}: no {TRAIN_SPLIT!r} requirements with gold tables")
    databases = {r.business for r in requirements}
    return [a for a in assets if a.business in databases], requirements


def hard_negative_source(
    own: Bm25Candidates, library: Mapping[str, TableAsset], other_databases: bool
) -> Candidates:
    """Where a question's hard negatives come from: BM25 inside its own database (`own`), and with
    `other_databases` alternately BM25 over every other database's tables (one business a database,
    as `read_dataset` gives them)."""
    if not other_databases:
        return own
    from assetmatch.ranking.candidates import Bm25Candidates

    union = Bm25Candidates([a.model_copy(update={"business": _UNION}) for a in library.values()])

    def own_and_other_databases(
        business: str, text: str, k: int, databases: tuple[str, ...] | None = None
    ) -> list[str]:
        inside = own(business, text, k, databases)
        outside = [a for a in union(_UNION, text, k) if library[a].business != business]
        mixed = [a for pair in itertools.zip_longest(inside, outside) for a in pair if a is not None]
        return mixed[:k]

    return own_and_other_databases


def pretrain(
    data: Sequence[Path],
    out: Path,
    config: RankerConfig,
    progress: Any = None,
    hold_out: float = 0.0,
) -> dict[str, Any]:
    """Train a fresh LoRA adapter on the `train` requirements of `data` for `config.max_steps`
    steps and save it (adapter, RankerConfig, provenance) in `out`.

    `hold_out`: the requirements a training with `validation_fraction` = `hold_out` would hold out
    (`training.pairs.split_holdout`: by query where known, else by text; the same in every run) are
    not learned. An adapter trained on a benchmark's `train` questions and then calibrated, checked
    and gated on the held-out share of those same questions has seen its validation set: its calibration trusts it
    more than unseen requests deserve. Hard negatives are each
    question's BM25 neighbours (`ranking.candidates.Bm25Candidates`) inside its own database and,
    with `config.database_context`, alternately those of every other database: the namesakes a
    union of databases puts next to the answer, which only the database context tells apart."""
    from assetmatch.ranking.candidates import Bm25Candidates
    from assetmatch.ranking.model import load_base, new_adapter, save_adapter, seed_everything
    from assetmatch.ranking.prompt import document_budget, table_prompt, tokenizer_counter
    from assetmatch.training.train import fit_adapter

    if config.max_steps <= 0:
        raise ValueError("pretrain needs a step count (RankerConfig.max_steps > 0)")
    assets: list[TableAsset] = []
    requirements: list[LabelledRequirement] = []
    for folder in data:
        tables, questions = read_dataset(Path(folder))
        assets += tables
        requirements += split_holdout(questions, hold_out)[0]
    library = {a.asset_id: a for a in assets}
    candidates = Bm25Candidates(assets)
    hard = hard_negative_source(candidates, library, config.database_context)
    by_business: dict[str, list[str]] = {}
    for a in assets:
        by_business.setdefault(a.business, []).append(a.asset_id)
    # random negatives from the question's own database (build_pairs draws from the library it is given)
    pairs: list[Pair] = []
    for business, ids in sorted(by_business.items()):
        own = [r for r in requirements if r.business == business and all(g in library for g in r.gold)]
        pairs += build_pairs(
            own,
            ids,
            hard,
            config.hard_negatives,
            config.random_negatives,
            config.candidate_k,
            config.seed,
        )
    random.Random(config.seed).shuffle(pairs)

    seed_everything(config.seed)
    tokenizer, base_model, device = load_base(config.base, config.device)
    peft_model = new_adapter(base_model, config)
    count = tokenizer_counter(tokenizer)
    documents = {
        (p.text, p.asset_id): table_prompt(
            p.text,
            library[p.asset_id],
            document_budget(p.text, config.max_length, count),
            count,
            siblings=candidates.siblings(p.asset_id) if config.database_context else None,
        )
        for p in pairs
    }
    started = time.perf_counter()
    fit = fit_adapter(peft_model, tokenizer, pairs, documents, config, device, progress, validator=None)
    save_adapter(peft_model, out, config)
    provenance = {
        "what": "assetmatch starting adapter: LoRA cross-encoder pre-trained on public text-to-SQL questions",
        "data": [
            {"folder": Path(folder).name, "split": TRAIN_SPLIT, "licence": "CC BY-SA 4.0"} for folder in data
        ],
        "attribution": "Tao Yu et al. Spider: A Large-Scale Human-Labeled Dataset for Complex and Cross-Domain "
        "Semantic Parsing and Text-to-SQL Task. EMNLP 2018.",
        "requirements": len(requirements),
        "databases": len(by_business),
        "pairs": len(pairs),
        "steps": fit.steps,
        "final_loss_mean_last_50": sum(fit.losses[-50:]) / max(1, len(fit.losses[-50:])),
        "seconds": round(time.perf_counter() - started, 1),
        "base": config.base,
        "database_context": config.database_context,
        "held_out": hold_out,
        "held_out_by": HOLDOUT_KEY,
        "lora_dropout": config.lora_dropout,
        "command": "assetmatch models pretrain --data <spider> --steps "
        f"{config.max_steps} --max-length {config.max_length} --seed {config.seed}"
        + (f" --hold-out {hold_out}" if hold_out else "")
        + (
            f" --lora-dropout {config.lora_dropout}"
            if config.lora_dropout != RankerConfig().lora_dropout
            else ""
        ),
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1), encoding="utf-8")
    return provenance
