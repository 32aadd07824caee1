"""LLaVA-Critic-113k, pairwise config (`lmms-lab/llava-critic-113k`).

Layout: the repository holds `pairwise/train-0000K-of-00005.parquet` beside the pointwise
config's `pointwise/train-0000K-of-00006.parquet`, which is not read (nor fetched). Pairwise
columns: `id` (e.g. `vlfeedback_1`), `source`, `conversations` (a human turn and a gpt turn)
and `image`.

The human turn is a judge prompt: `<image>`, one of ~30 instruction templates with
evaluation criteria, the question, and the two responses labelled `The first response:` /
`The second response:`, `Response 1:` / `Response 2:` or `Response A:` / `Response B:`
(values often in square brackets). Only the question and the two responses are kept: the
template's instructions and criteria, and its closing chat marker (`ASSISTANT:`), never
reach the output. A bracketed value ends at its last "]" before the next label, so a "]"
inside it stays. The second response runs to the end of the prompt, where some templates
put instructions: only paragraphs at the very end (never the response's first) that start
as an instruction and speak of the responses or the judgement ("Please output your judgement
ending with 'The better response: [1|2]'") are cut; "Based on ...", "Note ..." paragraphs
about the image are the response's.

The gpt turn is GPT-4o's justification ending in a verdict (`The better response: [second]`,
`... first|second|1|2|A|B`) or a tie ("equally good"). A stated preference ("The first
response is better") outranks an "equally" elsewhere ("although both are equally fluent");
a stated tie ("it's a tie") stays one. Only the label is kept. Ties are
offered to `--keep-ties` like any other source's.

Rejects: question or responses not found (`prompt_unparsable`), no verdict
(`verdict_unparsable`), empty or identical responses, a missing image, a row without
its turns (`row_malformed`).
"""

from __future__ import annotations

import re
from pathlib import Path

from critic_data import UserError
from critic_data.builders.options import BuildOptions
from critic_data.builders.readers import ParquetReader, SourceSpec, conversation_turns, image_from_struct, per_row
from critic_data.builders.records import Example, Pair
from critic_data.builders.text import clean_question, clean_response, pair_problem, row_id
from critic_data.cards import LLAVA_CRITIC_CITATION
from critic_data.schemas import Reject, RejectReason

NAME = "llava_critic"

# Every repeated part is possessive (`*+`, `++`): a run of spaces is read once, whatever follows,
# so no text can make a pattern try every way of splitting it (600 spaces after "better
# response" used to take hours).
_LEAD = r"(?:^|\n)[ \t]*+[#*\[]*+[ \t]*+"  # a label starts a line, maybe after markdown or a bracket
_TAIL = r"[ \t]*+[\]*]*+[ \t]*+[:：][ \t]*+\**+"
_FIRST = re.compile(_LEAD + r"(?:the\s++first\s++response|response\s*+(?:1|a))" + _TAIL, re.IGNORECASE)
_SECOND = re.compile(_LEAD + r"(?:the\s++second\s++response|response\s*+(?:2|b))" + _TAIL, re.IGNORECASE)
_QUESTION = re.compile(_LEAD + r"(?:the\s++)?(?:user'?s?\s++)?question" + _TAIL, re.IGNORECASE)

# The judge template's closing chat marker, left after an unbracketed second response.
_CLOSING = re.compile(r"(?:^|\s)(?:###\s*+)?(?:assistant\s*+[:：]|<\|im_start\|>\s*+assistant)\s*+$", re.IGNORECASE)
# Instructions some templates put after the second response: a paragraph at the very end that
# starts as an instruction and speaks of the responses or the judgement ("Please output your
# judgement ending with 'The better response: [1|2]'"). A response's own paragraph that starts
# with "Based on", "Note" or "Please" but is about the image is no trailer.
_INSTRUCTION = re.compile(r"[#*\s]*+(?:please|evaluate|based\s++on|your|determine|judge|compare|provide|which|output|"
                          r"note|assess|consider|the\s++output|finally|now|remember)\b", re.IGNORECASE)
_ABOUT_JUDGING = re.compile(r"\b(?:responses|answers|"
                            r"(?:first|second|better|which|each|two|both)\s++(?:response|answer)|"
                            r"(?:response|answer)\s*+[12ab]\b|judge?ments?|verdict|evaluation)\b|"
                            r"\[\s*+(?:1\s*+\|\s*+2|a\s*+\|\s*+b|first\s*+\|\s*+second)\s*+\]", re.IGNORECASE)
# Where a trailing instruction may begin: after a blank line, or, for a bracketed value, right
# after its closing "]" and a line break.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*+\n")
_AFTER_BRACKET = re.compile(r"(?<=\])[ \t]*+\n")

# Verdicts, strongest first: the template's "The better response: [X]"; a stated preference
# ("Response 2 is better") or tie ("it's a tie"); and, only when neither is said, "equally
# good" (which also appears beside a preference: "better, although both are equally fluent").
_VERDICT = re.compile(
    r"better\s++(?:response|answer|one)\s*+(?:is)?\s*+[:：]?\s*+[\[(\"'*]*+\s*+(?:the\s++)?"
    r"(first|second|response\s*+[12ab]|[12ab]|tie)\b",
    re.IGNORECASE,
)
_PHRASE = re.compile(
    r"(?:the\s++)?(first|second|response\s*+[12ab])\s++(?:response\s++)?is\s++(?:the\s++)?"
    r"(?:clearly\s++|slightly\s++|much\s++|far\s++)?better",
    re.IGNORECASE,
)
_TIE = re.compile(r"\b(?:it['’]?s|it\s++is|this\s++is|that['’]?s|declare|call\s++it)\s++a\s++(tie)\b|"
                  r"\bneither\s++(?:response|one|answer)\s++is\s++(?:clearly\s++)?better", re.IGNORECASE)
_EQUALLY = re.compile(r"equally\s++(?:good|bad|well|helpful|valid)|\bboth\s++responses\s++are\s++equally",
                      re.IGNORECASE)
_LABEL = {"first": "1", "1": "1", "a": "1", "second": "2", "2": "2", "b": "2", "tie": "tie"}


def _unwrap(value: str) -> str:
    """The text inside a [bracketed] value, else the value as is. The value ends at its last "]"
    (the text after a value is the next label, or the template's tail, already cut): a "]"
    inside it ("see item 1] then 2") is the response's own."""
    value = value.strip()
    if not value.startswith("["):
        return value
    end = value.rfind("]")
    return value[1:end] if end > 0 else value[1:]


def _without_tail(value: str) -> str:
    """The second response's value without what the template puts after it: its closing chat
    marker, then instruction paragraphs at the very end (`_INSTRUCTION` about `_ABOUT_JUDGING`),
    last first. An unbracketed value keeps its first paragraph whatever it says, and never
    loses a paragraph in its middle; a bracketed one keeps everything up to a "]" ending a line."""
    value = _CLOSING.sub("", value).rstrip()
    breaks = _AFTER_BRACKET if value.lstrip().startswith("[") else _PARAGRAPH_BREAK
    start, end = len(value) - len(value.lstrip()), len(value)  # start: where the value's text begins
    for found in reversed(list(breaks.finditer(value))):
        block = value[found.start() : end]
        if found.start() <= start or not (_INSTRUCTION.match(block) and _ABOUT_JUDGING.search(block)):
            break
        end = found.start()
    return value[:end]


def parse_judge_prompt(text: str) -> tuple[str, str, str] | None:
    """(question, first response, second response) from a judge prompt, or None."""
    first, second = _FIRST.search(text), _SECOND.search(text)
    if not first or not second or second.start() < first.end():
        return None
    question = _QUESTION.search(text[: first.start()])
    if not question:
        return None
    return (
        _unwrap(text[question.end() : first.start()]),
        _unwrap(text[first.end() : second.start()]),
        _unwrap(_without_tail(text[second.end() :])),
    )


def parse_verdict(text: str) -> str | None:
    """"1", "2" or "tie" from the judge's justification, or None: its last explicit verdict;
    else its last stated preference or tie; else a tie if it calls the two "equally" good."""
    for patterns in ((_VERDICT,), (_PHRASE, _TIE)):
        found = [match for pattern in patterns for match in pattern.finditer(text)]
        if found:
            last = max(found, key=lambda match: match.start())
            return "tie" if last.group(1) is None else _LABEL[last.group(1).lower().replace("response", "").strip()]
    return "tie" if _EQUALLY.search(text) else None


def _example(position: str, row: dict) -> Example | Reject:
    source_id = row_id(row.get("id"), position)
    turns = conversation_turns(row.get("conversations"))
    human = next((t["value"] for t in turns if t["from"] == "human"), None) if turns else None
    judge = next((t["value"] for t in reversed(turns) if t["from"] == "gpt"), None) if turns else None
    if human is None or judge is None:
        return Reject(NAME, source_id, RejectReason.ROW_MALFORMED, "needs a human turn and a gpt turn")
    parsed = parse_judge_prompt(human)
    if parsed is None:
        return Reject(NAME, source_id, RejectReason.PROMPT_UNPARSABLE, "no question, first and second response labels")
    question, first, second = clean_question(parsed[0]), clean_response(parsed[1]), clean_response(parsed[2])
    if problem := pair_problem(question, first, second):
        return Reject(NAME, source_id, *problem)
    verdict = parse_verdict(judge)
    if verdict is None:
        return Reject(NAME, source_id, RejectReason.VERDICT_UNPARSABLE,
                      "no 'better response' verdict or tie in the gpt turn")
    image = image_from_struct(row.get("image"))
    if image is None:
        return Reject(NAME, source_id, RejectReason.IMAGE_MISSING, "the row has no image bytes")
    pair = Pair(first, second,
                tie=True) if verdict == "tie" else Pair(*((first, second) if verdict == "1" else (second, first)))
    return Example(NAME, source_id, question, [image], [pair], pairs_formed=1, origin=_origin(row, source_id))


def _origin(row: dict, source_id: str) -> str:
    """The dataset the judged pair comes from: the `source` column, else the id's prefix (`vlfeedback_12`)."""
    source = row.get("source")
    if isinstance(source, str) and source.strip():
        return source.strip()
    prefix, _, number = source_id.rpartition("_")
    return prefix if prefix and number.isdigit() else "unknown"


def open_snapshot(folder: Path, options: BuildOptions) -> ParquetReader:
    files = sorted((folder / "pairwise").glob("*.parquet"))
    if not files:
        raise UserError(f"{folder} does not look like a LLaVA-Critic-113k snapshot: expected pairwise/train-*.parquet")
    return ParquetReader(files, per_row(_example))


SOURCE = SourceSpec(
    name=NAME,
    hub_repo="lmms-lab/llava-critic-113k",
    hub_files=("pairwise/*.parquet",),
    license="apache-2.0",
    homepage="https://llava-vl.github.io/blog/2024-10-03-llava-critic/",
    citation=LLAVA_CRITIC_CITATION,
    summary="40k pairwise judgements by GPT-4o (pairwise config of LLaVA-Critic-113k); only the "
    "verdict is kept, its justification is dropped. Contains rows derived from the other sources.",
    open=open_snapshot,
)
