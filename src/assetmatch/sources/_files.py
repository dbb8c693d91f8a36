"""Reading record files for the file-based sources: JSON Lines, JSON, YAML and CSV, optionally gzip'd.

Every reader yields `(location, record)` pairs where `location` is `"<file>:<line>"`, so a bad
record can be reported precisely. A record or line that cannot be parsed is refused through
`BadRecords`: counted, warned about with its line number, and handed to the pipeline as it was
read, which quarantines it with the reason. One bad line never stops the rest of the file.

A file that cannot be read as a whole (a truncated JSON document, unparseable YAML, a CSV whose
quoting breaks so the rest cannot be read, a top level of the wrong shape) raises
`SourceFileError`: the source fails with a one-line message rather than ingesting "ok" with
nothing. Text is decoded as UTF-8 with replacement characters for broken bytes, so the
pipeline's encoding check can quarantine such a record instead of the whole file failing to decode.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import yaml
from pydantic import Field

from assetmatch.config import ConfigError
from assetmatch.sources.base import SourceConfig, SourceReport

FileFormat = Literal["auto", "jsonl", "json", "yaml", "csv"]
Record = dict[str, Any]

_EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".csv": "csv",
}
# Reports keep this many bad-record messages; the count keeps going (a garbage file must not
# turn the report itself into a giant object).
MAX_MESSAGES = 200


class FileSourceConfig(SourceConfig):
    """Options shared by the sources that read record files."""

    path: str = Field(
        description="A file, or a glob such as `exports/*.jsonl.gz` (all matches are read, sorted)."
    )
    format: FileFormat = Field(
        default="auto",
        description="File format; `auto` picks it from the extension (.jsonl/.ndjson, .json, .yaml/.yml, .csv; "
        "a trailing .gz is allowed).",
    )


class SourceFileError(ValueError):
    """A file a source reads cannot be read as a whole (unparseable, truncated, wrong top-level shape)."""


class BadRecords:
    """Refuses records that could not be turned into a model: counted (`bad_records`), warned about,
    and handed to the pipeline with the raw record (`SourceReport.reject`), which quarantines them."""

    def __init__(self, report: SourceReport, table: str, counter: str = "bad_records") -> None:
        self.report = report
        self.table = table
        self.counter = counter

    def __call__(self, location: str, reason: str, record: Any = None) -> None:
        self.report.reject(self.table, location, reason, record)
        self.report.count(self.counter)
        n = self.report.counts[self.counter]
        if n <= MAX_MESSAGES:
            self.report.warn(f"{location}: skipped bad record: {reason}")
        elif n == MAX_MESSAGES + 1:
            self.report.warn(f"more than {MAX_MESSAGES} bad records; further ones are only counted")


def expand_paths(pattern: str) -> list[Path]:
    """The files named by `pattern` (a path or a glob), sorted; a ConfigError if there are none."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if glob.has_magic(pattern):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if matches:
            return matches
        raise ConfigError(f"no file matches {pattern!r}")
    raise ConfigError(f"file {pattern!r} does not exist")


def detect_format(path: Path, fmt: FileFormat) -> FileFormat:
    """`fmt` unless it is `auto`; then the format named by the extension (ignoring .gz)."""
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise ConfigError(
        f"cannot tell the format of {path.name} from its extension; set the `format` option "
        f"(one of {sorted(set(_EXTENSIONS.values()))})"
    )


def open_text(path: Path) -> IO[str]:
    """Open a text file, transparently gunzipping `*.gz`; UTF-8 (BOM tolerated), bad bytes replaced."""
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return path.open("r", encoding="utf-8-sig", errors="replace", newline="")


def iter_jsonl(path: Path, bad: BadRecords) -> Iterator[tuple[str, Record]]:
    with open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"{path}:{lineno}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                bad(location, f"invalid JSON ({exc.msg} at column {exc.colno})", line.rstrip("\r\n"))
                continue
            if not isinstance(value, dict):
                bad(location, f"expected a JSON object, got {type(value).__name__}", value)
                continue
            yield location, value


def iter_csv(path: Path, bad: BadRecords) -> Iterator[tuple[str, Record]]:
    """Rows as dicts keyed by the header; empty cells are dropped so defaults apply."""
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                location = f"{path}:{reader.line_num}"
                if None in row:  # more cells than header columns
                    cells = f"{len(row) - 1 + len(row[None])} cells but the header has {len(row) - 1}"
                    bad(location, cells, {str(k): v for k, v in row.items()})
                    continue
                record = {k.strip(): v for k, v in row.items() if k is not None and v not in (None, "")}
                if record:
                    yield location, record
        except csv.Error as exc:
            # The csv module cannot resynchronise after a broken quote: the rest of the file would
            # be lost silently, so the whole file fails.
            raise SourceFileError(f"{path}:{reader.line_num}: unreadable CSV from here on ({exc})") from None


def _yaml_loader() -> type[yaml.SafeLoader]:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[no-any-return]


def iter_yaml(
    path: Path, bad: BadRecords, list_key: str | None = None, group_key: str | None = None
) -> Iterator[tuple[str, Record]]:
    """Items of a YAML file with their line numbers.

    Accepted shapes: a list of mappings; a mapping with the list under `list_key`; or, when
    `group_key` is given, a mapping `name -> list` where each item gets `group_key: name` unless
    it sets it itself (e.g. glossary `business -> [terms]`). Each item is constructed on its own,
    so one malformed item is reported and skipped.
    """
    with open_text(path) as handle:
        loader = _yaml_loader()(handle)
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SourceFileError(f"{where}: invalid YAML ({problem}); the file cannot be read") from None
    if root is None:
        return

    groups: list[tuple[str | None, yaml.Node]] = []
    if isinstance(root, yaml.SequenceNode):
        groups.append((None, root))
    elif isinstance(root, yaml.MappingNode):
        keys = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
        if list_key and list_key in keys and isinstance(keys[list_key], yaml.SequenceNode):
            groups.append((None, keys[list_key]))
        elif group_key:
            for key, value in root.value:
                location = f"{path}:{key.start_mark.line + 1}"
                if isinstance(value, yaml.SequenceNode) and isinstance(key, yaml.ScalarNode):
                    groups.append((str(key.value), value))
                else:
                    raw = loader.construct_document(value) if isinstance(key, yaml.ScalarNode) else None
                    bad(location, f"expected `{group_key} -> list of items` at the top level", raw)
        else:
            expected = f"a list, or a mapping with a `{list_key}` list" if list_key else "a list"
            raise SourceFileError(f"{path}: expected {expected} at the top level")
    else:
        raise SourceFileError(f"{path}: expected a list or a mapping at the top level")

    for group, sequence in groups:
        for node in sequence.value:
            location = f"{path}:{node.start_mark.line + 1}"
            try:
                value = loader.construct_document(node)
            except yaml.YAMLError as exc:
                bad(location, f"invalid YAML item ({str(exc).splitlines()[0]})", yaml.serialize(node))
                continue
            if not isinstance(value, dict):
                bad(location, f"expected a mapping, got {type(value).__name__}", value)
                continue
            if group is not None and group_key:
                value.setdefault(group_key, group)
            yield location, value


def iter_json(path: Path, bad: BadRecords, list_key: str | None = None) -> Iterator[tuple[str, Record]]:
    """A JSON document: a list of objects, or an object with the list under `list_key`."""
    with open_text(path) as handle:
        try:
            doc = json.load(handle)
        except json.JSONDecodeError as exc:
            raise SourceFileError(
                f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno}); "
                "the file is truncated or not JSON, nothing was read from it"
            ) from None
    if isinstance(doc, dict) and list_key and isinstance(doc.get(list_key), list):
        doc = doc[list_key]
    if not isinstance(doc, list):
        expected = (
            f"a list of objects, or an object with a `{list_key}` list" if list_key else "a list of objects"
        )
        raise SourceFileError(f"{path}: expected {expected} at the top level, got {type(doc).__name__}")
    for i, value in enumerate(doc):
        location = f"{path}:item {i + 1}"
        if isinstance(value, dict):
            yield location, value
        else:
            bad(location, f"expected an object, got {type(value).__name__}", value)


def iter_records(
    config: FileSourceConfig,
    report: SourceReport,
    *,
    table: str,
    list_key: str | None = None,
    group_key: str | None = None,
) -> Iterator[tuple[str, FileFormat, Record]]:
    """Every record of every file matched by `config.path`, as `(location, format, record)`.

    `table`: the lake table the records are for (where refused ones are quarantined). Raises
    `SourceFileError` for a file that cannot be read as a whole.
    """
    bad = BadRecords(report, table)
    for path in expand_paths(config.path):
        fmt = detect_format(path, config.format)
        report.count("files")
        if fmt == "jsonl":
            rows = iter_jsonl(path, bad)
        elif fmt == "csv":
            rows = iter_csv(path, bad)
        elif fmt == "yaml":
            rows = iter_yaml(path, bad, list_key=list_key, group_key=group_key)
        else:
            rows = iter_json(path, bad, list_key=list_key)
        for location, record in rows:
            yield location, fmt, record


def first(record: Record, *keys: str, default: Any = None) -> Any:
    """The value of the first of `keys` present (and not None) in `record`: accepts field aliases."""
    for key in keys:
        value = record.get(key)
        if value is not None:
            return value
    return default


def as_text(value: Any) -> str:
    """A scalar as text ('' for None)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def as_bool(value: Any) -> bool:
    """Booleans as files spell them: true/false, yes/no, 1/0, y/n, t/f, PRI (MySQL's COLUMN_KEY)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "t", "1", "pri", "pk", "x"):
        return True
    if text in ("false", "no", "n", "f", "0", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def as_list(value: Any) -> list[str]:
    """A list of strings from a list, a JSON list in a string, or a `;`- or `|`-separated string (CSV cells)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [as_text(v) for v in value if v is not None and as_text(v) != ""]
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        parsed = json.loads(text)
        if not isinstance(parsed, list):
            raise ValueError(f"expected a list, got {text!r}")
        return [as_text(v) for v in parsed]
    separator = ";" if ";" in text else "|" if "|" in text else None
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]
