"""The options of `critic-data eval` and `critic-data best-of-n`: one dataclass each, declared once;
and the official run's prompt filter, which `critic-data train` and `critic-data inspect` share.

Each field is the option's name, type and default, and its metadata the help text, so the CLI
(critic_data/cli.py), Python callers and the run's summary all read the same declaration. The
checks are in `__post_init__`. Kept free of heavy imports: the CLI builds its commands from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from critic_data import UserError, option
from critic_data.rl.records import MAX_SAMPLES, PASS_REWARD
from critic_data.schemas import BENCHMARK_NAMES
from critic_data.schemas.prompts import PROMPT_STYLES

# The official prompt filter (si0wang/LLaVA-Critic-R1@6fd42d1 EasyR1/verl/utils/dataset.py:167-172, bound from
# EasyR1/examples/qwen2_5_vl_7b_llava_critic_grpo.sh:24): a row is dropped when its chat-template string, with
# one placeholder per image, is longer than 6142 CHARACTERS (`apply_chat_template` returns a string there).
OFFICIAL_MAX_PROMPT_LENGTH = 6142
PROMPT_LENGTH_UNITS = ("characters", "tokens")  # characters: the official rule; tokens: text + expanded image tokens

RUN_ATTEMPTS = 6  # ~16 s of back-off in total: rides out a server restart or a burst of 429s
DEFAULT_TIMEOUT = 300.0
TIMEOUT_HELP = (f"Seconds a request may take, retries included (at most {RUN_ATTEMPTS} attempts, after connection "
                "errors, 408, 429 and 5xx); a server that does not answer in time stops the run.")
SERVER_HELP = "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (`vllm serve`). Key: $OPENAI_API_KEY."

BENCHMARKS = ("built", *BENCHMARK_NAMES)
PROTOCOLS = ("critic-data", "paper")
DEFAULT_MAX_TOKENS = 2048
PAPER_MAX_TOKENS = {"vl-rewardbench": 4096, "mm-rlhf": 2048}  # the official scripts' --max-tokens defaults

STRATEGIES = ("knockout", "round-robin")
MAX_REQUESTS_PER_QUESTION = 4096
# The official training rollout's sampling (si0wang/LLaVA-Critic-R1@6fd42d1 EasyR1/examples/config.yaml:56-57);
# the papers do not publish the settings of their Best-of-N runs.
SAMPLE_TEMPERATURE = 1.0
SAMPLE_TOP_P = 0.99


def _check_common(options) -> None:
    for name in ("concurrency", "max_tokens"):
        if getattr(options, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not (math.isfinite(options.temperature) and options.temperature >= 0):
        raise UserError("--temperature must be a number, 0 or more")
    if not (math.isfinite(options.timeout) and options.timeout > 0):
        raise UserError("--timeout must be a number of seconds above 0")


@dataclass
class EvalOptions:
    """Everything `critic-data eval` needs; checked on creation."""

    base_url: str = option(help=SERVER_HELP)
    model: str = option(help="Model name as the server knows it (vllm: the served name; transformers serve: the "
                             "folder).")
    benchmark: str = option(help=f"{', '.join(BENCHMARKS)}: a critic-data dataset, or a benchmark's local snapshot.",
                            metavar="|".join(BENCHMARKS))
    input: str = option(help="built: dataset folder or Hub id; vl-rewardbench / mm-rlhf: local snapshot folder.")
    out: Path = option(help="Folder for results.jsonl and summary.json.")
    split: str = option("test", "Split to read (built, vl-rewardbench).")
    limit: int | None = option(None, "Judge only the first N items.")
    concurrency: int = option(8, "Requests in flight at once.")
    max_tokens: int | None = option(None,
                                    f"Completion budget per judgement. Default {DEFAULT_MAX_TOKENS}; with --protocol "
                                    "paper the official scripts' defaults: 4096 on vl-rewardbench, 2048 on mm-rlhf.",
                                    show_default=False)
    temperature: float = option(0.0, "0 = greedy, as the papers evaluate.")
    seed: int = option(0, "Fixes each item's presented answer order (and the server's sampling seed).")
    both_orders: bool = option(False, "Judge every item in both orders and report position consistency.")
    resume: bool = option(False, "Continue a run in --out with the same options: items already in results.jsonl are "
                          "skipped (--concurrency, --timeout, --limit may change).")
    timeout: float = option(DEFAULT_TIMEOUT, TIMEOUT_HELP)
    protocol: str = option("critic-data",
                           "critic-data: the template the critic was trained on. paper: LLaVA-Critic-R1's "
                           "official critic-eval scripts (system turn, their prompt, pixel bounds, 28-px skip, video "
                           "frames, max tokens); vl-rewardbench and mm-rlhf only.", metavar="|".join(PROTOCOLS))
    thinking: bool | None = option(None, "--protocol paper: append the official think/boxed instruction to the prompt, "
                                   "as the scripts' --is-thinking does. Default on: the official run script passes "
                                   "--is-thinking to every evaluation it runs "
                                   "(eval_llama32v/evaluation_llama32v.sh:17).",
                                   flag="--thinking/--no-thinking", show_default=False)
    prompt_style: str | None = option(None, "--protocol critic-data on vl-rewardbench and mm-rlhf: the critic prompt "
                                      "body, the --prompt-style the critic's training set was built with: critic-data "
                                      "(default) or llava-critic. A built dataset's rows name their own template.",
                                      show_default=False, metavar="|".join(PROMPT_STYLES))

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise UserError(f"--benchmark {self.benchmark!r} is not known; choose from {', '.join(BENCHMARKS)}")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"--protocol {self.protocol!r} is not known; choose from {', '.join(PROTOCOLS)}")
        if self.protocol == "paper" and self.benchmark == "built":
            raise UserError("--protocol paper reproduces the official scripts for vl-rewardbench and mm-rlhf; "
                            "evaluate a built dataset with the template it was trained on (--protocol critic-data)")
        if self.protocol == "critic-data" and self.thinking is False:
            raise UserError("--no-thinking applies to --protocol paper; the critic-data template always ends in "
                            "the think/boxed instruction the critic was trained with")
        self.thinking = self.thinking is not False
        self._check_prompt_style()
        if self.max_tokens is None:
            self.max_tokens = PAPER_MAX_TOKENS[self.benchmark] if self.protocol == "paper" else DEFAULT_MAX_TOKENS
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")
        _check_common(self)
        self.out = Path(self.out)

    def _check_prompt_style(self) -> None:
        """Resolve --prompt-style: critic-data by default where it applies; refused where it does not."""
        if self.prompt_style is not None and self.prompt_style not in PROMPT_STYLES:
            raise UserError(f"--prompt-style {self.prompt_style!r} is not known; choose from "
                            f"{', '.join(PROMPT_STYLES)}")
        if self.prompt_style is not None and self.benchmark == "built":
            raise UserError("--prompt-style applies to vl-rewardbench and mm-rlhf: a built dataset's rows are "
                            "rendered with the template each names (its `template` column), the one trained on")
        if self.prompt_style is not None and self.protocol == "paper":
            raise UserError("--prompt-style applies to --protocol critic-data; --protocol paper sends the official "
                            "scripts' own prompt")
        if self.benchmark != "built" and self.protocol == "critic-data":
            self.prompt_style = self.prompt_style or "critic-data"

    def identity(self) -> dict:
        """The options a result depends on; a resume must repeat them (concurrency, timeout, limit
        and the server's address may change: they decide how fast and how many, not what)."""
        source = Path(self.input)
        return {"benchmark": self.benchmark, "input": str(source.resolve()) if source.exists() else self.input,
                "split": self.split, "model": self.model, "seed": self.seed, "both_orders": self.both_orders,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "protocol": self.protocol,
                "thinking": self.thinking, "prompt_style": self.prompt_style}


@dataclass
class BestOfNOptions:
    """Everything `critic-data best-of-n` needs; checked on creation."""

    base_url: str = option(help=SERVER_HELP)
    model: str = option(help="Model name as the server knows it; it answers and judges.")
    input: Path = option(help="questions.jsonl: id, image (relative to the file), question, optional answer.")
    n: int = option(help=f"Candidates sampled per question: at least 2, and samples + judgements at most "
                      f"{MAX_REQUESTS_PER_QUESTION} per question (round-robin: --n 64 or less).", flag="--n")
    out: Path = option(help="Folder for picks.jsonl and summary.json.")
    strategy: str = option("knockout", "knockout (N-1 matches) or round-robin (N(N-1) ordered matches).",
                           metavar="|".join(STRATEGIES))
    concurrency: int = option(8, "Requests in flight at once.")
    max_tokens: int = option(2048, "Completion budget per candidate and per judgement.")
    temperature: float = option(SAMPLE_TEMPERATURE,
                                "Sampling temperature for candidates (judgements are greedy). Default "
                                "1.0 with --top-p 0.99: the official training rollout's sampling "
                                "(si0wang/LLaVA-Critic-R1@6fd42d1 EasyR1/examples/config.yaml:56-57); the papers do "
                                "not publish their Best-of-N sampling settings.")
    seed: int = option(0, "Fixes sampling seeds, presented orders and coin flips.")
    resume: bool = option(False, "Continue a run in --out with the same options: questions already in picks.jsonl are "
                          "skipped (--concurrency, --timeout may change).")
    timeout: float = option(DEFAULT_TIMEOUT, TIMEOUT_HELP)
    top_p: float = option(SAMPLE_TOP_P, "Nucleus sampling for candidates; default 0.99, sourced as --temperature.")
    judge_sees_thinking: bool = option(False, "Show the judge each candidate whole; by default its <think>...</think> "
                                       "part is left out (two 2k-token candidates and a large image overflow an 8k "
                                       "context).", flag="--judge-sees-thinking")
    max_model_len: int | None = option(None, "The server's context length: a match whose prompt could overflow it "
                                       "(UTF-8 bytes of the text + one token per 28x28 image pixels + 64, plus "
                                       "--max-tokens) is not sent but counted and decided by a seeded coin.",
                                       show_default=False)

    def __post_init__(self) -> None:
        if self.n < 2:
            raise UserError(f"--n {self.n}: Best-of-N needs at least 2 candidates")
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy {self.strategy!r} is not known; choose from {', '.join(STRATEGIES)}")
        samples, judgements = requests_per_question(self.n, self.strategy)
        if samples + judgements > MAX_REQUESTS_PER_QUESTION:
            raise UserError(f"--n {self.n} with {self.strategy}: {samples} samples + {judgements} judgements = "
                            f"{samples + judgements} requests per question, over the limit of "
                            f"{MAX_REQUESTS_PER_QUESTION}; lower --n" + (" or use --strategy knockout"
                                                                         if self.strategy == "round-robin" else ""))
        _check_common(self)
        if not 0 < self.top_p <= 1:  # nan fails too
            raise UserError("--top-p must be above 0 and at most 1")
        if self.max_model_len is not None and self.max_model_len <= self.max_tokens:
            raise UserError(f"--max-model-len {self.max_model_len} leaves no room for a prompt beside --max-tokens "
                            f"{self.max_tokens}; pass the context length the server runs with")
        self.input, self.out = Path(self.input), Path(self.out)

    def identity(self) -> dict:
        """The options a pick depends on; a resume must repeat them (concurrency, timeout and the
        server's address may change)."""
        return {"input": str(self.input.resolve()), "model": self.model, "n": self.n, "strategy": self.strategy,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed,
                "top_p": self.top_p, "judge_sees_thinking": self.judge_sees_thinking,
                "max_model_len": self.max_model_len}


def requests_per_question(n: int, strategy: str) -> tuple[int, int]:
    """(samples, judgements) one question costs."""
    return n, n - 1 if strategy == "knockout" else n * (n - 1)


# --- difficulty ----------------------------------------------------------------------------------

# What `difficulty` reads of a recipe (`critic-data train`'s YAML): its rollout sampling, completion length and
# group size, the rewards it trains on, and the pixel bounds its images are fitted to.
DIFFICULTY_RECIPE_KEYS = ("temperature", "top_p", "max_completion_length", "num_generations", "reward_funcs",
                          "reward_weights", "min_pixels", "max_pixels")


@dataclass
class DifficultyOptions:
    """Everything `critic-data difficulty` needs; checked on creation, the recipe's values filled in."""

    dataset: str = option(help="A critic-data dataset: a folder from `critic-data build` (--format trl), or its Hub "
                               "id.", argument=True)
    base_url: str = option(help=SERVER_HELP)
    model: str = option(help="Model name as the server knows it: the model you will train (its base checkpoint).")
    out: Path = option(help="Folder for difficulty.jsonl, run.json and summary.json.")
    split: str = option("train", "Split to measure.")
    recipe: str = option("critic-r1", "critic-r1, critic-r1-plus, or the path of a recipe .yaml: its temperature, "
                                      "top_p, max_completion_length, num_generations, rewards and pixel bounds are "
                                      "what a row is measured with.")
    samples: int | None = option(None, f"Judgements per row (2 to {MAX_SAMPLES}); default the recipe's "
                                       "num_generations, the GRPO group size (8).", show_default=False)
    temperature: float | None = option(None, "Sampling temperature; default the recipe's (1.0).", show_default=False)
    top_p: float | None = option(None, "Nucleus sampling; default the recipe's (0.99).", show_default=False)
    max_tokens: int | None = option(None, "Completion budget per judgement; default the recipe's "
                                          "max_completion_length (2048).", show_default=False)
    seed: int = option(0, "Fixes each row's sampling seed.")
    limit: int | None = option(None, "Measure only the first N rows.")
    concurrency: int = option(8, "Requests in flight at once (each asks for --samples completions).")
    resume: bool = option(False, "Continue a run in --out with the same options and dataset: rows already in "
                          "difficulty.jsonl are skipped (--concurrency, --timeout, --limit may change).")
    timeout: float = option(DEFAULT_TIMEOUT, TIMEOUT_HELP)

    # Filled from the recipe on creation (not options: the recipe is the one place they are set).
    rewards = ()  # ((name, weight), ...): the recipe's reward_funcs and reward_weights
    pixels = (0, 0)  # (min_pixels, max_pixels): the images are fitted to them, as the trainer fits them
    # The measured dataset's fingerprint (`rl/difficulty.py` `dataset_fingerprint`), set by the run
    # before its first request: run.json records it, and a resume on another dataset is refused.
    fingerprint = None

    def __post_init__(self) -> None:
        recipe = read_recipe(self.recipe)
        self.samples = recipe["num_generations"] if self.samples is None else self.samples
        self.temperature = recipe["temperature"] if self.temperature is None else self.temperature
        self.top_p = recipe["top_p"] if self.top_p is None else self.top_p
        self.max_tokens = recipe["max_completion_length"] if self.max_tokens is None else self.max_tokens
        weights = recipe["reward_weights"] or [1.0] * len(recipe["reward_funcs"])
        self.rewards = tuple(zip(recipe["reward_funcs"], weights, strict=True))
        self.pixels = (recipe["min_pixels"], recipe["max_pixels"])
        if not 2 <= self.samples <= MAX_SAMPLES:
            raise UserError(f"--samples must be from 2 to {MAX_SAMPLES}, not {self.samples}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserError("--temperature must be above 0: a pass rate is measured over sampled judgements")
        if not 0 < self.top_p <= 1:  # nan fails too
            raise UserError("--top-p must be above 0 and at most 1")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")
        _check_common(self)
        self.out = Path(self.out)

    def identity(self) -> dict:
        """What a row's record depends on; a resume must repeat it. The dataset is named by its
        fingerprint, not its path: a moved folder resumes, another build of the same path does not."""
        return {"dataset": self.fingerprint, "split": self.split, "model": self.model, "recipe": self.recipe,
                "samples": self.samples, "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed, "rewards": [list(pair) for pair in self.rewards],
                "pixels": list(self.pixels)}


def read_recipe(recipe: str) -> dict:
    """The values `difficulty` reads of a recipe (DIFFICULTY_RECIPE_KEYS), by shipped name or .yaml path,
    read as `critic-data train --help` reads them (the YAML itself: TRL is not imported)."""
    import yaml

    from critic_data.rl import recipes

    shipped = recipes()
    path = shipped.get(recipe) or Path(recipe)
    if recipe not in shipped and not (path.suffix in (".yaml", ".yml") and path.is_file()):
        raise UserError(f"unknown recipe {recipe!r}: use {', '.join(shipped)} or the path of a recipe .yaml file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise UserError(f"recipe {path.name} cannot be read ({type(error).__name__}); fix it or pass another "
                        "--recipe") from None
    values = values if isinstance(values, dict) else {}
    missing = [key for key in DIFFICULTY_RECIPE_KEYS if key not in values]
    if missing:
        raise UserError(f"recipe {path.name} sets no {', '.join(missing)}; difficulty measures with the recipe's own "
                        "values: add them")
    return _checked_recipe(path.name, values)


def _checked_recipe(name: str, values: dict) -> dict:
    """The recipe's values when each has the type `difficulty` uses it as; else one line naming the first
    that does not."""
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def names(value) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)

    checks = {"temperature": number, "top_p": number, "max_completion_length": lambda v: type(v) is int,
              "num_generations": lambda v: type(v) is int, "reward_funcs": names,
              "reward_weights": lambda v: v is None or (isinstance(v, list) and all(map(number, v))
                                                       and len(v) == len(values["reward_funcs"] or ())),
              "min_pixels": lambda v: type(v) is int and v > 0, "max_pixels": lambda v: type(v) is int and v > 0}
    wrong = next((key for key, fits in checks.items() if not fits(values[key])), None)
    if wrong:
        raise UserError(f"recipe {name}: {wrong}: {values[wrong]!r} is not what difficulty can use")
    if PASS_REWARD not in values["reward_funcs"]:
        raise UserError(f"recipe {name} trains on no {PASS_REWARD} reward; a pass rate is the share of samples it "
                        "pays 1")
    return values
