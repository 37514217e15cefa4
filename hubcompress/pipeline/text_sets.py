"""Unlabelled text sets beside the task's own data: the texts embedding fidelity is measured on
(``validation.fidelity_texts``) and the texts a student is distilled on (``data.distill_texts``).
An entry of either key is a built-in set's name (this registry, like ``data.dataset``'s) or a text
file: ``.txt`` (one text per line) or csv / json / jsonl / parquet (column ``data.text_column``).

Built in: ``dialogue`` (1,254 English chat utterances, questions and answers on 21 topic files, from
chatterbot-corpus; the default fidelity set) and ``general`` (BBC News train articles and sentences
with movie-review snippets, for distillation). Provenance and licences: ``hubcompress/data``.

Example:
    >>> dialogue = load_text_set("dialogue")
    >>> dialogue.id, len(dialogue), len(dialogue.sample(400))
    ('dialogue', 1254, 400)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..recipe import DataSection, Recipe, located
from .data_files import read_splits, resolve_data_path

PACKAGED = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True)
class TextSet:
    """Texts without labels, with the id and name reports and cards give them.

    Example:
        >>> TextSet("t", "three texts", ["a", "b", "c"]).sample(2, seed=1).texts
        ['a', 'c']
    """

    id: str
    name: str
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, limit: int | None, seed: int = 0) -> TextSet:
        """At most ``limit`` texts, a random subset kept in file order (a fixed seed, so runs compare)."""
        if limit is None or limit >= len(self.texts):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.texts)), limit))
        return TextSet(self.id, self.name, [self.texts[i] for i in keep])


TEXT_SETS: dict[str, Callable[[], TextSet]] = {}


def register_text_set(name: str) -> Callable[[Callable[[], TextSet]], Callable[[], TextSet]]:
    """Register a built-in text set that ``validation.fidelity_texts`` and ``data.distill_texts`` can name.

    Example:
        >>> @register_text_set("two")
        ... def _two() -> TextSet:
        ...     return TextSet("two", "two texts", ["a fine day", "a long night"])
        >>> load_text_set(["two"]).texts
        ['a fine day', 'a long night']
        >>> del TEXT_SETS["two"]
    """

    def decorator(fn: Callable[[], TextSet]) -> Callable[[], TextSet]:
        TEXT_SETS[name] = fn
        return fn

    return decorator


def _packaged(name: str) -> list[str]:
    return _lines(PACKAGED / name)


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def split_sentences(text: str, min_words: int = 5) -> list[str]:
    """Paragraphs, then sentences (a stop before a capital or quote), of ``min_words`` words or more.

    Example:
        >>> split_sentences("Title line\\n\\nIt rained all day. Nobody came to the fair. Sad.", min_words=3)
        ['It rained all day.', 'Nobody came to the fair.']
    """
    out = []
    for paragraph in text.split("\n"):
        out += [s for s in _SENTENCE_END.split(" ".join(paragraph.split())) if len(s.split()) >= min_words]
    return out


@register_text_set("dialogue")
def _dialogue() -> TextSet:
    return TextSet("dialogue", "English dialogue from chatterbot-corpus", _packaged("dialogue.txt"))


DEFAULT_FIDELITY_TEXTS = "dialogue"  # validation.fidelity_texts when the recipe names none
GENERAL_NEWS_SENTENCES = 6000


@register_text_set("general")
def _general() -> TextSet:
    from .data import BUILTIN_DATASETS

    # Only BBC News' train split: its validation split is what the embedding probe scores.
    articles = BUILTIN_DATASETS["bbcnews"]().splits["train"].texts
    sentences = [s for article in articles for s in split_sentences(article)]
    news = random.Random(0).sample(sentences, min(GENERAL_NEWS_SENTENCES, len(sentences)))
    # Whole articles keep the long inputs the probe sees; sentences and snippets, the short ones a
    # similarity search compares.
    return TextSet("general", "general English (BBC News train articles and sentences, movie-review snippets)",
                   [*articles, *news, *_packaged("movie_snippets.txt")])


def _read_file(path: Path, shown: str, text_column: str) -> list[str]:
    if path.suffix.lower() == ".txt":
        texts = _lines(path)
        if not texts:
            raise DataError(f"{shown} has no text (every line is empty). Add texts, one per line.")
        return texts
    section = DataSection(text_column=text_column, label_column=None)
    return read_splits({"texts": [(path, shown)]}, section)["texts"].texts


def load_text_set(entries: str | Sequence[str], *, text_column: str = "text", base_dir: Path | None = None,
                  key: str = "texts") -> TextSet:
    """The texts of ``entries`` (built-in set names or file paths), in order, as one set.

    Args:
        entries: one entry or a list; a relative path is tried in ``base_dir`` (the recipe's folder)
            first, then in the working directory.
        text_column: the column read from csv / json / jsonl / parquet files.
        key: the recipe key the entries come from, for error messages.

    Raises:
        DataError: a file is missing, unreadable, empty or lacks the column.
    """
    entries = [entries] if isinstance(entries, str) else list(entries)
    if not entries:
        raise DataError(f"{key} is empty: name a built-in set ({', '.join(sorted(TEXT_SETS))}) or text files.")
    sets = [TEXT_SETS[entry]() if entry in TEXT_SETS else _file_set(entry, text_column, base_dir, key)
            for entry in entries]
    if len(sets) == 1:
        return sets[0]
    return TextSet("+".join(s.id for s in sets), " + ".join(s.name for s in sets), [t for s in sets for t in s.texts])


def _file_set(entry: str, text_column: str, base_dir: Path | None, key: str) -> TextSet:
    path = _resolve(entry, base_dir, key)
    return TextSet(Path(entry).stem, Path(entry).name, _read_file(path, entry, text_column))


def _resolve(entry: str, base_dir: Path | None, key: str) -> Path:
    try:
        return resolve_data_path(entry, key, base_dir)
    except DataError as error:
        detail = str(error).split(": ", 1)[-1]
        raise DataError(f"{key}: {detail} Or name a built-in set: {', '.join(sorted(TEXT_SETS))}.") from None


# Recipe keys whose entries are text sets.
TEXT_SET_KEYS = (("data", "distill_texts"), ("validation", "fidelity_texts"))


def check_text_set_paths(recipe: Recipe, base_dir: Path | None) -> None:
    """Every file ``data.distill_texts`` and ``validation.fidelity_texts`` name exists; a missing one
    is reported at its key, ``file:line: validation.fidelity_texts[0]: ...``.

    Raises:
        RecipeError: a file is missing and is not a built-in set's name (exit 2).
    """
    for section, name in TEXT_SET_KEYS:
        value = getattr(getattr(recipe, section) or object(), name, None)
        for index, entry in enumerate([value] if isinstance(value, str) else value or []):
            if entry in TEXT_SETS:
                continue
            try:
                _resolve(entry, base_dir, f"{section}.{name}")
            except DataError as error:
                loc = (section, name) if isinstance(value, str) else (section, name, index)
                raise located(recipe, loc, str(error).split(": ", 1)[-1]) from None
