"""critic_data/files.py, the leaf builders/ and rl/ share: JSON Lines line ends, bounded image reads."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest

from critic_data import UserError, files
from critic_data.builders.images import check_image, read_archive_member
from critic_data.rl.best_of_n import read_questions
from critic_data.schemas import RejectReason
from tests.snapshots import jpeg

ROWS = [{"id": "q0", "image": "0.jpg", "question": "How many?"},
        {"id": "q1", "image": "1.jpg", "question": "Which colour?"}]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_json_lines_end_at_any_newline_style_text_mode_reads(end, tmp_path):
    """A file saved on Windows (\\r\\n) or by an old Mac tool (\\r) reads as the same lines, numbered
    alike; before, a lone \\r ended no line and the whole file was one line that is not JSON."""
    path = tmp_path / "rows.jsonl"
    lines = [*(json.dumps(row) for row in ROWS), "", '{"id": "q2"']
    path.write_bytes("".join(line + end for line in lines).encode())
    read = list(files.json_lines(path))
    assert [(number, value) for number, _, value in read[:2]] == [(1, ROWS[0]), (2, ROWS[1])]
    assert [raw for _, raw, _ in read[:2]] == [json.dumps(row).encode() for row in ROWS]  # without the line end
    (number, raw, error), = read[2:]  # line 3 is blank; line 4 is cut short, and read as text mode reads it
    assert (number, raw) == (4, b'{"id": "q2"') and isinstance(error, json.JSONDecodeError)


def test_a_line_separator_inside_a_string_is_text_not_a_line_end(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(json.dumps({"text": "a\u2028b\x85c"}, ensure_ascii=False).encode() + b"\n")
    assert [value for _, _, value in files.json_lines(path)] == [{"text": "a\u2028b\x85c"}]


@pytest.mark.parametrize("end", ["\r\n", "\r"])
def test_best_of_n_questions_read_with_any_newline_style(end, tmp_path):
    for k, row in enumerate(ROWS):
        (tmp_path / row["image"]).write_bytes(jpeg(k))
    path = tmp_path / "questions.jsonl"
    path.write_bytes("".join(json.dumps(row) + end for row in ROWS).encode())
    assert [(q.id, q.question) for q in read_questions(path)] == [(row["id"], row["question"]) for row in ROWS]


def _over_cap_details(tmp_path, monkeypatch) -> dict[str, str]:
    """The detail each bounded read gives for one image one byte over the cap."""
    data = jpeg(1)
    monkeypatch.setattr(files, "MAX_IMAGE_BYTES", len(data) - 1)
    (tmp_path / "big.jpg").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        archive.writestr("big.jpg", data)
    details = {}
    for name, read in (("file", lambda: files.read_image_file(tmp_path / "big.jpg")),
                       ("archive", lambda: read_archive_member(zipfile.ZipFile(tmp_path / "images.zip"), "big.jpg"))):
        with pytest.raises(files.ImageFileError) as caught:
            read()
        assert caught.value.reason is RejectReason.IMAGE_FILE_TOO_LARGE
        details[name] = caught.value.detail
    reason, details["bytes"] = check_image(data)
    assert reason is RejectReason.IMAGE_FILE_TOO_LARGE
    (tmp_path / "questions.jsonl").write_text(json.dumps({"id": "q", "image": "big.jpg", "question": "?"}) + "\n")
    with pytest.raises(UserError) as caught:
        read_questions(tmp_path / "questions.jsonl")
    details["question"] = str(caught.value)
    return details


def test_every_bounded_image_read_refuses_by_one_rule_in_one_phrase(tmp_path, monkeypatch):
    """A file, an archive member, bytes a parquet row holds, a best-of-n question's image: one
    cap, one phrase (before, four copies phrased it three ways)."""
    size = len(jpeg(1))
    details = _over_cap_details(tmp_path, monkeypatch)
    for where, detail in details.items():
        assert f"is over the image size cap of {size - 1} bytes ({size} bytes)" in detail, where


def test_a_read_stops_one_byte_past_the_cap_whatever_size_was_declared(monkeypatch):
    """An archive or a file that grew may declare fewer bytes than it gives: no more than the
    cap and one byte are read, and an image declared over the cap is never opened."""
    monkeypatch.setattr(files, "MAX_IMAGE_BYTES", 10)
    asked, opened = [], []

    class Endless:
        def read(self, n=-1):
            asked.append(n)
            return b"x" * (n if n >= 0 else 10**6)

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

    with pytest.raises(files.ImageFileError, match="over the image size cap of 10 bytes"):
        files.read_capped("lying.jpg", 5, Endless)
    assert asked == [11]
    with pytest.raises(files.ImageFileError, match=r"honest.jpg is over the image size cap of 10 bytes \(11 bytes\)"):
        files.read_capped("honest.jpg", 11, lambda: opened.append(1))
    assert opened == []
    assert files.read_capped("small.jpg", 10, lambda: io.BytesIO(b"y" * 10)) == b"y" * 10


def test_an_image_file_that_is_not_regular_is_refused_unread(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    with pytest.raises(files.ImageFileError, match="fifo.jpg is not a regular file") as caught:
        files.read_image_file(tmp_path / "fifo.jpg")
    assert caught.value.reason is RejectReason.IMAGE_MISSING
