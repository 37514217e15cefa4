"""Text packaged with hubcompress (one text per line), read by :mod:`hubcompress.pipeline.text_sets`;
``assemble.py`` rebuilds the files from the PyPI packages they come from, ``LICENSES.md`` says whose
they are."""
