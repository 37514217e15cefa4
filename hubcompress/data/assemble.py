"""Rebuild the packaged text sets from the PyPI files they come from (run by hand, never at run time).

    pip download --no-deps chatterbot-corpus==1.3.3 -d /tmp/texts
    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d /tmp/texts
    python -m hubcompress.data.assemble /tmp/texts/chatterbot_corpus-1.3.3-py2.py3-none-any.whl \\
        /tmp/texts/vaderSentiment-3.3.2.tar.gz

writes ``dialogue.txt`` (every distinct English utterance of chatterbot-corpus with four words or
more, code answers left out) and ``movie_snippets.txt`` (6,000 of the 10,605 Rotten Tomatoes
snippets in vaderSentiment's sdist, drawn with seed 0) beside this file, one text per line.
Provenance and licences: ``LICENSES.md`` beside this file, and the README ("Text sets").
"""

from __future__ import annotations

import io
import logging
import random
import sys
import tarfile
import zipfile
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
MOVIE_SNIPPETS = 6000


def _one_line(text: str) -> str:
    return " ".join(text.split())


def dialogue(wheel: Path) -> list[str]:
    out: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(n for n in archive.namelist() if "/data/english/" in n and n.endswith(".yml")):
            for conversation in yaml.safe_load(archive.read(name)).get("conversations") or []:
                for utterance in conversation:
                    text = _one_line(str(utterance))
                    # Code answers (``` blocks) are not sentences; a two-word greeting says little.
                    if len(text.split()) >= 4 and "```" not in text:
                        out.setdefault(text.lower(), text)
    return list(out.values())


def movie_snippets(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile(next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz")))
        with tarfile.open(fileobj=io.BytesIO(inner.read())) as data:
            member = next(m for m in data.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt"))
            lines = data.extractfile(member).read().decode("utf-8", errors="replace").splitlines()
    texts = [_one_line(line.split("\t", 2)[2]) for line in lines if line.count("\t") >= 2]
    return random.Random(0).sample(texts, MOVIE_SNIPPETS)


def main(chatterbot_wheel: str, vader_sdist: str) -> None:
    for name, texts in (("dialogue.txt", dialogue(Path(chatterbot_wheel))),
                        ("movie_snippets.txt", movie_snippets(Path(vader_sdist)))):
        (HERE / name).write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
        logger.info("%s: %d texts", name, len(texts))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(*sys.argv[1:])
