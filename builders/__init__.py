"""Source builders and the build steps they share.

One module per source tells that source's whole story (how to read it, how it pairs, what it
rejects). The build runs in named steps, each a module: readers (what a source provides) ->
prepare (check, split, offer pairs, render their columns; in worker processes, parallel.py)
-> decide (ties, duplicates, length balance, labels) -> writer; pipeline.py runs them and
writes the manifest and the card. `SOURCES` maps each `--source` name (the schema's
SOURCE_NAMES, in build order) to its spec; the source modules are imported when it is first
asked for, so that importing `critic_data.builders.options` stays light.
"""

from __future__ import annotations

import importlib


def __getattr__(name: str):
    if name == "SOURCES":
        from critic_data.schemas import SOURCE_NAMES

        sources = {source: importlib.import_module(f"critic_data.builders.{source}").SOURCE for source in SOURCE_NAMES}
        globals()["SOURCES"] = sources
        return sources
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
