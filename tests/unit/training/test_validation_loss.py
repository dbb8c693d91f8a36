"""The validation loss early stopping can read (`RankerConfig.stop_on: loss`): the training loss on
the validation lists, with the prior each table got in training."""

from __future__ import annotations

import math

import pytest

from assetmatch.matching.fine import CoarseAnswer
from assetmatch.training import evaluate as ev
from assetmatch.training.pairs import LabelledRequirement
from assetmatch.training.train import validation_loss

IDS = ["t0", "t1", "t2"]
COARSE = [0.9, 0.3, 0.05]  # the coarse ranking is sure of t0; t1 is gold


def judged(logits: list[float], offset: float = 0.0) -> ev.Judged:
    req = LabelledRequirement("r", "g", "how many players paid", ("t1",))
    return ev.Judged(req, CoarseAnswer(IDS, COARSE, ["t0"]), logits, 1.0, offset)


def by_hand(logits: list[float], priors: list[float], gold: int) -> float:
    """Mean BCE over the list's pairs + the softmax cross-entropy of its gold table."""
    s = [x + p for x, p in zip(logits, priors, strict=True)]
    bce = sum(math.log1p(math.exp(-v)) if i == gold else math.log1p(math.exp(v)) for i, v in enumerate(s))
    return bce / len(s) + math.log(sum(math.exp(v) for v in s)) - s[gold]


def test_it_is_the_listwise_training_loss_with_the_coarse_prior() -> None:
    logits = [0.2, 0.5, -1.0]
    assert validation_loss([judged(logits)], "listwise") == pytest.approx(
        by_hand(logits, [0, 0, 0], 1), rel=1e-5
    )
    priors = [0.5 * math.log(p / (1 - p)) for p in COARSE]
    assert validation_loss([judged(logits, 0.5)], "listwise") == pytest.approx(
        by_hand(logits, priors, 1), rel=1e-5
    )


def test_it_falls_as_the_gold_margin_grows_though_the_answer_does_not_change() -> None:
    """With the coarse prior, t0 stays on top at both logit gaps (the answer is the same), but the
    adapter that raised the gold table further has the lower loss: what stopping on it sees."""
    weak, stronger = judged([0.0, 0.3, 0.0], 0.5), judged([0.0, 1.0, 0.0], 0.5)
    for j in (weak, stronger):
        fused = [x + 0.5 * math.log(p / (1 - p)) for x, p in zip(j.logits, COARSE, strict=True)]
        assert max(range(3), key=fused.__getitem__) == 0
    assert validation_loss([stronger], "listwise") < validation_loss([weak], "listwise")


def test_lists_the_adapter_did_not_score_are_left_out() -> None:
    unscored = judged([])
    assert math.isnan(validation_loss([unscored], "listwise"))
    assert validation_loss([unscored, judged([0.2, 0.5, -1.0])], "bce") == pytest.approx(
        validation_loss([judged([0.2, 0.5, -1.0])], "bce")
    )
