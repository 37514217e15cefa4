"""Reading a recipe's local data files (csv, json, jsonl, parquet) through ``datasets.load_dataset``
(its packaged csv / json / parquet builders and its cache) into raw splits: texts, optional text pairs
and labels as written, with each row's place (file and row) for error messages. When datasets cannot
read a JSON file, the message names the first line that is not a JSON object.

Example:
    >>> import tempfile, pathlib
    >>> from hubcompress.recipe import DataSection
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "train.csv").write_text("text,label\\ngood film,1\\n")
    >>> split = read_splits({"train": [(folder / "train.csv", "train.csv")]}, DataSection())["train"]
    >>> split.texts, split.labels, split.places
    (['good film'], ['1'], ['train.csv row 1'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubcompress.errors import DataError
from hubcompress.recipe import DataSection, Recipe, located

# datasets' packaged builder for each file suffix.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SUFFIXES = tuple(BUILDERS)


@dataclass
class RawSplit:
    """A split as read, before labels become ids; ``places`` locates each row for error messages."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[Any] | None
    places: list[str]


def load_dataset(*args: Any, where: str, fix: str = "Fix the data, or check the hub id and the network "
                 "(HF_HUB_OFFLINE=1 reads only the datasets cache).", **kwargs: Any) -> Any:
    """``datasets.load_dataset``, its many error types turned into one ``DataError`` naming ``where``
    and saying what to do (``fix``)."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except FileNotFoundError as error:
        raise DataError(f"{where}: not found ({error}). Fix the path or the hub id.") from None
    except Exception as error:  # noqa: BLE001 - datasets raises many types; all mean "cannot read it"
        cause = error.__cause__ or error.__context__ or error
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DataError(f"{where}: cannot read it ({type(cause).__name__}: {detail}). {fix}") from None


def _csv_features(path: Path, shown: str) -> Any:
    """Every CSV column as text: type inference would turn a text column of numbers with one empty
    cell into floats ('12' -> '12.0')."""
    import datasets
    import pandas

    try:
        header = pandas.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    except pandas.errors.EmptyDataError:
        raise DataError(f"{shown} has no rows (the file is empty or holds only a header). Add rows, or point "
                        "data.files at the file that holds them.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{shown}: cannot read it as csv ({type(error).__name__}: {error}). Fix the file, save it "
                        "as UTF-8, or name it with the suffix of its format (.csv, .json, .jsonl, .parquet).") from None
    return datasets.Features({str(column): datasets.Value("string") for column in header})


def _json_diagnosis(path: Path, shown: str) -> DataError | None:
    """Why datasets could not read a JSON (lines) file, with the line to fix, when one line is to blame."""
    text = path.read_text(encoding="utf-8-sig")  # read_file checked it is UTF-8
    if text.lstrip().startswith(("[", "{")) and path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("["):
                return DataError(f"{shown}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno}). Fix the file.")
        else:
            return None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            return DataError(f"{shown}:{number}: not valid JSON ({err.msg}, column {err.colno}); each line must be "
                             "one JSON object. Fix or delete that line.")
        if not isinstance(record, dict):
            return DataError(f"{shown}:{number}: expected a JSON object with named columns, got a "
                             f"{type(record).__name__}. Write each row as {{\"text\": ..., \"label\": ...}}.")
    return None


def read_file(path: Path, shown: str, split: str = "train") -> Any:
    """One local file as a ``datasets.Dataset`` (a JSON file ``{"data": [...]}`` reads its list).

    Raises:
        DataError: the file is a folder, empty, not UTF-8, not valid JSON (naming the line) or otherwise
            unreadable by datasets.
    """
    builder = BUILDERS.get(path.suffix.lower())
    if path.is_dir():
        raise DataError(f"{shown} is a folder; text data comes in files (.csv, .json, .jsonl, .parquet). Name a "
                        "file (image-classification reads folders of images).")
    if builder is None:
        raise DataError(f"{shown}: name data files of one of these formats with its suffix: {', '.join(SUFFIXES)}.")
    empty = DataError(f"{shown} has no rows (the file is empty or holds only a header). Add rows, or point "
                      "data.files at the file that holds them.")
    if builder != "parquet":
        raw = path.read_bytes()
        try:
            # pyarrow reads bytes that are not UTF-8 without complaint; the rows would fail much later.
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{shown}: not UTF-8 text (byte {error.start} cannot be decoded); save it as UTF-8, or "
                            "check that data.files names the data and not another file.") from None
        if not raw.strip():
            raise empty
    options = {"features": _csv_features(path, shown)} if builder == "csv" else {}
    fix = (f"Fix the file (one column may hold values of different types), or name it with the suffix of its "
           f"format ({', '.join(SUFFIXES)}).")
    try:
        dataset = load_dataset(builder, data_files={split: [str(path)]}, split=split, where=shown, fix=fix, **options)
    except DataError as error:
        if "corresponds to no data" in str(error):  # a CSV header without rows
            raise empty from None
        raise (_json_diagnosis(path, shown) if builder == "json" else None) or error from None
    if builder == "json" and dataset.column_names == ["data"] and path.suffix.lower() == ".json":
        dataset = load_dataset(builder, data_files={split: [str(path)]}, split=split, where=shown, fix=fix,
                               field="data")
    if len(dataset) == 0:
        raise empty
    return dataset


def _read_file(path: Path, shown: str, section: DataSection) -> RawSplit:
    dataset = read_file(path, shown)
    rows = [(f"row {i}", record) for i, record in enumerate(dataset, start=1)]
    return raw_split(list(dataset.column_names), rows, shown, section)


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
