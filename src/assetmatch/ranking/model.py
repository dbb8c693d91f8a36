"""The cross-encoder: one shared base model plus one small LoRA adapter per business.

- `resolve_base(name)` turns `ranker.base` into a local folder (`assetmatch.modelpath`; no downloads).
- `load_base(...)` loads tokenizer + AutoModelForSequenceClassification(num_labels=1).
- `lora_targets(...)` picks the modules that get LoRA updates, from the base's own Linear layers.
- `new_adapter(...)` wraps a fresh base with a trainable LoRA adapter (base frozen).
- `quantize_int8(...)` swaps the base's frozen Linear layers for int8 ones (CPU inference only);
  `inference_precision(...)` resolves `ranker.quantize` (`auto`: bf16 on CPUs that multiply bf16 in
  hardware, `bf16_cpu`, else int8),
  `bf16_training(...)` the training's `RankerConfig.precision`.
- `save_adapter(...)` writes the adapter, its RankerConfig, and replaces the machine path of the
  base in adapter_config.json by the base's config *name* (adapters must be portable).
- `MultiAdapterScorer` holds one base and N adapters and scores rows of many businesses adapter
  by adapter (the default, faster everywhere measured), or in one forward pass per micro-batch
  across adapters (`mixed=True`, PEFT `adapter_names`). Rows are tokenized together and sorted by
  length before micro-batching, so a batch pads only to its own longest row.

torch / transformers / peft are imported inside functions: this module is cheap to import.
"""

from __future__ import annotations

import json
import os
import random
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from assetmatch.modelpath import quiet_loading, resolve_model, same_model
from assetmatch.ranking.config import AUTO_TARGETS, DEFAULT_BASE, RankerConfig
from assetmatch.ranking.spelling import SpelledTokenizer

ADAPTER_CONFIG = "adapter_config.json"
QUANTIZE_MODES = ("none", "int8", "bf16", "auto")
# The classification head: trained in full (modules_to_save), so never a LoRA target nor quantized.
HEAD_MODULES = ("classifier", "score")


def resolve_base(name: str) -> str:
    """Local folder of the fine ranker's base model (setting `ranker.base`)."""
    return str(resolve_model(name, "ranker.base"))


def pick_device(preference: str = "auto") -> tuple[str, Any]:
    """(device, dtype): CUDA with bf16 when present (or asked), CPU with float32 otherwise."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cuda", dtype
    return "cpu", torch.float32


_BF16_PROBES = {"amx": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}


def bf16_units() -> list[str]:
    """Which of this CPU's units multiply bf16 in hardware: Intel AMX tiles ("amx"), AVX-512 BF16
    dot products ("avx512_bf16": AMD Zen 4 / 5, Intel Cooper Lake and later). torch only offers
    private probes, so a torch without them reads as neither."""
    import torch

    return [unit for unit, probe in _BF16_PROBES.items() if getattr(torch.cpu, probe, lambda: False)()]


def bf16_cpu() -> bool:
    """Whether bf16 runs in hardware here (`bf16_units`). There bf16 beat int8 inference (AMX:
    1.7-1.85x int8's pairs/s; an AMD EPYC with AVX-512 BF16: 1.03-1.56x) and float32 training (1.4x;
    2.2x) on two cores (docs/measured.md, 'Fine-ranker inference on CPU'); elsewhere torch emulates
    bf16, slower than both."""
    return bool(bf16_units())


def inference_precision(quantize: str, device: str) -> str:
    """What `ranker.quantize` runs on `device`: none | int8 | bf16 on CPU (`auto`: bf16 where the
    CPU multiplies bf16 in hardware, `bf16_cpu`, else int8); always none on CUDA, which runs the
    base in bf16 already."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"ranker.quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if device != "cpu":
        return "none"
    if quantize == "auto":
        return "bf16" if bf16_cpu() else "int8"
    return quantize


def bf16_training(precision: str, device: str) -> bool:
    """Whether training runs under bf16 autocast (`RankerConfig.precision`): always on CUDA; on CPU
    when asked, or with `auto` where the CPU multiplies bf16 in hardware (`bf16_cpu`: a step 1.4x
    faster than float32 on a 2-core Xeon with AMX, 2.2x on an AMD EPYC with AVX-512 BF16). Elsewhere
    `auto` keeps float32: torch emulates bf16 there."""
    if device == "cuda" or precision == "bf16":
        return True
    return precision == "auto" and device == "cpu" and bf16_cpu()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread pool set to `n` threads for the block (0: one per core), then restored.

    Serving and the demo cap the math libraries at one thread (a request's small matrices gain
    nothing from more, and spinning threads starve each other on a busy machine); training is one
    long run of large matrix products, 1.55x faster on two threads than on one here
    (forward + backward of 16 pairs x 96 tokens: 1,257 vs 810 ms per step, quiet 2-core machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n or os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def scoring_threads(n: int) -> Iterator[None]:
    """torch's threads while an adapter is judged as served (`serving.torch_threads`): `n`, or this
    process's as they are when `n` is 0 (torch's default, or what the process was started with)."""
    if n <= 0:
        yield
        return
    with torch_threads(n):
        yield


MAX_LISTS_AT_ONCE = 4  # each list scored at once holds a copy of the base (larger bases are ~1 GB)


def lists_at_once(device: str, threads: int = 0) -> int:
    """How many requirement lists an adapter's judging (validation checks, calibration, the gate)
    scores side by side, each on its own copy of the model: on CPU, as many as the cores hold at
    `threads` torch threads each (serving's; 0: torch's threads now), at most `MAX_LISTS_AT_ONCE`;
    one on a GPU, which runs one model call at a time anyway.

    Serving runs the fine ranker on few threads (one on the demo's two cores), and a list's latency
    is measured on those threads as the gate's budget asks; scored one after the other, the other
    cores idle. Two lists at once on a 2-core CPU scored 1.87x the lists per second of one in bf16
    (two threads on one list: 1.57x) and 1.6-2.1x in int8 (`benchmarks/judge_side_by_side.py`), and
    each list's latency is measured while the other runs beside it: no lower than alone, so a budget
    held against it is not loosened."""
    if device != "cpu":
        return 1
    import torch

    per_list = threads if threads > 0 else torch.get_num_threads()
    return max(1, min(MAX_LISTS_AT_ONCE, (os.cpu_count() or 1) // max(1, per_list)))


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

    path = resolve_base(base)
    dev, dtype = pick_device(device)
    tokenizer = SpelledTokenizer(AutoTokenizer.from_pretrained(path))  # Chinese it cannot read: pinyin
    with quiet_loading():  # "classifier weights newly initialised" is expected here
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    model.to(dev)
    model.eval()
    return tokenizer, model, dev


def _frozen_part(name: str) -> bool:
    """Whether module `name` belongs to the frozen base: not the head, not a LoRA matrix."""
    parts = name.split(".")
    return not any(p in (*HEAD_MODULES, "pre_classifier") or p.startswith("lora_") for p in parts)


def _linear_names(model: Any) -> list[str]:
    """Qualified names of the base's frozen nn.Linear layers (classification head and LoRA left out)."""
    from torch import nn

    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _frozen_part(n)]


def lora_targets(model: Any, requested: str | Sequence[str] = AUTO_TARGETS) -> list[str]:
    """Module names that get a LoRA update: `requested` when it lists them, else derived from the base.

    "auto" takes every Linear layer of the encoder (attention projections and feed-forward layers)
    by its own name, so it fits any model type: BERT's query/key/value/dense, DistilBERT's
    q_lin/k_lin/v_lin/out_lin/lin1/lin2, Llama-style q_proj/.../down_proj. On BERT this is exactly
    the former fixed list.
    """
    if isinstance(requested, str) and requested != AUTO_TARGETS:
        return [requested]
    if not isinstance(requested, str):
        return list(requested)
    names = sorted({name.rsplit(".", 1)[-1] for name in _linear_names(model)})
    if not names:
        model_type = getattr(getattr(model, "config", None), "model_type", "?")
        raise ValueError(
            f"RankerConfig.target_modules='auto' found no nn.Linear layer in a {model_type!r} base: "
            "list the module names in training.ranker.target_modules"
        )
    return names


@contextmanager
def _peft_wrapping() -> Iterator[None]:
    """PEFT wrapping a base model reads transformers' deprecated `is_gradient_checkpointing`, and
    transformers warns about it on every wrap (a FutureWarning per adapter trained or loaded, in
    every command's output): a library-internal call the user can do nothing about. Only that
    warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def new_adapter(base_model: Any, config: RankerConfig, adapter_name: str = "default") -> Any:
    """A PeftModel with one fresh trainable LoRA adapter over a frozen base (classifier trained too)."""
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(base_model, config.target_modules),
        modules_to_save=["classifier"],
    )
    with _peft_wrapping():
        return get_peft_model(base_model, lora, adapter_name=adapter_name)


def continue_adapter(base_model: Any, folder: str | Path, config: RankerConfig) -> Any:
    """The adapter saved in `folder`, trainable over `base_model`: its rank, targets and weights as
    saved, the dropout of this training (`config.lora_dropout`). PEFT would take the dropout the
    adapter was first trained with from its saved config, and the setting would silently do
    nothing for every adapter that starts from another (all of them, with a starting adapter)."""
    from peft import LoraConfig, PeftModel

    lora = LoraConfig.from_pretrained(str(folder))
    lora.lora_dropout = config.lora_dropout
    with _peft_wrapping():
        return PeftModel.from_pretrained(base_model, str(folder), is_trainable=True, config=lora)


_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
"""The transformer layer a parameter belongs to, as BERT, RoBERTa, Llama, GPT-2 and T5 name them."""


def train_top_layers(peft_model: Any, top: int) -> int:
    """Freeze the LoRA updates of every transformer layer below the top `top` (0: none frozen), so
    training updates only the top layers', those outside the layer stack (BERT's pooler) and the
    head, and autograd computes no gradient below the lowest of them. A base with no more than
    `top` layers trains them all. Returns how many trainable tensors were frozen."""
    if top == 0:
        return 0
    layers = {
        name: int(m.group(1))
        for name, p in peft_model.named_parameters()
        if p.requires_grad and "lora_" in name and (m := _LAYER_INDEX.search(name))
    }
    lowest_trained = max(layers.values(), default=-1) + 1 - top
    frozen = 0
    for name, param in peft_model.named_parameters():
        if layers.get(name, lowest_trained) < lowest_trained:
            param.requires_grad_(False)
            frozen += 1
    return frozen


@lru_cache(maxsize=1)
def _int8_linear_class() -> Any:
    """The int8 Linear class (built on first use: torch is not imported with this module)."""
    import torch
    from torch import nn
    from torch.ao.nn.quantized import dynamic
    from torch.ao.quantization import PerChannelMinMaxObserver, PlaceholderObserver, QConfig

    # Weights in 7 bits per output channel, activations in 8 bits per tensor. fbgemm adds pairs of
    # u8 x s8 products in int16: 2 * 255 * 64 cannot overflow, and 8-bit activations halve the
    # score error of torch's default (8-bit weights, 7-bit activations via reduce_range) on MiniLM.
    _QCONFIG = QConfig(
        activation=PlaceholderObserver.with_args(
            dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True
        ),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-64, quant_max=63
        ),
    )

    class Int8Linear(nn.Linear):
        """A frozen Linear whose matmul runs in int8 (fbgemm dynamic quantization, CPU).

        It stays an nn.Linear on the outside (in/out_features, a float `weight` that is an empty
        placeholder) so PEFT still wraps it as a LoRA target and `unload()` hands it back: adapters
        can be added, replaced and removed at runtime on a quantized base. Weights are int8 per
        output channel; activations are quantized per call, per tensor (a row's score can move
        slightly with the rows batched with it).
        """

        int8: Any  # the quantized Linear (torch.ao dynamic), held outside the module tree

        def __init__(self, linear: nn.Linear) -> None:
            nn.Module.__init__(self)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            linear = linear.float()
            linear.qconfig = _QCONFIG  # type: ignore[assignment]
            with warnings.catch_warnings():  # torch marks its quantized tensors as deprecated
                warnings.simplefilter("ignore")
                int8 = dynamic.Linear.from_float(linear)
            # Kept outside the module tree: PEFT loads adapters with load_state_dict(strict=False),
            # which a quantized Linear refuses (it insists on its own keys being in every state dict).
            object.__setattr__(self, "int8", int8)
            self.weight = nn.Parameter(torch.empty(0), requires_grad=False)
            self.register_parameter("bias", None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            packed = self.int8._packed_params._packed_params
            y = torch.ops.quantized.linear_dynamic(x.float(), packed, reduce_range=False)
            return y.to(x.dtype)  # type: ignore[no-any-return]

    return Int8Linear


def quantize_int8(model: Any) -> int:
    """Swap every frozen nn.Linear of the base (head excepted) for an int8 one, in place; returns
    how many. Call it on the bare base, before adapters: LoRA A/B and the head stay float32."""
    int8_linear = _int8_linear_class()
    done = 0
    for name in _linear_names(model):
        module = model.get_submodule(name)
        if isinstance(module, int8_linear):
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, int8_linear(module))
        done += 1
    return done


MODEL_CARD = "README.md"


def save_adapter(
    peft_model: Any, folder: str | Path, config: RankerConfig, adapter_name: str = "default"
) -> Path:
    """Write adapter weights + RankerConfig; the base is recorded by name, never by machine path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    # save_embedding_layers=False: LoRA never targets the embeddings here (`lora_targets`), and the
    # default "auto" looks the base up by name to compare vocabularies, warning that it cannot find
    # a packaged or local base on every save
    peft_model.save_pretrained(str(out), selected_adapters=[adapter_name], save_embedding_layers=False)
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
    # PEFT always writes a model card naming the base by the folder it was loaded from (a machine
    # path; save_pretrained has no option against it): the adapter config and RankerConfig say it all
    (out / MODEL_CARD).unlink(missing_ok=True)
    if config.target_modules == AUTO_TARGETS:  # record what 'auto' chose: the folder says how it was trained
        config = replace(config, target_modules=sorted(data["target_modules"]))
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

    `score_rows(rows)` groups rows by adapter and runs one pass per adapter and micro-batch
    (`score_rows_serial`). With `mixed=True` it runs ONE forward pass per micro-batch with
    `adapter_names=[...]` (PEFT mixed-batch inference) instead: measured 0.71-0.92x the serial
    throughput on CPU and GPU (`benchmarks/multi_lora.py`), kept as an option. Returns raw logits
    (higher = more relevant).

    `quantize="int8"` (CPU only) runs the base's Linear layers in int8 while the adapters stay
    float32; adapters still load, replace and unload at runtime. `quantize="bf16"` (CPU only) holds
    the base and every adapter in bf16 (float32 adapters on a bf16 base scored 0.8-1.0x of bf16
    autocast: casting each layer's input costs more than the adapter's own matmuls); `auto` picks
    int8 or bf16 (`inference_precision`); `self.quantize` is what runs.
    """

    def __init__(
        self,
        base: str = DEFAULT_BASE,
        device: str = "auto",
        max_length: int = 128,
        batch_size: int = 64,
        mixed: bool = False,
        quantize: str = "none",
    ) -> None:
        inference_precision(quantize, "cpu")  # a bad mode fails before the model loads
        self.base = base
        self.max_length = max_length
        self.batch_size = batch_size
        self.mixed = mixed
        self.tokenizer, self._base_model, self.device = load_base(base, device)
        self.quantize = inference_precision(quantize, self.device)
        if self.quantize == "bf16":  # the base in bf16, as on CUDA
            import torch

            self._base_model.to(torch.bfloat16)
        if self.quantize == "int8":
            quantize_int8(self._base_model)
        self.model: Any = None  # the PeftModel once the first adapter is loaded
        self.adapters: dict[str, Path] = {}
        self._peft_names: dict[str, str] = {}  # public name -> PEFT-safe module key

    def _new_key(self, name: str) -> str:
        """A PEFT-safe module key for `name` that no loaded adapter uses: no dots, and never a
        substring of 'lora_' (e.g. 'a')."""
        key = "ad_" + re.sub(r"[^0-9A-Za-z_]", "_", name)
        while key in self._peft_names.values():
            key += "_"
        return key

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load (or replace) adapter `name` from a folder written by `save_adapter`.

        A replacement is loaded under a new key before the old one is deleted: the adapter keeps
        serving if the new one fails to load, and PEFT is never left without an active adapter.
        """
        from peft import PeftModel

        folder = Path(path)
        config = RankerConfig.load(folder)
        if not same_model(config.base, self.base):
            raise ValueError(
                f"adapter {name!r} was trained on base {config.base!r}, this scorer holds {self.base!r}"
            )
        key = self._new_key(name)
        # PEFT upcasts an adapter on a bf16 base to float32; on a CPU in bf16 casting every layer's
        # input for it costs more than the adapter's own matmuls, so there it keeps the base's dtype
        upcast = self.quantize != "bf16"
        if self.model is None:
            with _peft_wrapping():
                self.model = PeftModel.from_pretrained(
                    self._base_model, str(folder), adapter_name=key, autocast_adapter_dtype=upcast
                )
        else:
            self.model.load_adapter(str(folder), adapter_name=key, autocast_adapter_dtype=upcast)
            if name in self.adapters:
                self._delete(self._peft_names[name])
        self._peft_names[name] = key
        self.model.to(self.device)
        self.model.eval()
        self.adapters[name] = folder

    def _delete(self, key: str) -> None:
        with warnings.catch_warnings():  # "adapter X was active ...": every call names its adapters
            warnings.simplefilter("ignore", UserWarning)
            self.model.delete_adapter(key)

    def unload_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(f"no adapter named {name!r} is loaded (loaded: {sorted(self.adapters)})")
        if len(self.adapters) > 1:
            self._delete(self._peft_names[name])
        else:  # PEFT needs one adapter: drop the wrapper and go back to the bare base
            self._base_model = self.model.unload()
            self.model = None
        del self.adapters[name]
        del self._peft_names[name]

    def _encode(self, rows: Sequence[ScoreRow]) -> list[dict[str, Any]]:
        """Token ids of every row, unpadded (one tokenizer call for all rows)."""
        enc = self.tokenizer(
            [r.requirement for r in rows],
            [r.document for r in rows],
            truncation="only_second",
            max_length=self.max_length,
        )
        return [{key: enc[key][i] for key in enc} for i in range(len(rows))]

    def _batches(self, idx: list[int], encoded: list[dict[str, Any]]) -> list[list[int]]:
        """Micro-batches of row indices, shortest rows together: each batch pads to its own longest."""
        ordered = sorted(idx, key=lambda i: len(encoded[i]["input_ids"]))
        return [ordered[s : s + self.batch_size] for s in range(0, len(ordered), self.batch_size)]

    def _forward(self, features: list[dict[str, Any]], adapter_names: list[str] | None) -> list[float]:
        import torch

        enc = self.tokenizer.pad(features, padding=True, return_tensors="pt").to(self.device)
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
        encoded = self._encode(items)
        scores = [0.0] * len(items)
        for part in self._batches(list(range(len(items))), encoded):
            names = [self._peft_names[items[i].adapter] for i in part]
            for i, s in zip(part, self._forward([encoded[i] for i in part], names)):
                scores[i] = s
        return scores

    def score_rows_serial(self, rows: Sequence[ScoreRow]) -> list[float]:
        """Baseline: one adapter at a time (set_adapter), micro-batched, scattered back in order."""
        encoded = self._encode(rows)
        scores = [0.0] * len(rows)
        by_adapter: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_adapter.setdefault(r.adapter, []).append(i)
        for name, idx in by_adapter.items():
            self.model.set_adapter(self._peft_names[name])
            for part in self._batches(idx, encoded):
                for i, s in zip(part, self._forward([encoded[i] for i in part], None)):
                    scores[i] = s
        return scores
