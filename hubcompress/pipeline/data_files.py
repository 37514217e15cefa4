"""Reading a recipe's local data files (csv, json, jsonl, parquet) into raw splits: texts, optional
text pairs and labels as written, with each row's place (file and line) for error messages.

Example:
    >>> import tempfile, pathlib
    >>> from hubcompress.recipe import DataSection
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "train.csv").write_text("text,label\\ngood film,1\\n")
    >>> split = read_splits({"train": [(folder / "train.csv", "train.csv")]}, DataSection())["train"]
    >>> split.texts, split.labels
    (['good film'], ['1'])
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubcompress.errors import DataError
from hubcompress.recipe import DataSection, Recipe, located

SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


@dataclass
class RawSplit:
    """A split as read, before labels become ids; ``places`` locates each row for error messages."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[Any] | None
    places: list[str]


def _read_records(path: Path, shown: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Columns and (place, record) rows of one file; the place is e.g. 'line 3' or 'record 2'."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [(f"line {reader.line_num}", row) for row in reader]
            return list(reader.fieldnames or []), rows
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise DataError(f"{shown}: reading parquet needs pyarrow: pip install pyarrow") from err
        records = pq.read_table(path).to_pylist()
        return _columns_of(records), [(f"row {i}", r) for i, r in enumerate(records, 1)]
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("["):
                raise DataError(f"{shown}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno}). "
                                f"Fix the file.") from err
            data = None  # not one JSON document: read it as JSON lines below
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if isinstance(data, list):
            rows = [(f"record {i}", r) for i, r in enumerate(data, 1)]
            return _columns_of(r for _, r in _check_objects(rows, shown)), rows
        if data is not None:
            raise DataError(f"{shown}: expected a list of records or {{\"data\": [...]}}; "
                            f"got a JSON {type(data).__name__}. Rewrite the file as a list of objects or as JSON lines.")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{shown}:{number}: not valid JSON ({err.msg}, column {err.colno}); "
                            f"each line must be one JSON object. Fix or delete that line.") from err
    return _columns_of(r for _, r in _check_objects(rows, shown)), rows


def _check_objects(rows: list[tuple[str, Any]], shown: str) -> list[tuple[str, Any]]:
    for place, record in rows:
        if not isinstance(record, dict):
            raise DataError(f"{shown} {place}: expected a JSON object with named columns, "
                            f"got a {type(record).__name__}. Write each row as {{\"text\": ..., \"label\": ...}}.")
    return rows


def _columns_of(records: Iterable[dict[str, Any]]) -> list[str]:
    # Dict keys keep first-seen order, so the listed columns follow the file.
    return list(dict.fromkeys(key for record in records for key in record))


def _read_file(path: Path, shown: str, section: DataSection) -> RawSplit:
    if path.is_dir():
        raise DataError(f"{shown} is a folder; text data comes in files (.csv, .json, .jsonl, .parquet). Name a "
                        "file (image-classification reads folders of images).")
    try:
        columns, rows = _read_records(path, shown)
    except UnicodeDecodeError as error:
        raise DataError(f"{shown}: not UTF-8 text (byte {error.start} cannot be decoded); save it as UTF-8, or "
                        "check that data.files names the data and not another file.") from None
    except (OSError, csv.Error, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{shown}: cannot read it as {path.suffix.lstrip('.') or 'a data file'} "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Fix the "
                        "file, or name it with the suffix of its format (.csv, .json, .jsonl, .parquet).") from None
    if not rows:
        raise DataError(f"{shown} has no rows (the file is empty or holds only a header). Add rows, or point "
                        "data.files at the file that holds them.")
    return raw_split(columns, rows, shown, section)


def raw_split(columns: list[str], rows: list[tuple[str, dict[str, Any]]], shown: str, section: DataSection) -> RawSplit:
    """The recipe's text, pair and label columns of ``rows`` ((place, record) pairs); ``shown`` names
    the source in errors, which say the column and the row."""
    wanted = {"text_column": section.text_column, "text_pair_column": section.text_pair_column,
              "label_column": section.label_column}
    for key, column in wanted.items():
        if column is not None and column not in columns:
            listed = ", ".join(columns) or "(none)"
            raise DataError(f"{shown} has no column {column!r}; its columns are: {listed}. "
                            f"Set data.{key} in the recipe" + (" (null when the data has no labels)."
                                                                 if key == "label_column" else "."))
    raw = RawSplit([], [] if section.text_pair_column else None, [] if section.label_column else None, [])
    for place, record in rows:
        raw.texts.append(_text(record.get(section.text_column), shown, place, section.text_column))
        if raw.pairs is not None:
            raw.pairs.append(_text(record.get(section.text_pair_column), shown, place, section.text_pair_column))
        if raw.labels is not None:
            label = record.get(section.label_column)
            if label is None or (isinstance(label, str) and not label.strip()):
                raise DataError(f"{shown} {place}: no label in column {section.label_column!r}. "
                                f"Label the row or delete it.")
            raw.labels.append(label)
        raw.places.append(f"{shown} {place}")
    return raw


def _text(value: Any, shown: str, place: str, column: str | None) -> str:
    if value is None or not str(value).strip():
        raise DataError(f"{shown} {place}: empty text in column {column!r}. Fill it in or delete the row.")
    return value if isinstance(value, str) else str(value)


def _concat(parts: list[RawSplit]) -> RawSplit:
    out = RawSplit([], None if parts[0].pairs is None else [], None if parts[0].labels is None else [], [])
    for part in parts:
        out.texts += part.texts
        out.places += part.places
        if out.pairs is not None:
            out.pairs += part.pairs or []
        if out.labels is not None:
            out.labels += part.labels or []
    return out


def resolve_data_path(path: str, split: str, base_dir: Path | None) -> Path:
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        tried = [candidate]
    else:
        tried = ([base_dir / candidate] if base_dir is not None else []) + [Path.cwd() / candidate]
    for p in tried:
        if p.is_file() or p.is_dir():  # a folder: image-classification's images, one subfolder per class
            return p
    raise DataError(f"data.files.{split}: {path} not found (looked at {', '.join(map(str, tried))}). "
                    f"Fix the path; a relative path is taken from the recipe's folder, then the working directory.")


def check_data_paths(recipe: Recipe, base_dir: Path | None) -> None:
    """Every file the recipe's ``data.files`` names exists (the recipe's folder first, then the working
    directory); a missing one is reported at its key, ``file:line: data.files.<split>: ...``.

    Raises:
        RecipeError: a file is missing (exit 2, like every bad input).
    """
    files = recipe.data.files if recipe.data else None
    for split, paths in (files or {}).items():
        for index, path in enumerate([paths] if isinstance(paths, str) else paths):
            try:
                resolve_data_path(path, split, base_dir)
            except DataError as error:
                loc = ("data", "files", split) if isinstance(paths, str) else ("data", "files", split, index)
                raise located(recipe, loc, str(error).split(": ", 1)[-1]) from None


def read_splits(files: dict[str, list[tuple[Path, str]]], section: DataSection) -> dict[str, RawSplit]:
    raws = {s: _concat([_read_file(path, shown, section) for path, shown in fs]) for s, fs in files.items()}
    for split, raw in raws.items():
        if not raw.texts:
            raise DataError(f"split {split!r} has no rows ({', '.join(shown for _, shown in files[split])}). "
                            f"Add rows, or point data.files.{split} at another file.")
    return raws
