"""Chinese characters the ranker base cannot read, written in pinyin it can.

The default base (all-MiniLM-L6-v2) has an English vocabulary: it holds a few hundred Chinese
characters and reads every other one as `[UNK]`. On the demo's requirements 68 % of the Chinese
characters were `[UNK]` (230 of 283 distinct ones): "每个渠道每天有多少活跃玩家" reached the
cross-encoder as `[UNK] [UNK] [UNK] 道 [UNK] 天 有 [UNK] [UNK] [UNK] [UNK] [UNK] 家`, and the table
comment "渠道维度表" as `[UNK] 道 [UNK] [UNK] [UNK]` — no adapter can learn that these two match.

`SpelledTokenizer` wraps the base's tokenizer: before any text is tokenized, each Chinese character
the vocabulary does not hold is replaced by its toneless pinyin syllable (pypinyin), so the same
character always becomes the same word pieces on both sides of a pair ("渠道" → "qu 道"), and an
adapter can learn what they mean. A base whose vocabulary holds the characters (a multilingual one)
is left untouched: nothing it knows is rewritten. Training, validation, the gate and serving all
tokenize through `ranking.model.load_base`, so they all read the same text.
"""

from __future__ import annotations

import re
from typing import Any

_CJK = re.compile(r"[\u4e00-\u9fff]")
_SPACES = re.compile(r"\s{2,}")


class SpelledTokenizer:
    """A Hugging Face tokenizer whose `__call__` spells out the Chinese characters its vocabulary
    lacks (module docstring); every other attribute is the wrapped tokenizer's."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._spelled: dict[str, str] = {}  # character -> itself (known) or its pinyin

    def __getattr__(self, name: str) -> Any:
        if name in ("tokenizer", "_spelled"):  # not set yet (copy/unpickle): never recurse
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __call__(self, text: Any = None, text_pair: Any = None, **kwargs: Any) -> Any:
        return self.tokenizer(self.spell_all(text), self.spell_all(text_pair), **kwargs)

    def spell_all(self, text: Any) -> Any:
        """`spell` of a string, of each string of a list; anything else (None) as it is."""
        if isinstance(text, str):
            return self.spell(text)
        if isinstance(text, list | tuple):
            return [self.spell(t) if isinstance(t, str) else t for t in text]
        return text

    def spell(self, text: str) -> str:
        """`text` with each Chinese character the vocabulary lacks written as its pinyin syllable."""
        if not _CJK.search(text):
            return text
        out = _CJK.sub(lambda m: self._character(m.group()), text)
        return _SPACES.sub(" ", out).strip()

    def _character(self, char: str) -> str:
        spelled = self._spelled.get(char)
        if spelled is None:
            spelled = char if self._known(char) else f" {_pinyin(char)} "
            self._spelled[char] = spelled
        return spelled

    def _known(self, char: str) -> bool:
        ids = self.tokenizer(char, add_special_tokens=False)["input_ids"]
        return bool(ids) and self.tokenizer.unk_token_id not in ids


def _pinyin(char: str) -> str:
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(char, style=Style.NORMAL, errors="ignore")
    return syllables[0] if syllables else char
