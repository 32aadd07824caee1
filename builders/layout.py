"""Laying the kept pairs out as output rows, the step after the ordered decisions (decide.py).

A chunk's table (prepare.py's `render`) holds each offered pair's columns with its responses as
`better` and `worse`; decide.py names each kept pair's label and id. `lay_out_pairs` takes the
kept rows, puts their responses in the presented order their label names and renders their
prompts in it (schemas/prompts.py's column-wise rendering), in the output schema of
`--format`. Column-wise throughout: image bytes are never copied through Python.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from critic_data.builders.options import BuildOptions
from critic_data.schemas import FORMATS, IMAGE_PLACEHOLDER, arrow_schema
from critic_data.schemas.prompts import conversational_prompt_column, critic_body_column, with_instruction_column


@cache
def output_schema(output_format: str) -> pa.Schema:
    return arrow_schema(FORMATS[output_format])


def lay_out_pairs(table: pa.Table, picked: list[int], answers: list[str], options: BuildOptions,
                  ids: list[str] | None = None) -> pa.Table:
    """Candidates `picked` (ascending indices) of a chunk's table as output rows, each in the
    presented order its answer names ("1": the better response first), its prompt rendered in
    that order; `ids`: the rows' ids as the ordered step decided them (else the table's). Done
    part by part (the table's batches, as `prepare` rendered them): the text of a part fits an
    Arrow array, that of a whole chunk may not."""
    picked, answer, laid_out, first = np.asarray(picked), pa.array(answers, pa.string()), [], 0
    row_ids = None if ids is None else pa.array(ids, pa.string())
    for part in table.to_batches():
        start, end = np.searchsorted(picked, (first, first + part.num_rows))
        rows = picked[start:end] - first
        first += part.num_rows
        if not len(rows):
            continue
        # Most of a part in one run of rows (train, usually): a slice, no copy. A few rows are
        # copied out instead: a slice would hold the whole part in memory until they are written.
        if rows[-1] - rows[0] + 1 == len(rows) and 2 * len(rows) >= part.num_rows:
            part = part.slice(int(rows[0]), len(rows))
        else:
            part = part.take(pa.array(rows, pa.int64()))
        part_ids = part["id"] if row_ids is None else row_ids.slice(start, end - start)
        laid_out.append(_in_presented_order(part, answer.slice(start, end - start), part_ids, options))
    return pa.Table.from_batches(laid_out, output_schema(options.format))


def _in_presented_order(pairs: pa.RecordBatch, answer: pa.Array, ids: pa.Array,
                        options: BuildOptions) -> pa.RecordBatch:
    """Rows of `render`'s columns in the output schema, with these ids, the responses in the order
    `answer` names."""
    second_first = pc.equal(answer, "2")
    first = pc.if_else(second_first, pairs["worse"], pairs["better"])
    second = pc.if_else(second_first, pairs["better"], pairs["worse"])
    body = critic_body_column(options.template(), pairs["question"], first, second)
    columns = {name: pairs[name] for name in ("source", "source_id", "margin", "template")}
    columns.update(id=ids, answer=answer)
    if options.format == "easyr1":  # the fork reads `<image>` then the body; it adds the instruction itself
        columns.update(image=pairs["images"], question=pc.binary_join_element_wise(IMAGE_PLACEHOLDER, body, ""))
    else:
        counts = pc.list_value_length(pairs["images"]).to_numpy(zero_copy_only=False)
        columns.update(images=pairs["images"], question=pairs["question"], response_1=first, response_2=second,
                       prompt=conversational_prompt_column(with_instruction_column(body), counts))
    output = output_schema(options.format)
    return pa.RecordBatch.from_arrays([columns[field.name].cast(field.type) for field in output], schema=output)
