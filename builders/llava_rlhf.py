"""LLaVA-RLHF human preferences (`zhiqings/LLaVA-Human-Preference-10K`).

Layout: the repository holds one JSON array, `llava_7b_v1_preference.json`, and no images:
they are COCO train2017 files that the user supplies with `--image-root` (`<image_root>/<image>`).

Row: `id`, `image`, `conversations` (human/gpt turns, possibly wrapped in one extra list;
the last turn is a gpt placeholder that the two candidates replace), `output_1`,
`output_2` (`{"value": ...}`), `preference` (1 or 2: which output annotators preferred).

Question: the last human turn; any dialogue before it is rendered into `question` as
`User:`/`Assistant:` lines so the critic sees the context. `<image>` tokens are removed.
No scores (margin is null) and no ties.

Rejects: a row that is not an object or misses its fields, or whose outputs are not text
(`row_malformed`), a preference other than 1/2, empty or identical outputs, an image file
missing under the root or not a regular file (`image_missing`), over the image size cap
(`image_file_too_large`), an image path that resolves outside the root or is no valid file
name (`image_path_unsafe`: never opened).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from critic_data import UserError
from critic_data.builders.options import BuildOptions
from critic_data.builders.readers import ROWS_PER_BATCH, RowBatch, SourceSpec, conversation_turns
from critic_data.builders.records import Example, Pair
from critic_data.builders.text import clean_question, clean_response, pair_problem, row_id
from critic_data.files import ImageFileError, read_image_file
from critic_data.schemas import Reject, RejectReason

NAME = "llava_rlhf"
FILE = "llava_7b_v1_preference.json"
MAX_FILE_BYTES = 1 << 30  # the file is 32 MB: past 1 GiB it is not that file, and is not read whole
_SPEAKERS = {"human": "User", "gpt": "Assistant"}


def render_question(turns: list[dict]) -> str | None:
    """The last human turn, preceded by the earlier dialogue; None if no human turn is last."""
    if turns and turns[-1]["from"] == "gpt":
        turns = turns[:-1]  # the placeholder the candidates replace
    if not turns or turns[-1]["from"] != "human":
        return None
    question = clean_question(turns[-1]["value"])
    if len(turns) == 1:
        return question
    context = [f"{_SPEAKERS.get(t['from'], t['from'])}: {clean_question(t['value'])}" for t in turns[:-1]]
    return "\n".join([*context, f"User: {question}"]) if question else ""


def _output(value) -> str | None:
    """An output's cleaned text; None when it is not text (a list, a number)."""
    value = value.get("value") if isinstance(value, dict) else value
    return clean_response(value) if isinstance(value, str) else None


def _example(index: int, row, image_root: Path) -> Example | Reject:
    if not isinstance(row, dict):
        return Reject(NAME, f"item {index}", RejectReason.ROW_MALFORMED, "array item is not an object")
    source_id = row_id(row.get("id"), f"item {index}")
    turns = conversation_turns(row.get("conversations"))
    question = render_question(turns) if turns else None
    if question is None:
        return Reject(NAME, source_id, RejectReason.ROW_MALFORMED, "conversations has no human turn to answer")
    preference = str(row.get("preference")).strip()
    if preference not in ("1", "2"):
        return Reject(NAME, source_id, RejectReason.ROW_MALFORMED,
                      f"preference {row.get('preference')!r} is not 1 or 2")
    first, second = _output(row.get("output_1")), _output(row.get("output_2"))
    if first is None or second is None:
        return Reject(NAME, source_id, RejectReason.ROW_MALFORMED, "output_1 and output_2 need a text value")
    if problem := pair_problem(question, first, second):
        return Reject(NAME, source_id, *problem)
    name = row.get("image")
    if not isinstance(name, str) or not name.strip():
        return Reject(NAME, source_id, RejectReason.IMAGE_MISSING, "the row names no image")
    shown = repr(name[:200])
    try:
        path = (image_root / name).resolve()
    except ValueError:  # a NUL byte or a lone surrogate: no file can have that name
        return Reject(NAME, source_id, RejectReason.IMAGE_PATH_UNSAFE, f"{shown} is not a valid file name")
    except (OSError, RuntimeError) as error:  # a link loop (RuntimeError before Python 3.13), a name too long
        return Reject(NAME, source_id, RejectReason.IMAGE_MISSING,
                      f"cannot resolve {shown} under --image-root: {error}")
    if not path.is_relative_to(image_root):
        return Reject(NAME, source_id, RejectReason.IMAGE_PATH_UNSAFE, f"{shown} resolves outside --image-root")
    try:
        data = read_image_file(path)  # only a regular file, and only up to the size cap
    except ImageFileError as error:
        return Reject(NAME, source_id, error.reason, f"{error.detail} (--image-root {shown})")
    better, worse = (first, second) if preference == "1" else (second, first)
    return Example(NAME, source_id, question, [(data, path.name)], [Pair(better, worse)], pairs_formed=1)


class _Reader:
    """One sequential part: the array is parsed once, in the process that reads it."""

    layout = "json"
    parts = (None,)

    def __init__(self, path: Path, image_root: Path):
        self.files, self.image_root = [path], image_root.resolve()
        try:  # utf-8-sig: a byte-order mark before the array is read, not an error
            self._rows = json.loads(_read(path).decode("utf-8-sig"))
        except (ValueError, RecursionError) as error:  # ValueError: bad JSON or UTF-8, an integer past 4300 digits;
            # RecursionError: nested past the limit
            raise UserError(f"{path} is not valid JSON ({type(error).__name__}: {str(error)[:200]}); "
                            "re-download it") from None
        if not isinstance(self._rows, list):
            raise UserError(f"{path} should hold a JSON array of preference rows")
        self.total_rows = len(self._rows)

    def read_part(self, _=None) -> Iterator[RowBatch]:
        for first in range(0, len(self._rows), ROWS_PER_BATCH):
            rows = self._rows[first : first + ROWS_PER_BATCH]
            yield RowBatch([_example(first + offset, row, self.image_root) for offset, row in enumerate(rows)])


def _read(path: Path) -> bytes:
    """The bytes of the regular file at `path`, at most MAX_FILE_BYTES; else a UserError. Opened
    without blocking and checked once open: a FIFO would block the build, /dev/zero never end."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise UserError(f"{path} is not a regular file; replace it with the downloaded {FILE}")
            with open(descriptor, "rb", closefd=False) as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        finally:
            os.close(descriptor)
    except OSError as error:  # no permission, an I/O error
        raise UserError(f"cannot read {path}: {error.strerror or error}; check the file, or re-download it") from None
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{path} is over {MAX_FILE_BYTES} bytes: it is not {FILE} (32 MB); re-download it")
    return data


def open_snapshot(folder: Path, options: BuildOptions) -> _Reader:
    if options.image_root is None:
        raise UserError("llava_rlhf needs --image-root: the folder of COCO train2017 images its rows name")
    if not options.image_root.is_dir():
        raise UserError(f"--image-root {options.image_root} is not a folder; point it at COCO train2017")
    path = folder / FILE
    if not os.path.lexists(path):
        found = sorted(folder.glob("*.json"))
        if len(found) != 1:
            raise UserError(f"{folder} does not look like a LLaVA-RLHF snapshot: expected {FILE}")
        path = found[0]
    return _Reader(path, options.image_root)  # which refuses a path that is not a regular file


SOURCE = SourceSpec(
    name=NAME,
    hub_repo="zhiqings/LLaVA-Human-Preference-10K",
    hub_files=(FILE,),
    # apache-2.0 on the Hub, CC BY-NC 4.0 on the project page: the stricter one holds.
    license="cc-by-nc-4.0",
    homepage="https://llava-rlhf.github.io",
    citation="""@article{sun2023aligning,
  title={Aligning Large Multimodal Models with Factually Augmented RLHF},
  author={Sun, Zhiqing and Shen, Sheng and Cao, Shengcao and Liu, Haotian and Li, Chunyuan and Shen, Yikang and Gan, \
Chuang and Gui, Liang-Yan and Wang, Yu-Xiong and Yang, Yiming and Keutzer, Kurt and Darrell, Trevor},
  journal={arXiv preprint arXiv:2309.14525},
  year={2023}
}""",
    summary="9.4k human preferences between two LLaVA responses to COCO image conversations, "
    "collected for LLaVA-RLHF (images: COCO train2017).",
    open=open_snapshot,
)
