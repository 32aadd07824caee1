"""RLHF-V (`openbmb/RLHF-V-Dataset`): human-corrected responses to detailed image questions.

Layout: the repository holds one parquet at its root, `RLHF-V-Dataset.parquet`, beside its
README.md (any `*.parquet` at the root or under `data/` of a local folder is read). Columns:
`image` (struct bytes/path), `text` (a JSON string `{"question", "chosen", "rejected"}`),
`idx`, `ds_name`, `origin_dataset`, `origin_split` (opaque), `image_path`.

Pairing: `chosen` is a human correction of `rejected`, so chosen is always better; there
are no scores (margin is null) and no ties. The two are near-duplicates by design.

Rejects: `text` that is not JSON, is nested past Python's recursion limit or holds an integer
past Python's 4300 digits (`json_invalid`),
JSON without the three strings (`row_malformed`), an empty question or response, chosen
identical to rejected (`identical_responses`), a missing image; undecodable images, image
bytes that are not bytes, and text with a lone surrogate (`text_unencodable`) are caught by
the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

from critic_data import UserError
from critic_data.builders.options import BuildOptions
from critic_data.builders.readers import ParquetReader, SourceSpec, image_from_struct, per_row
from critic_data.builders.records import Example, Pair
from critic_data.builders.text import clean_question, clean_response, pair_problem, row_id
from critic_data.schemas import Reject, RejectReason

NAME = "rlhf_v"


def _example(position: str, row: dict) -> Example | Reject:
    source_id = row_id(row.get("idx"), position)
    text = row.get("text")
    if isinstance(text, str):
        try:
            text = json.loads(text.removeprefix("\ufeff"))  # a byte-order mark before the JSON is not an error
        except (ValueError, RecursionError) as error:  # ValueError: also an integer past 4300 digits;
            # RecursionError: nested past Python's limit
            return Reject(NAME, source_id, RejectReason.JSON_INVALID,
                          f"text: {type(error).__name__}: {str(error)[:200]}")
    if not isinstance(text, dict) or not all(isinstance(text.get(k), str) for k in ("question", "chosen", "rejected")):
        return Reject(NAME, source_id, RejectReason.ROW_MALFORMED, "text needs string question, chosen and rejected")
    question = clean_question(text["question"])
    chosen, rejected = clean_response(text["chosen"]), clean_response(text["rejected"])
    if problem := pair_problem(question, chosen, rejected):
        return Reject(NAME, source_id, *problem)
    image = image_from_struct(row.get("image"))
    if image is None:
        return Reject(NAME, source_id, RejectReason.IMAGE_MISSING, "the row has no image bytes")
    return Example(NAME, source_id, question, [image], [Pair(chosen, rejected)], pairs_formed=1)


def open_snapshot(folder: Path, options: BuildOptions) -> ParquetReader:
    files = sorted(folder.glob("*.parquet")) or sorted((folder / "data").glob("*.parquet"))
    if not files:
        raise UserError(f"{folder} does not look like an RLHF-V snapshot: expected RLHF-V-Dataset.parquet")
    return ParquetReader(files, per_row(_example))


SOURCE = SourceSpec(
    name=NAME,
    hub_repo="openbmb/RLHF-V-Dataset",
    hub_files=("RLHF-V-Dataset.parquet",),
    license="cc-by-nc-4.0",
    homepage="https://rlhf-v.github.io",
    citation="""@article{yu2023rlhf,
  title={RLHF-V: Towards Trustworthy MLLMs via Behavior Alignment from Fine-grained Correctional Human Feedback},
  author={Yu, Tianyu and Yao, Yuan and Zhang, Haoye and He, Taiwen and Han, Yifeng and Cui, Ganqu and Hu, Jinyi and \
Liu, Zhiyuan and Zheng, Hai-Tao and Sun, Maosong and others},
  journal={arXiv preprint arXiv:2312.00849},
  year={2023}
}""",
    summary="5.7k image questions whose hallucinated responses were corrected segment by segment "
    "by human annotators: the correction is preferred.",
    open=open_snapshot,
)
