"""`critic-data best-of-n`: test-time self-critique. The model samples N answers, then judges them.

This module owns sampling the candidates, the two selection strategies, and their summary:
- `knockout`: a single-elimination bracket, N-1 pairwise matches in ceil(log2 N) rounds (an odd
  candidate out gets a bye); answer order is a seeded coin per match.
- `round-robin` (LLaVA-Critic): every ordered pair (k, l) is judged with k shown first;
  a_kl = 1 when the judge prefers l. Candidate i scores r_i = sum_k a_ki - sum_l a_il (wins when
  shown second minus losses when shown first), which cancels a judge's position bias: one that
  always answers "2" gives every candidate 0. Highest r_i wins.
Rules stated once:
- An unparsable judgement (no clean \\boxed{1} or \\boxed{2}, including \\boxed{tie}) is counted
  and decided by a coin fixed by (seed, question id, match).
- Ties in round-robin scores are broken by the same kind of seeded coin among the tied.
- Candidates are sampled with the official think/boxed instruction (`with_instruction`), at
  `--temperature` 1.0 and `--top-p` 0.99 by default: the official training rollout's settings
  (si0wang/LLaVA-Critic-R1@6fd42d1 EasyR1/examples/config.yaml:56-57); the papers do not publish
  the sampling settings of their Best-of-N runs. Judgements are greedy.
- The judge sees each candidate without its <think>...</think> part unless
  `--judge-sees-thinking`: two 2k-token candidates and a large image overflow an 8k context.
- With `--max-model-len`, a match whose prompt could overflow it (`prompt_token_bound` plus
  `--max-tokens`) is not sent; it is counted (`too_long`) and decided by the same seeded coin as an
  unparsable verdict, as is a match the server refuses with a context-length message (HTTP 400).
- A candidate's final answer is the
  content of its last \\boxed{} (the whole text when it has none), normalised by
  `normalize_answer`. Majority vote takes the most frequent final answer, the earliest on a tie.
  With gold answers, accuracy compares normalised strings exactly, for the pick, the first
  sample, the majority vote, and any candidate (the ceiling any selector can reach); each with
  its Wilson 95% interval (`accuracy_ci95`). A question's record is a `rl/records.py` `Pick`; the
  bracket, the round-robin scores and every figure of the summary are defined in `rl/metrics.py`.
N samples are asked for in one request with `n`; a server that ignores `n` gets the rest as
single requests with their own derived seeds. Each question's pick is appended to
`OUT/picks.jsonl` as it completes; `--resume` skips questions already there, and refuses a
run whose options would pick otherwise (`BestOfNOptions.identity`).
Bounded: a question costs N samples + N-1 (knockout) or N(N-1) (round-robin) judgements, at
most `MAX_REQUESTS_PER_QUESTION` (round-robin up to N = 64, knockout up to N = 2048): a guard
against a mistyped --n, since round-robin's cost grows with the square. The count is printed
before the first request; the progress bar counts the requests made (the N samples take one
where the server honours `n`; a match over --max-model-len takes none).

    critic-data best-of-n --base-url http://127.0.0.1:8000/v1 --model CHECKPOINT \
        --input questions.jsonl --n 16 --strategy knockout --out runs/bon16
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from critic_data import UserError
from critic_data import files as image_files
from critic_data.files import json_lines
from critic_data.rl import metrics
from critic_data.rl.client import (
    IMAGE_PATCH,
    ChatClient,
    RequestFailed,
    RunSpec,
    data_url,
    derive_seed,
    is_text,
    percent,
    run_jobs,
    write_summary,
)
from critic_data.rl.options import BestOfNOptions, requests_per_question
from critic_data.rl.records import Match, Pick, normalize_answer
from critic_data.rl.rewards import boxed_verdict, last_boxed
from critic_data.schemas.prompts import DEFAULT_TEMPLATE, render_critic_prompt, strip_control_tokens, with_instruction

# A chat template's own tokens around a prompt: role markers, the default system turn, the image's
# start/end markers (Qwen2.5-VL's come to about 25).
TEMPLATE_TOKENS = 64
_THINKING = re.compile(r"<\s*think\s*>.*?(?:<\s*/\s*think\s*>|\Z)", re.DOTALL)  # an unclosed one runs to the end
# How servers word a prompt longer than the context (vLLM: "maximum context length is ...",
# "... longer than the maximum model length of ...").
_CONTEXT_REFUSAL = re.compile(r"context length|model length|too long", re.IGNORECASE)


@dataclass
class Question:
    id: str
    image: Path
    question: str
    answer: str | None


def read_questions(path: Path) -> list[Question]:
    """The questions file, every line checked before any request is sent.

    The file is the user's own: a bad line stops the run before any work, naming the line and
    what is wrong (a run that skipped it would report numbers over other questions than asked).
    """
    if path.exists() and not path.is_file():  # a folder, or a pipe (`--input <(...)`), which has no folder
        raise UserError(f"--input {path} is not a regular file; save the questions to a questions.jsonl beside "
                        "their images and pass that")
    if not path.is_file():
        raise UserError(f"--input {path}: no such file; pass a questions.jsonl (id, image, question, optional answer)")
    questions, seen = [], set()
    for number, raw, row in json_lines(path):
        where = f"{path}:{number}"
        if isinstance(row, UnicodeDecodeError):
            raise UserError(f"{where} is not valid UTF-8 (byte {raw[row.start]:#04x} at column {row.start + 1}); "
                            "save the file as UTF-8")
        if isinstance(row, Exception):
            why = row.msg if isinstance(row, json.JSONDecodeError) else "nested too deeply" \
                if isinstance(row, RecursionError) else str(row)[:100]
            raise UserError(f"{where} is not valid JSON ({why}); write one JSON object per line")
        if not isinstance(row, dict) or not all(isinstance(row.get(k), (str, int)) and not isinstance(row.get(k), bool)
                                                for k in ("id", "image", "question")):
            raise UserError(f"{where} needs string fields id, image (path relative to the file) and question")
        answer = row.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float, type(None))):
            raise UserError(f"{where}: answer must be a string or a number")
        if isinstance(answer, float) and not math.isfinite(answer):  # Python reads NaN and Infinity, JSON has none
            raise UserError(f"{where}: answer must be a string or a finite number, not {answer}")
        if not all(is_text(v) for v in row.values() if isinstance(v, str)):
            raise UserError(f"{where} holds a lone surrogate (an escape like \\ud800), which is not text; fix that "
                            "field")
        qid = str(row["id"])
        if not qid.strip():  # it names the question in picks.jsonl and in every failure
            raise UserError(f"{where}: id is blank; give each question an id")
        if qid in seen:
            raise UserError(f"{where}: id {qid!r} appears twice; ids must be unique")
        seen.add(qid)
        image = path.parent / str(row["image"])
        _check_image_file(image, f"{where}: image {row['image']}")
        answer = row.get("answer")
        questions.append(Question(qid, image, str(row["question"]), None if answer is None else str(answer)))
    if not questions:
        raise UserError(f"{path} holds no questions")
    return questions


def _check_image_file(image: Path, what: str) -> None:
    """A UserError unless `image` is a regular file within the image size cap (any folder: the file is the user's)."""
    try:
        image_files.image_file_status(image, what)
    except (OSError, ValueError):  # missing, a link loop, a NUL byte
        raise UserError(f"{what} not found (looked for {image}); paths are relative to the file") from None
    except image_files.ImageFileError as error:  # a FIFO or a device would block or never end
        raise UserError(f"{error.detail}; point it at an image file, under the cap") from None


def without_thinking(candidate: str) -> str:
    """The candidate without its <think>...</think> part: what the judge sees by default."""
    return _THINKING.sub("", candidate).strip()


def prompt_token_bound(text: str, size: tuple[int, int]) -> int:
    """An upper bound on the prompt tokens of a request with `text` and one image of `size` (width,
    height), with no tokenizer: the text's UTF-8 bytes (a byte-level BPE token is at least one
    byte), a token per started 28 x 28 pixels of the image (Qwen2-VL's processors round each side
    to the nearest multiple of 28, or scale it down; only an image under the server's min_pixels,
    3136 by default, is scaled up, to 4 tokens), and TEMPLATE_TOKENS, which also covers that."""
    width, height = size
    image_tokens = math.ceil(width / IMAGE_PATCH) * math.ceil(height / IMAGE_PATCH)
    return len(text.encode("utf-8")) + image_tokens + TEMPLATE_TOKENS


def final_answer(candidate: str) -> str:
    """The normalised final answer of a candidate: its last \\boxed{} content, or else its whole text."""
    boxed = last_boxed(candidate)
    return normalize_answer(candidate if boxed is None else boxed)


def majority_vote(answers: list[str]) -> str:
    """The most frequent answer; on a tie, the one that appeared first."""
    return Counter(answers).most_common(1)[0][0]  # most_common keeps first-seen order among equals


Judge = Callable[[int, int, str], Awaitable[Match]]  # (first shown, second shown, match key) -> Match


async def _together(coroutines) -> list:
    """Run the coroutines concurrently; the first failure cancels the others and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


async def knockout(n: int, judge: Judge, seed: int, qid: str) -> tuple[int, list[Match]]:
    """Single elimination: the winner index and the N-1 matches played, round by round."""
    alive, matches, round_ = list(range(n)), [], 0
    while len(alive) > 1:
        pairs = metrics.knockout_pairs(alive)
        # The presented order of each match is a coin fixed by (seed, question, round, pair).
        shown = [(a, b) if derive_seed(seed, qid, "order", round_, a, b) % 2 == 0 else (b, a) for a, b in pairs]
        played = await _together(judge(first, second, f"r{round_}:{a}-{b}")
                                 for (first, second), (a, b) in zip(shown, pairs))
        matches.extend(played)
        alive = metrics.next_round(alive, [m.winner for m in played])
        round_ += 1
    return alive[0], matches


async def round_robin(n: int, judge: Judge, seed: int, qid: str) -> tuple[int, list[Match], list[int]]:
    """Every ordered pair judged once: the winner index, the N(N-1) matches, and the scores r_i."""
    ordered = [(i, j) for i in range(n) for j in range(n) if i != j]
    matches = await _together(judge(i, j, f"{i}>{j}") for i, j in ordered)
    scores = metrics.round_robin_scores(n, matches)
    return metrics.round_robin_winner(scores, seed, qid), matches, scores


async def _sample(client: ChatClient, images: list[str], prompt: str, options: BestOfNOptions, qid: str) -> list[str]:
    """N candidates: one request asking for N, topped up with single requests if the server ignored `n`."""
    first = await client.chat(images, prompt, temperature=options.temperature, top_p=options.top_p,
                              seed=derive_seed(options.seed, qid, "sample", 0), n=options.n)
    rest = await _together(client.chat(images, prompt, temperature=options.temperature, top_p=options.top_p,
                                       seed=derive_seed(options.seed, qid, "sample", k))
                           for k in range(len(first), options.n))
    return (first + [text for texts in rest for text in texts])[: options.n]


def _judge(client: ChatClient, question: Question, images: list[str], size: tuple[int, int], shown: list[str],
           options: BestOfNOptions) -> Judge:
    """The judge of one question's matches, showing the candidates as `shown`, with its image
    (`images`, of `size`); a verdict that names no position, or a prompt that does not fit
    --max-model-len, is decided by the match's seeded coin."""
    async def judge(first: int, second: int, key: str) -> Match:
        text = render_critic_prompt(DEFAULT_TEMPLATE, question.question, shown[first], shown[second])
        coin = (first, second)[derive_seed(options.seed, question.id, "coin", key) % 2]
        if options.max_model_len and prompt_token_bound(text, size) + options.max_tokens > options.max_model_len:
            return Match((first, second), None, coin, "too-long")
        try:
            # One choice asked; a server that answers more (its own default n) is read by the first.
            completion = (await client.chat(images, text, temperature=0.0, seed=options.seed))[0]
        except RequestFailed as error:
            if error.status == 400 and _CONTEXT_REFUSAL.search(str(error)):
                return Match((first, second), None, coin, "too-long")
            raise
        verdict = boxed_verdict(completion)
        if verdict in ("1", "2"):
            return Match((first, second), verdict, (first, second)[int(verdict) - 1], "judge")
        return Match((first, second), verdict, coin, "coin")

    return judge


async def _solve(client: ChatClient, question: Question, options: BestOfNOptions) -> Pick:
    from PIL import Image

    try:
        image = image_files.read_image_file(question.image)  # a regular file, within the size cap
    except image_files.ImageFileError as error:
        raise RequestFailed(f"cannot read {question.image} ({error.detail})") from None
    images = [data_url(image)]  # once per question: every sample and judgement sends the same URL
    with Image.open(io.BytesIO(image)) as opened:  # data_url decoded it: the header reads
        size = opened.size
    candidates = await _sample(client, images, with_instruction(strip_control_tokens(question.question)),
                               options, question.id)
    shown = candidates if options.judge_sees_thinking else [without_thinking(c) for c in candidates]
    judge = _judge(client, question, images, size, shown, options)
    scores = None
    if options.strategy == "knockout":
        winner, matches = await knockout(options.n, judge, options.seed, question.id)
    else:
        winner, matches, scores = await round_robin(options.n, judge, options.seed, question.id)
    answers = [final_answer(c) for c in candidates]
    return Pick(question.id, candidates, winner, matches, answers, majority_vote(answers), scores, question.answer)


def run_best_of_n(options: BestOfNOptions, progress=None) -> dict:
    """Sample, judge and pick for every question (resuming when asked); write picks and summary; return the summary."""
    return asyncio.run(_run(options, progress))


async def _run(options: BestOfNOptions, progress) -> dict:
    questions = read_questions(options.input)

    samples, judgements = requests_per_question(options.n, options.strategy)

    def announce(done: set) -> str:
        todo = sum(q.id not in done for q in questions)
        ignored = f"; {todo * (samples + judgements)} if the server ignores n" if samples > 1 else ""
        return (f"best-of-{options.n} {options.strategy}: {todo} question{'s' if todo != 1 else ''} x "
                f"(1 request for {samples} sample{'s' if samples > 1 else ''} + {judgements} judgements) = "
                f"{todo * (1 + judgements)} requests{ignored}")

    # A question fans out into N samples and up to N(N-1) judgements, all under the client's
    # request bound; a few questions in flight keep the server busy between rounds. The progress
    # bar counts requests, planned as a server that honours `n` takes them (vllm serve).
    spec = RunSpec(name=f"best-of-{options.n}", unit="question", log_name="picks.jsonl", read=Pick.from_json,
                   key=lambda pick: pick.id, jobs=lambda done: (q for q in questions if q.id not in done),
                   total=len(questions), work=lambda client, question: _solve(client, question, options),
                   record=lambda question, pick: pick, job_id=lambda question: question.id,
                   accuracy=lambda picks: metrics.pick_summary(picks).get("accuracy", {}).get("best_of_n"),
                   window=max(1, math.ceil(options.concurrency / options.n)) + 1, announce=announce,
                   requests_per_job=1 + judgements)
    finished = await run_jobs(options, spec, progress)
    return write_summary(options, finished, {"model": options.model, "n": options.n, "strategy": options.strategy,
                                             **metrics.pick_summary(finished.records)})


def summary_table(summary: dict):
    """A short rich table of the headline numbers."""
    from rich.table import Table

    table = Table(title=f"best-of-{summary['n']} ({summary['strategy']}): {summary['model']}",
                  caption="(low-high): Wilson 95% interval" if "accuracy" in summary else None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("questions", str(summary["questions"]))
    table.add_row("matches played", str(summary["matches"]))
    rate = summary["unparsed_rate"]
    table.add_row("unparsed judgements",
                  f"{summary['unparsed_judgements']} ({'-' if rate is None else f'{100 * rate:.1f}%'})")
    if summary.get("too_long_matches"):
        table.add_row("matches over --max-model-len (coin)", str(summary["too_long_matches"]))
    for name, value in summary.get("accuracy", {}).items():
        table.add_row(f"{name.replace('_', ' ')} acc % (n={summary['answered']})",
                      percent(value, summary["accuracy_ci95"][name]))
    if summary["failed"]:
        table.add_row("failed questions", str(summary["failed"]))
    return table
