"""build.json, the manifest of a built dataset: its one type (`Manifest`) and its one reader.

The build writes build.json from a dict (builders/pipeline.py; its bytes are part of a build's
output). Everything that reads it back reads it here: push, inspect and the card's figures
through `read_manifest(folder)`, the build's summary and the card from the dict the build made
through `Manifest.from_dict`. Either checks every rule below, gives the values their types, and
ends an edited, damaged or foreign manifest in one line naming the first thing wrong:
- build.json is a regular file holding a JSON object written by critic-data (`tool.name`);
- `format` is a known output layout (`critic_data.schemas.FORMATS`), `template` a known prompt
  template, `seed` an integer, `options` and `inputs` objects, `command` a list of strings or
  null, `timings.total_seconds` a number;
- every source is a known one (`SOURCE_NAMES`); its counts are whole numbers (not true, 7.0 or
  "7") that add up: rows read = used + rejected, pairs formed = kept + filtered + duplicates;
  its label balance is a whole number per split and answer (`ANSWERS`), its rejects by reason and
  duplicates maps of whole numbers;
- every split has whole-number rows and bytes, and lists its shards as paths inside the folder
  (relative, no ".."), no shard listed twice across splits; its `xxh3_128` maps exactly those
  paths to 32 hex digits (a build of an older critic-data records none: None);
- `contamination` and `difficulty`, present when the build curated (builders/curation.py), are objects.
Whether the folder holds those files, rows and bytes is for whoever reads them to check
(`critic_data.hub.check_shard_bytes`, the rule push and inspect share). The card's template also
renders parts left untyped here (`options`, `inputs`): `Manifest.raw` is the JSON as read.
A leaf: it imports nothing of critic-data's but UserError and the schemas.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from critic_data import UserError
from critic_data.schemas import ANSWERS, FORMATS, SOURCE_NAMES
from critic_data.schemas.prompts import TEMPLATES

COUNTS = ("rows_read", "rows_used", "rows_rejected", "pairs_formed", "duplicates_dropped", "pairs_kept")
_REQUIRED = object()
# A source's maps of whole numbers, each with its default: the card lists every source's rejects, and builds
# that had nothing else to put in the others (an older critic-data's, a source without re-judged pairs) leave
# them out.
SOURCE_MAPS = {"rejects_by_reason": _REQUIRED, "duplicates_of": {}, "conflicting_duplicates_of": {}, "notes": {},
               "kept_by_origin": {}}
_XXH3_128 = re.compile(r"[0-9a-f]{32}")
_SHORT = reprlib.Repr()  # a value as a message shows it: one short line, however large or deep
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 2, 40, 40, 4, 4
_shown = _SHORT.repr


class ManifestError(ValueError):
    """What makes a value not a critic-data manifest, in words (`read_manifest` names the file)."""


@dataclass(frozen=True)
class Counts:
    """What became of a source's rows and pairs: rows read = used + rejected; pairs formed =
    kept + filtered (per rule) + duplicates dropped."""

    rows_read: int
    rows_used: int
    rows_rejected: int
    pairs_formed: int
    pairs_filtered: dict[str, int]  # rule -> pairs
    duplicates_dropped: int
    pairs_kept: int


@dataclass(frozen=True)
class Source:
    counts: Counts
    label_balance: dict[str, dict[str, int]]  # split -> answer ("1", "2", "tie") -> pairs kept
    rejects_by_reason: dict[str, int]
    duplicates_of: dict[str, int]  # the source whose copy was kept -> pairs dropped
    conflicting_duplicates_of: dict[str, int]  # of those, the copies labelled otherwise than the kept one
    notes: dict[str, int]
    kept_by_origin: dict[str, int]  # re-judged pairs kept, by the dataset each comes from


@dataclass(frozen=True)
class Split:
    files: tuple[str, ...]  # its shards, relative to the dataset folder, in order
    rows: int
    bytes: int
    xxh3_128: dict[str, str] | None  # shard -> content hash; None: a build of an older critic-data


@dataclass(frozen=True)
class Manifest:
    format: str
    template: str
    seed: int
    options: dict[str, Any]  # the build's resolved options, by field name
    inputs: dict[str, dict]  # source -> where its snapshot came from
    sources: dict[str, Source]  # in build order
    splits: dict[str, Split]
    total_seconds: float
    command: tuple[str, ...] | None  # None: built from Python
    contamination: dict | None  # benchmark -> what --decontaminate found (builders/curation.py); None: not asked
    difficulty: dict | None  # what --difficulty kept and dropped (builders/curation.py); None: not asked
    raw: dict = field(repr=False, compare=False)  # the JSON as read: what the card's template renders

    @classmethod
    def from_dict(cls, data: object) -> Manifest:
        """The manifest `data` (build.json's content) holds; ManifestError for the first rule it breaks."""
        if not isinstance(data, dict):
            raise ManifestError(f"{_shown(data)} is not a JSON object")
        tool = _object(_take(data, "tool"), "tool")
        if tool.get("name") != "critic-data" or not isinstance(tool.get("version"), str):
            raise ManifestError(f"tool is {_shown(tool)}, not critic-data with its version")
        return cls(format=_known(_take(data, "format"), FORMATS, "format"),
                   template=_known(_take(data, "template"), TEMPLATES, "template"),
                   seed=_integer(_take(data, "seed"), "seed"),
                   options=_object(_take(data, "options"), "options"),
                   inputs={name: _object(origin, f"inputs.{_name(name)}")
                           for name, origin in _object(_take(data, "inputs"), "inputs").items()},
                   sources={name: _source(name, entry)
                            for name, entry in _object(_take(data, "sources"), "sources").items()},
                   splits=_splits(_object(_take(data, "splits"), "splits")),
                   total_seconds=_seconds(_take(_object(_take(data, "timings"), "timings"), "total_seconds", "timings"),
                                          "timings.total_seconds"),
                   command=_command(data.get("command")),
                   contamination=_optional_object(data, "contamination"),
                   difficulty=_optional_object(data, "difficulty"),
                   raw=data)


# The options that choose which of a build's pairs are kept by measuring them against something outside
# the sources (builders/curation.py): a build with other values of these is the same dataset, less some
# rows. The others decide the rows themselves, and so do the inputs' contents.
CURATION_OPTIONS = ("decontaminate", "image_matches", "drop_image_matches", "difficulty", "pass_rate")
_WHERE_OPTIONS = ("out", "inputs", "image_root", "overwrite")  # where the build reads and writes, not what


def dataset_identity(options: dict, inputs: dict) -> dict:
    """What decides a build's rows before curation: its options as build.json records them, less the
    curation options and those naming folders; and each input's content (a local snapshot's files with
    their sizes and fingerprints, a Hub snapshot's repo and commit), not where it lay. Two builds of one
    identity form the same pairs with the same ids: `critic-data difficulty` records it of the dataset it
    measures, and `build --difficulty` refuses a run measured on another."""
    shaping = {name: value for name, value in options.items() if name not in (*CURATION_OPTIONS, *_WHERE_OPTIONS)}
    content = {name: {key: value for key, value in origin.items() if key != "folder"}
               for name, origin in inputs.items()}
    return {"options": shaping, "inputs": content}


def read_manifest(folder: Path) -> Manifest:
    """The manifest of the dataset folder `folder`; one line (UserError) when build.json is
    missing, not a regular file, not JSON, or breaks a rule (see the module docstring)."""
    path = folder / "build.json"
    if not path.is_file():  # a FIFO would block the read forever
        if path.exists() or path.is_symlink():
            raise UserError(f"{path} is not a regular file; rebuild the dataset, or put its build.json back")
        raise UserError(f"{folder} has no build.json: not a folder made by `critic-data build`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # ValueError: not UTF-8, or not JSON
        raise UserError(f"{path} does not read as JSON ({type(error).__name__}); rebuild the dataset") from None
    try:
        return Manifest.from_dict(data)
    except ManifestError as error:
        raise not_a_manifest(path, str(error)) from None


def written_by_critic_data(folder: Path) -> bool:
    """Whether `folder`'s build.json names critic-data as the tool that wrote it: what lets a build
    with --overwrite replace the folder. Only that field is read: a damaged or edited manifest of
    ours can still be rebuilt over."""
    try:
        return json.loads((folder / "build.json").read_text(encoding="utf-8"))["tool"]["name"] == "critic-data"
    except (OSError, ValueError, RecursionError, TypeError, KeyError):
        return False


def not_a_manifest(path: Path, reason: str) -> UserError:
    """The one line for a build.json at `path` that cannot be used, and why."""
    return UserError(f"{path} is not a critic-data manifest ({reason}); rebuild the dataset")


# --- the rules, one value at a time: `where` names the value in the message ------------------------

def _name(key: object) -> str:
    """A key or path as a message shows it: as it is, or quoted when it holds a line break or another
    character that is not printable (the message stays one line)."""
    return key if isinstance(key, str) and key.isprintable() and key else repr(key)


def _take(entry: dict, key: str, where: str = "", default=_REQUIRED):
    if key in entry:
        return entry[key]
    if default is _REQUIRED:
        raise ManifestError(f"{where + '.' if where else ''}{key} is missing")
    return default


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} is {_shown(value)}, not an object")
    return value


def _optional_object(data: dict, key: str) -> dict | None:
    value = data.get(key)
    return None if value is None else _object(value, key)


def _whole(value, where: str) -> int:
    if type(value) is not int or value < 0:  # not bool, not 7.0, not "7"
        raise ManifestError(f"{where} is {_shown(value)}, not a whole number")
    return value


def _integer(value, where: str) -> int:
    if type(value) is not int:
        raise ManifestError(f"{where} is {_shown(value)}, not an integer")
    return value


def _seconds(value, where: str) -> float:
    if type(value) not in (int, float):
        raise ManifestError(f"{where} is {_shown(value)}, not a number of seconds")
    return float(value)


def _known(value, known, where: str) -> str:
    if not isinstance(value, str) or value not in known:
        raise ManifestError(f"unknown {where} {_shown(value)}")
    return value


def _whole_numbers(value, where: str) -> dict[str, int]:
    return {key: _whole(n, f"{where}.{_name(key)}") for key, n in _object(value, where).items()}


def _command(value) -> tuple[str, ...] | None:
    if value is not None and not (isinstance(value, list) and all(isinstance(part, str) for part in value)):
        raise ManifestError(f"command is {_shown(value)}, not a list of strings")
    return None if value is None else tuple(value)


def _source(name: str, entry) -> Source:
    if name not in SOURCE_NAMES:
        raise ManifestError(f"unknown source {_shown(name)}")
    where = f"sources.{name}"
    entry = _object(entry, where)
    balance = _object(_take(entry, "label_balance", where), f"{where}.label_balance")
    label_balance = {split: _labels(labels, f"{where}.label_balance.{_name(split)}")
                     for split, labels in balance.items()}
    maps = {key: _whole_numbers(_take(entry, key, where, default), f"{where}.{key}")
            for key, default in SOURCE_MAPS.items()}
    return Source(counts=_counts(_take(entry, "counts", where), f"{where}.counts"), label_balance=label_balance,
                  **maps)


def _labels(value, where: str) -> dict[str, int]:
    labels = _whole_numbers(value, where)
    odd = [label for label in labels if label not in ANSWERS]
    if odd:
        raise ManifestError(f"{where} counts the answer {_shown(odd[0])}, not one of {', '.join(ANSWERS)}")
    return labels


def _counts(value, where: str) -> Counts:
    entry = _object(value, where)
    counts = Counts(**{key: _whole(_take(entry, key, where), f"{where}.{key}") for key in COUNTS},
                    pairs_filtered=_whole_numbers(_take(entry, "pairs_filtered", where), f"{where}.pairs_filtered"))
    if counts.rows_read != counts.rows_used + counts.rows_rejected:
        raise ManifestError(f"{where}: rows_read {counts.rows_read} is not rows_used + rows_rejected "
                            f"({counts.rows_used} + {counts.rows_rejected})")
    formed = counts.pairs_kept + sum(counts.pairs_filtered.values()) + counts.duplicates_dropped
    if counts.pairs_formed != formed:
        raise ManifestError(f"{where}: pairs_formed {counts.pairs_formed} is not pairs_kept + pairs_filtered + "
                            f"duplicates_dropped ({formed})")
    return counts


def _splits(entries: dict) -> dict[str, Split]:
    splits = {name: _split(f"splits.{_name(name)}", entry) for name, entry in entries.items()}
    listed = [str(PurePosixPath(path)) for split in splits.values() for path in split.files]  # data/./x is data/x
    twice = next((path for path in listed if listed.count(path) > 1), None)
    if twice is not None:
        raise ManifestError(f"splits list {_name(twice)} more than once")
    return splits


def _split(where: str, entry) -> Split:
    entry = _object(entry, where)
    files = _take(entry, "files", where)
    if not isinstance(files, list) or not all(isinstance(path, str) for path in files):
        raise ManifestError(f"{where}.files is {_shown(files)}, not a list of paths")
    # A path leading elsewhere (absolute, or through "..") would report or publish another file as the dataset's.
    outside = [path for path in files if _outside(PurePosixPath(path))]
    if outside:
        raise ManifestError(f"{where}.files names {_name(outside[0])}, outside the folder")
    digests = _take(entry, "xxh3_128", where, None)
    if digests is not None:
        if not isinstance(digests, dict) or not all(isinstance(digest, str) and _XXH3_128.fullmatch(digest)
                                                    for digest in digests.values()):
            raise ManifestError(f"{where}.xxh3_128 is not a map of paths to xxh3_128 hex digests")
        differs = sorted(set(digests) ^ set(files))
        if differs:
            raise ManifestError(f"{where}.xxh3_128 and {where}.files differ on {_name(differs[0])}")
    return Split(files=tuple(files), rows=_whole(_take(entry, "rows", where), f"{where}.rows"),
                 bytes=_whole(_take(entry, "bytes", where), f"{where}.bytes"), xxh3_128=digests)


def _outside(path: PurePosixPath) -> bool:
    return path.is_absolute() or ".." in path.parts or not path.parts  # "" names the folder itself
