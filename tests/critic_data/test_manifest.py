"""critic_data/manifest.py, build.json's one type and one reader: a build reads back as its
manifest, every rule refuses a manifest that breaks it (one line naming the value), and what
older builds leave out reads as its default."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import pytest

from critic_data import UserError
from critic_data.manifest import Manifest, ManifestError, read_manifest
from tests.cli import one_line_error, run_cli

TRAIN = "data/train-00000-of-00001.parquet"


@pytest.fixture(scope="module")
def written(built_dataset) -> dict:
    """build.json of the shared build, as the build wrote it."""
    return json.loads((built_dataset / "build.json").read_text(encoding="utf-8"))


def _edited(written: dict, edit) -> dict:
    manifest = copy.deepcopy(written)
    edit(manifest)
    return manifest


def _source(manifest: dict) -> dict:
    return manifest["sources"]["vlfeedback"]


def _counts(manifest: dict) -> dict:
    return _source(manifest)["counts"]


def _list_also(manifest: dict, split: str, path: str) -> None:
    """List `path` in `split` too, the content hashes left out (they would name the odd path first)."""
    manifest["splits"][split]["files"].append(path)
    for entry in manifest["splits"].values():
        entry.pop("xxh3_128")


def test_a_build_reads_back_as_its_manifest_with_the_types_its_readers_use(built_dataset, written):
    manifest = read_manifest(built_dataset)
    assert manifest.raw == written
    assert (manifest.format, manifest.template, manifest.seed) == ("trl", written["template"], 0)
    assert list(manifest.sources) == ["vlfeedback"] and list(manifest.splits) == ["train", "test"]
    counts = manifest.sources["vlfeedback"].counts
    assert counts.pairs_kept == sum(split.rows for split in manifest.splits.values()) > 0
    assert counts.pairs_formed == counts.pairs_kept + sum(counts.pairs_filtered.values()) + counts.duplicates_dropped
    assert manifest.splits["train"].files == (TRAIN,)
    assert manifest.splits["test"].xxh3_128 == written["splits"]["test"]["xxh3_128"]
    assert manifest.sources["vlfeedback"].label_balance == written["sources"]["vlfeedback"]["label_balance"]
    assert manifest.options["test_size"] == 0.2 and manifest.command is None
    assert manifest.total_seconds == written["timings"]["total_seconds"]


def _drop_optional_parts(manifest: dict) -> None:
    for key in ("duplicates_of", "conflicting_duplicates_of", "notes", "kept_by_origin"):
        _source(manifest).pop(key, None)
    manifest.pop("command")


def test_what_a_build_may_leave_out_reads_as_its_default(written):
    manifest = Manifest.from_dict(_edited(written, _drop_optional_parts))
    source = manifest.sources["vlfeedback"]
    assert (source.duplicates_of, source.conflicting_duplicates_of, source.notes, source.kept_by_origin) == ({},) * 4
    assert manifest.command is None


def test_a_build_of_an_older_critic_data_has_no_content_hashes(written):
    manifest = Manifest.from_dict(_edited(written, lambda m: [split.pop("xxh3_128") for split in m["splits"].values()]))
    assert [split.xxh3_128 for split in manifest.splits.values()] == [None, None]


def test_a_command_and_the_easyr1_format_read_as_written(written):
    manifest = Manifest.from_dict(_edited(written, lambda m: m.update(format="easyr1", command=["critic-data", "b"])))
    assert (manifest.format, manifest.command) == ("easyr1", ("critic-data", "b"))


# Each rule, broken once: (the edit, what the reason must say). Every other part stays valid.
BROKEN = {
    "tool missing": (lambda m: m.pop("tool"), "tool is missing"),
    "another tool's": (lambda m: m.update(tool={"name": "other-tool", "version": "1"}), "not critic-data"),
    "tool without its version": (lambda m: m["tool"].pop("version"), "not critic-data with its version"),
    "format missing": (lambda m: m.pop("format"), "format is missing"),
    "format unknown": (lambda m: m.update(format="xyz"), "unknown format 'xyz'"),
    "format a list": (lambda m: m.update(format=[]), "unknown format []"),
    "template unknown": (lambda m: m.update(template="mine"), "unknown template 'mine'"),
    "seed a string": (lambda m: m.update(seed="0"), "seed is '0', not an integer"),
    "seed a bool": (lambda m: m.update(seed=True), "seed is True, not an integer"),
    "options missing": (lambda m: m.pop("options"), "options is missing"),
    "options null": (lambda m: m.update(options=None), "options is None, not an object"),
    "inputs a list": (lambda m: m.update(inputs=[]), "inputs is [], not an object"),
    "an input a string": (lambda m: m["inputs"].update(vlfeedback="snap"), "inputs.vlfeedback is 'snap'"),
    "timings missing": (lambda m: m.pop("timings"), "timings is missing"),
    "total seconds a string": (lambda m: m["timings"].update(total_seconds="1"), "timings.total_seconds is '1'"),
    "command not strings": (lambda m: m.update(command=[1, None]), "command is [1, None], not a list of strings"),
    "sources a list": (lambda m: m.update(sources=[]), "sources is [], not an object"),
    "source unknown": (lambda m: m["sources"].update(foo=m["sources"].pop("vlfeedback")), "unknown source 'foo'"),
    "a source entry null": (lambda m: m["sources"].update(vlfeedback=None), "sources.vlfeedback is None"),
    "counts null": (lambda m: _source(m).update(counts=None), "sources.vlfeedback.counts is None, not an object"),
    "a count missing": (lambda m: _counts(m).pop("rows_used"), "sources.vlfeedback.counts.rows_used is missing"),
    "a count a string": (lambda m: _counts(m).update(pairs_kept="53"), "counts.pairs_kept is '53', not a whole"),
    "a count a float": (lambda m: _counts(m).update(pairs_kept=53.0), "counts.pairs_kept is 53.0, not a whole"),
    "a count a bool": (lambda m: _counts(m).update(duplicates_dropped=True), "duplicates_dropped is True"),
    "a count negative": (lambda m: _counts(m).update(duplicates_dropped=-3), "duplicates_dropped is -3"),
    "a filtered count a string": (lambda m: _counts(m)["pairs_filtered"].update(below_margin="77"),
                                  "counts.pairs_filtered.below_margin is '77'"),
    "rows that do not add up": (lambda m: _counts(m).update(rows_read=_counts(m)["rows_read"] + 1),
                                "counts: rows_read"),
    "pairs that do not add up": (lambda m: _counts(m).update(pairs_kept=_counts(m)["pairs_kept"] + 1),
                                 "is not pairs_kept + pairs_filtered + duplicates_dropped"),
    "label balance missing": (lambda m: _source(m).pop("label_balance"), "label_balance is missing"),
    "label balance a list": (lambda m: _source(m).update(label_balance=[1, 2]), "label_balance is [1, 2]"),
    "a label count a string": (lambda m: _source(m)["label_balance"]["train"].update({"1": "21"}),
                               "label_balance.train.1 is '21'"),
    "a label that is no answer": (lambda m: _source(m)["label_balance"]["train"].update(x=1),
                                  "label_balance.train counts the answer 'x', not one of 1, 2, tie"),
    "rejects missing": (lambda m: _source(m).pop("rejects_by_reason"), "rejects_by_reason is missing"),
    "rejects a list": (lambda m: _source(m).update(rejects_by_reason=[1]), "rejects_by_reason is [1]"),
    "a reject count a string": (lambda m: _source(m).update(rejects_by_reason={"x": "many"}),
                                "rejects_by_reason.x is 'many'"),
    "duplicates_of a list": (lambda m: _source(m).update(duplicates_of=[1]), "duplicates_of is [1]"),
    "notes of strings": (lambda m: _source(m).update(notes={"x": "y"}), "notes.x is 'y'"),
    "splits a list": (lambda m: m.update(splits=[]), "splits is [], not an object"),
    "a split entry a list": (lambda m: m["splits"].update(train=[]), "splits.train is [], not an object"),
    "files missing": (lambda m: m["splits"]["train"].pop("files"), "splits.train.files is missing"),
    "files null": (lambda m: m["splits"]["train"].update(files=None), "splits.train.files is None, not a list"),
    "files numbers": (lambda m: m["splits"]["train"].update(files=[1]), "splits.train.files is [1], not a list"),
    "an absolute path": (lambda m: m["splits"]["train"].update(files=["/etc/passwd"]),
                         "splits.train.files names /etc/passwd, outside the folder"),
    "a path through ..": (lambda m: m["splits"]["train"].update(files=["data/../../x.parquet"]),
                          "names data/../../x.parquet, outside the folder"),
    "the folder itself": (lambda m: m["splits"]["train"].update(files=[""]), "names '', outside the folder"),
    "a shard listed twice": (lambda m: _list_also(m, "train", TRAIN), f"splits list {TRAIN} more than once"),
    "a shard in two splits": (lambda m: _list_also(m, "test", TRAIN), f"splits list {TRAIN} more than once"),
    "a shard spelled twice": (lambda m: _list_also(m, "train", "data/./" + TRAIN[5:]),
                              f"splits list {TRAIN} more than once"),
    "rows missing": (lambda m: m["splits"]["test"].pop("rows"), "splits.test.rows is missing"),
    "rows a string": (lambda m: m["splits"]["train"].update(rows="41"), "splits.train.rows is '41'"),
    "rows a bool": (lambda m: m["splits"]["test"].update(rows=True), "splits.test.rows is True"),
    "bytes a float": (lambda m: m["splits"]["train"].update(bytes=1.5), "splits.train.bytes is 1.5"),
    "hashes a list": (lambda m: m["splits"]["train"].update(xxh3_128=[]),
                      "splits.train.xxh3_128 is not a map of paths to xxh3_128 hex digests"),
    "a hash not hex": (lambda m: m["splits"]["train"]["xxh3_128"].update({TRAIN: "zz" * 16}), "xxh3_128 is not a map"),
    "a hash too short": (lambda m: m["splits"]["train"]["xxh3_128"].update({TRAIN: "0" * 31}), "xxh3_128 is not a map"),
    "a shard's hash missing": (lambda m: m["splits"]["train"].update(xxh3_128={}),
                               f"splits.train.xxh3_128 and splits.train.files differ on {TRAIN}"),
    "a hash of a file not listed": (lambda m: m["splits"]["test"]["xxh3_128"].update({"data/test-x.parquet": "0" * 32}),
                                    "differ on data/test-x.parquet"),
}


@pytest.mark.parametrize("broken", BROKEN)
def test_a_manifest_that_breaks_a_rule_is_refused_naming_what_is_wrong(written, broken):
    edit, reason = BROKEN[broken]
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict(_edited(written, edit))
    assert reason in str(caught.value)


@pytest.mark.parametrize("value", [[1, 2], "build", None, 7])
def test_a_manifest_that_is_not_an_object_is_refused(value):
    with pytest.raises(ManifestError, match="is not a JSON object"):
        Manifest.from_dict(value)


def _write(folder: Path, manifest) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "build.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def test_read_manifest_names_the_file_and_the_reason_in_one_line(written, tmp_path):
    """A split named with a line break, and a huge value: the line stays one short line."""
    folder = _write(tmp_path / "d", _edited(written, lambda m: m["splits"].update({"a\nb": {"files": "x" * 10**5}})))
    with pytest.raises(UserError) as caught:
        read_manifest(folder)
    line = str(caught.value)
    assert line.startswith(f"{folder / 'build.json'} is not a critic-data manifest (splits.'a\\nb'.files is 'xx")
    assert line.endswith("); rebuild the dataset") and "\n" not in line and len(line) < 300


def test_a_folder_without_build_json_is_named(tmp_path):
    with pytest.raises(UserError, match=f"^{tmp_path} has no build.json: not a folder made by `critic-data build`$"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("make", ["folder", "fifo", "dangling link"])
def test_a_build_json_that_is_not_a_regular_file_is_never_opened(tmp_path, make):
    path = tmp_path / "build.json"
    {"folder": Path.mkdir, "fifo": os.mkfifo, "dangling link": lambda p: p.symlink_to(tmp_path / "gone")}[make](path)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(read_manifest, tmp_path)), daemon=True)
    reader.start()
    reader.join(timeout=10)  # a FIFO opened for reading would block until a writer comes
    assert outcome and f"{path} is not a regular file" in outcome[0]


def _error_of(function, *args) -> str:
    try:
        function(*args)
    except UserError as error:
        return str(error)
    return "no error"


@pytest.mark.parametrize("content, error", [(b"\xff\xfe{}", "UnicodeDecodeError"),
                                            (b'{"format": "trl"', "JSONDecodeError"),
                                            (b"[" * 100_000 + b"]" * 100_000, "RecursionError")])
def test_a_build_json_that_is_not_json_is_one_line(tmp_path, content, error):
    (tmp_path / "build.json").write_bytes(content)
    with pytest.raises(UserError) as caught:
        read_manifest(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'build.json'} does not read as JSON ({error}); rebuild the dataset"


def test_inspect_of_a_manifest_that_breaks_a_rule_ends_in_one_line(written, tmp_path):
    folder = _write(tmp_path / "d", _edited(written, lambda m: _counts(m).update(pairs_kept=True)))
    line = one_line_error(run_cli("inspect", folder))
    assert "is not a critic-data manifest (sources.vlfeedback.counts.pairs_kept is True, not a whole number)" in line
