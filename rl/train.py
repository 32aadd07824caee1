"""GRPO training of a critic VLM on a critic-data dataset: LLaVA-Critic-R1 and R1+.

    critic-data train --recipe critic-r1 --dataset_name out/my-dataset [--any_trl_flag VALUE ...]
    accelerate launch --config_file rl/recipes/accelerate/zero3.yaml -m critic_data.cli train --recipe critic-r1 ...

A recipe is a TRL GRPO config YAML (`rl/recipes/`, launch commands in its opening comment),
parsed by TRL's own `TrlParser` into `GRPOConfig` + `ModelConfig` + script arguments, so every
field can be overridden with TRL's flag names. Training is TRL's `GRPOTrainer`. This module adds
only what TRL's `trl grpo` script lacks for this task:
- pixel bounds (`min_pixels`, `max_pixels`), applied to the processor *and* to the images
  themselves: a colocated vLLM builds its own processor from the model folder, so only
  pre-sized images guarantee that trainer and vLLM count the same image tokens;
- the official prompt filter (`max_prompt_length`, `prompt_length_unit`): rows whose chat-template
  string is longer than 6142 characters are dropped before training, as the official run dropped
  them; `--prompt_length_unit tokens` counts text + expanded image tokens with the model's own
  processor instead. TRL 1.16 does not truncate prompts (truncation would cut image tokens and fail
  with "Image features and image tokens do not match"); the dropped count is logged;
- rewards by registry name (`critic_data.rl.rewards.REWARDS`);
- a model card in the output folder and in every checkpoint, ready for `critic-data push`: each
  holds the base model's processor as loaded (as the official checkpoints do; the training pixel
  bounds are in the card), and nothing published names a local absolute path.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import io
import math
import os
import shlex
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from transformers import TrainerCallback
from trl import (
    GRPOConfig,
    GRPOTrainer,
    ModelConfig,
    ScriptArguments,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from critic_data import UserError, package_version
from critic_data.cards.model_card import write_model_card
from critic_data.files import published_path, refuse_a_path_that_cannot_be_a_folder
from critic_data.hub_client import check_hub_repo, is_repo_id
from critic_data.rl import RECIPES_DIR, recipes
from critic_data.rl.client import smart_resize
from critic_data.rl.options import OFFICIAL_MAX_PROMPT_LENGTH, PROMPT_LENGTH_UNITS
from critic_data.rl.rewards import DEFAULT_REWARDS, DEFAULT_WEIGHTS, reward_function

REQUIRED_COLUMNS = ("prompt", "images", "answer")
console = Console(stderr=True)


@dataclass
class CriticScriptArguments(ScriptArguments):
    """TRL's script arguments plus the critic-data keys a recipe may set (TRL 1.16 has no equivalent)."""

    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision of --dataset_name."})
    reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARDS),
        metadata={"help": "Rewards by name (preference, format) or dotted import path."},
    )
    min_pixels: int = field(default=262_144, metadata={"help": "Images with fewer pixels are upscaled."})
    max_pixels: int = field(default=4_194_304, metadata={"help": "Images with more pixels are downscaled."})
    max_prompt_length: int = field(
        default=OFFICIAL_MAX_PROMPT_LENGTH,
        metadata={"help": "Rows whose prompt is longer (in --prompt_length_unit) are dropped before training."},
    )
    prompt_length_unit: str = field(
        default="characters",
        metadata={"help": "characters: the official filter, the chat-template string's length with one placeholder "
                          "per image. tokens: text tokens + each image's tokens under the pixel bounds.",
                  "choices": list(PROMPT_LENGTH_UNITS)},
    )

    def __post_init__(self):
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels} and {self.max_pixels}")
        if self.max_prompt_length <= 0:
            raise ValueError(f"max_prompt_length must be positive, got {self.max_prompt_length}")
        if self.prompt_length_unit not in PROMPT_LENGTH_UNITS:
            raise ValueError(f"prompt_length_unit must be one of {', '.join(PROMPT_LENGTH_UNITS)}, "
                             f"got {self.prompt_length_unit!r}")


class _Parser(TrlParser):
    def error(self, message):  # argparse would print the usage of ~300 flags, then exit
        raise UserError(f"{message} (`critic-data train --recipe NAME -h` lists every flag)")


def resolve_recipe(recipe: str) -> Path:
    shipped = recipes()
    if recipe in shipped:
        return shipped[recipe]
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise UserError(f"unknown recipe {recipe!r}: use {', '.join(shipped)} or the path of a recipe .yaml file")


def _fits(value, hint) -> bool:
    """Whether a recipe's YAML value can be a field of type `hint`. A string is left to the parser
    (it converts "1e-6" and refuses "fast" in one line), except for a list field, which keeps it as it is."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, argument) for argument in arguments)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, arguments[0]) for item in value) if arguments else \
            isinstance(value, list)
    if isinstance(value, str):
        return hint is not type(None)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (int, bool):
        return type(value) is hint
    if origin is typing.Literal or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return False  # a choice is named by a string
    return hint is not str  # dict, Any, ...: left to TRL


def _check_recipe_values(path: Path) -> None:
    """A recipe must be a mapping of option names to values of their type: TRL's parser takes YAML
    values as they are, and a `null` or a list where a number belongs would end in a traceback later."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return  # the parser says what is wrong, in one line
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        raise UserError(f"recipe {path.name} must be a YAML mapping of option names to values (`learning_rate: "
                        "1.0e-6`)")
    hints = {name: hint for kind in (CriticScriptArguments, GRPOConfig, ModelConfig)
             for name, hint in typing.get_type_hints(kind).items()}
    wrong = [f"{key}: {value!r} is not {hints[key] if typing.get_args(hints[key]) else hints[key].__name__}"
             for key, value in config.items() if key in hints and not _fits(value, hints[key])]
    if wrong:
        raise UserError(f"recipe {path.name}: {'; '.join(wrong)}")


# GRPOConfig values TRL takes as they are: each out of range would fail mid-run or train something else.
# (NaN fails every comparison, so it is refused too.)
_RANGES = {
    "learning_rate": (lambda v: 0 <= v < math.inf, "a number, 0 or more"),
    "num_train_epochs": (lambda v: 0 <= v < math.inf, "a finite number, 0 or more; or set --max_steps"),
    "max_steps": (lambda v: v == -1 or v >= 1, "-1 (train --num_train_epochs) or at least 1"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a number, 0 or more"),
    "max_grad_norm": (lambda v: 0 <= v < math.inf, "a number, 0 or more"),
    "temperature": (lambda v: 0 < v < math.inf, "above 0 (GRPO samples its completions)"),
    "top_p": (lambda v: 0 < v <= 1, "above 0 and at most 1"),
    # TRL documents 0 as "no top-k filtering"; vLLM reads -1 so too, but transformers' sampler refuses it
    "top_k": (lambda v: v >= 0, "0 (no top-k filtering) or a number of tokens"),
    "beta": (lambda v: 0 <= v < math.inf, "a number, 0 or more"),
    "epsilon": (lambda v: 0 <= v < math.inf, "a number, 0 or more"),
    "epsilon_high": (lambda v: 0 <= v < math.inf, "a number, 0 or more"),
    "delta": (lambda v: 1 < v < math.inf, "above 1 (a dual-clip bound: the recipes use 3.0)"),
    "max_completion_length": (lambda v: v >= 1, "at least 1"),  # and below the model's context: see train()
    "per_device_train_batch_size": (lambda v: v >= 1, "at least 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "at least 1"),
    "save_steps": (lambda v: v > 0, "above 0"),
}


def parse_recipe(recipe: str, overrides: list[str]) -> tuple[CriticScriptArguments, GRPOConfig, ModelConfig]:
    """The recipe's values, overridden by TRL-style flags (`--learning_rate 5e-7`)."""
    import yaml

    path = resolve_recipe(recipe)
    _check_recipe_values(path)
    # TRL's own default sets `gradient_checkpointing`, which transformers 5 renames `activation_checkpointing`
    # with a FutureWarning on every run: nothing a user of the recipe can act on (the value carries over).
    warnings.filterwarnings("ignore", message=r"`gradient_checkpointing(_kwargs)?` is deprecated",
                            category=FutureWarning)
    parser = _Parser((CriticScriptArguments, GRPOConfig, ModelConfig), prog=f"critic-data train --recipe {recipe}",
                     allow_abbrev=False)  # a typo must be an error, not a prefix match
    try:
        script_args, training_args, model_args = parser.parse_args_and_config(["--config", str(path), *overrides])
    except ZeroDivisionError:  # TRL's own checks divide by these before anything else can look at them
        raise UserError(f"recipe {path.name}: a batch size, step count or generation count is 0; each must be "
                        "at least 1") from None
    except (ValueError, TypeError, yaml.YAMLError) as error:  # unknown keys, bad values, cross-field checks
        message = " ".join(str(error).split())
        if "bf16" in message and "use_cpu" in message:
            message += "; on a machine without a GPU add --use_cpu --bf16 false --use_vllm false"
        raise UserError(f"recipe {path.name}: {message}") from None
    for name, (fits, what) in _RANGES.items():
        value = getattr(training_args, name)
        if value is not None and not fits(value):
            raise UserError(f"--{name} {value} must be {what}")
    if not all(math.isfinite(weight) for weight in training_args.reward_weights or ()):
        raise UserError(f"--reward_weights {training_args.reward_weights} must be finite numbers")
    if training_args.reward_weights is None and tuple(script_args.reward_funcs) == DEFAULT_REWARDS:
        training_args.reward_weights = list(DEFAULT_WEIGHTS)
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(script_args.reward_funcs):
        raise UserError(f"--reward_weights has {len(training_args.reward_weights)} values for "
                        f"{len(script_args.reward_funcs)} --reward_funcs")
    return script_args, training_args, model_args


# --------------------------------------------------------------------------- data


def load_critic_dataset(args: CriticScriptArguments):
    """The DatasetDict of a built folder or a Hub dataset id, checked to be a critic-data dataset."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError, DatasetNotFoundError

    name = args.dataset_name
    if not name:
        raise UserError("no dataset: pass --dataset_name, a folder built by `critic-data build` or a Hub dataset id")
    if args.dataset_streaming:
        raise UserError("--dataset_streaming is not supported: the prompt budget is checked over the whole "
                        "dataset before training")
    local = Path(name).expanduser()
    if not local.exists() and not is_repo_id(name):
        raise UserError(f"no dataset folder at {name}; build one with `critic-data build --out {name}`")
    if not local.exists():
        check_hub_repo(name, f"--dataset_name {name}")
    try:
        dataset = load_dataset(str(local) if local.exists() else name, name=args.dataset_config,
                               revision=None if local.exists() else args.dataset_revision)
    except (DatasetNotFoundError, DatasetGenerationError, FileNotFoundError, ConnectionError, OSError,
            ValueError) as error:
        if isinstance(error, DatasetGenerationError) and error.__cause__ is not None:  # says only "An error occurred"
            error = error.__cause__  # e.g. pyarrow's "BatchSize must be greater than 0" for a split with no rows
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load dataset {name}: {first_line}") from None
    if args.dataset_train_split not in dataset:
        raise UserError(f"dataset {name} has no split {args.dataset_train_split!r} (it has {', '.join(dataset)})")
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset[args.dataset_train_split].column_names]
    if missing:
        raise UserError(f"dataset {name} is not a critic-data dataset: no column {', '.join(missing)}")
    return dataset


def check_hub_model(name: str | None) -> None:
    """A model named by its Hub id (no such folder here) is asked of the Hub once, bounded, before the
    dataset loads: without a network, or with the model missing, the run ends in one line that says
    what to do, not after minutes of huggingface_hub's retries for each of the processor's files."""
    if name and not Path(name).expanduser().exists() and is_repo_id(name):
        check_hub_repo(name, f"--model_name_or_path {name}", repo_type="model")


def load_processor(model_args: ModelConfig, script_args: CriticScriptArguments, trust_remote_code: bool):
    """The model's own processor with the recipe's pixel bounds; Qwen2-VL-style processors only."""
    from transformers import AutoProcessor

    name = model_args.model_name_or_path
    if not name:
        raise UserError("no model: pass --model_name_or_path")
    try:
        processor = AutoProcessor.from_pretrained(
            name, revision=model_args.model_revision, trust_remote_code=trust_remote_code,
            padding_side="left", truncation_side="left",
            size={"shortest_edge": script_args.min_pixels, "longest_edge": script_args.max_pixels},
        )
    except (OSError, ValueError) as error:  # missing files, unreachable Hub, no processor in the folder
        raise UserError(f"cannot load model {name}: {str(error).strip().splitlines()[0]}") from None
    image_processor = getattr(processor, "image_processor", None)
    if not (hasattr(image_processor, "merge_size") and hasattr(processor, "_get_num_multimodal_tokens")):
        raise UserError(f"{name} has no Qwen2-VL-style image processor; the critic recipes train "
                        "Qwen2.5-VL-family models (pixel bounds and token counts depend on it)")
    return processor


def load_base_processor(model_args: ModelConfig, trust_remote_code: bool):
    """The base model's processor as loaded, pixel bounds and padding side its own: what every saved
    folder ships. Called after `load_processor`, which has said in one line why a model cannot load."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                         trust_remote_code=trust_remote_code)


def check_completion_budget(model_args: ModelConfig, max_completion_length: int, trust_remote_code: bool) -> None:
    """A completion budget must leave the prompt room in the model's context: a larger one fails only at
    the first rollout, after the data and the model have loaded."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                        trust_remote_code=trust_remote_code)
    positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    if positions is not None and max_completion_length >= positions:
        raise UserError(f"--max_completion_length {max_completion_length} must be below the "
                        f"{positions} positions of {model_args.model_name_or_path}'s context, which holds the "
                        "prompt too")


def fit_image(image, processor):
    """The image resized exactly as the processor would resize it (a no-op for the processor afterwards)."""
    from PIL import Image

    image_processor = processor.image_processor
    height, width = smart_resize(
        image.height, image.width, min_pixels=image_processor.size["shortest_edge"],
        max_pixels=image_processor.size["longest_edge"], factor=image_processor.patch_size * image_processor.merge_size,
    )
    if (width, height) == image.size:
        return image
    return image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)


def prompt_lengths(dataset, processor, chat_template_kwargs: dict | None = None,
                   unit: str = "tokens") -> list[int | None]:
    """Each row's prompt length in `unit`: "tokens" as the trainer will see them (the chat-templated
    text with every image placeholder expanded to the image's token count under the processor's pixel
    bounds, counted by the processor itself); "characters" of the chat-templated string with one
    placeholder per image, the official filter's measure. Image sizes come from image headers (no
    pixel decoding). None: an image the processor cannot take (e.g. aspect ratio above 200), in either
    unit (training on it would fail)."""
    from datasets import Image, List
    from PIL import Image as PILImage

    image_token_id = processor.image_token_id
    view = dataset.select_columns(["prompt", "images"]).cast_column("images", List(Image(decode=False)))
    lengths: list[int | None] = []
    for batch in view.iter(batch_size=256):
        texts = [processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False,
                                               **(chat_template_kwargs or {})) for prompt in batch["prompt"]]
        ids = (processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if unit == "tokens"
               else [None] * len(texts))  # the character rule needs no tokenizer pass
        for text, text_ids, images in zip(texts, ids, batch["images"], strict=True):
            try:
                sizes = []
                for image in images:
                    source = io.BytesIO(image["bytes"]) if image["bytes"] is not None else image["path"]
                    with PILImage.open(source) as opened:
                        sizes.append((opened.height, opened.width))
                image_tokens = processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens if sizes else []
            except (ValueError, OSError):
                lengths.append(None)
                continue
            lengths.append(len(text) if unit == "characters"
                           else len(text_ids) - text_ids.count(image_token_id) + sum(image_tokens))
    return lengths


def within_budget(dataset, processor, budget: int, split: str, chat_template_kwargs: dict | None, log: bool,
                  unit: str = "tokens"):
    """The rows whose prompt fits the budget (in `unit`); the dropped count is logged."""
    lengths = prompt_lengths(dataset, processor, chat_template_kwargs, unit)
    keep = [i for i, n in enumerate(lengths) if n is not None and n <= budget]
    too_long = sum(1 for n in lengths if n is not None and n > budget)
    unusable = lengths.count(None)
    if log:
        longest = max((n for n in lengths if n is not None), default=0)
        console.print(f"{split}: dropped {too_long} of {len(lengths)} rows whose prompt exceeds {budget} {unit} "
                      f"(longest {longest}); {unusable} rows with an image the processor cannot take; "
                      f"{len(keep)} rows kept", highlight=False, soft_wrap=True)
    return dataset.select(keep), len(lengths) - len(keep)


def sized_images(dataset, processor):
    """The dataset with its images fitted lazily, on access, to the processor's pixel bounds."""

    def transform(batch):
        return {"images": [[fit_image(image, processor) for image in images] for images in batch["images"]]}

    return dataset.with_transform(transform, columns=["images"], output_all_columns=True)


# --------------------------------------------------------------------------- provenance for the model card


# What is published names no local folder: a user's paths (home directory, user name) stay private.
# A local dataset or base model is recorded by its folder's name and a fingerprint of its content.
FINGERPRINT_METHOD = "blake2b over each {kind} file's path and blake2b(size, first MiB, last MiB)"


def folder_fingerprint(folder: Path, pattern: str) -> str:
    """One digest of the files under `folder` matching `pattern`: their paths and `fingerprint`s."""
    from critic_data.files import fingerprint

    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(folder.rglob(pattern)):
        digest.update(f"{path.relative_to(folder)}:{fingerprint(path)}\n".encode())
    return digest.hexdigest()


def shareable(value):
    """A local absolute path as published files name it (`published_path`); any other value as it is."""
    if isinstance(value, str) and os.path.isabs(os.path.expanduser(value)):
        return published_path(os.path.expanduser(value))
    return value


def dataset_provenance(args: CriticScriptArguments) -> dict:
    """Hub id + resolved commit, or local folder name + content fingerprint of its data files."""
    from huggingface_hub import DatasetCard

    local = Path(args.dataset_name).expanduser()
    if local.exists():
        card = local / "README.md"
        license_ = DatasetCard.load(card).data.license if card.is_file() else None
        return {"name": local.resolve().name, "on_hub": False, "revision": None,
                "fingerprint": folder_fingerprint(local, "*.parquet"),
                "fingerprint_method": FINGERPRINT_METHOD.format(kind="parquet"), "license": license_}
    try:
        from huggingface_hub import HfApi

        info = HfApi().dataset_info(args.dataset_name, revision=args.dataset_revision)
        revision, license_ = info.sha, info.card_data.license if info.card_data else None
    except Exception:  # provenance is best effort: the dataset itself already loaded
        revision, license_ = args.dataset_revision or "main", None
    return {"name": args.dataset_name, "on_hub": True, "revision": revision, "fingerprint": None, "license": license_}


def _base_model_license(name: str) -> str | None:
    from huggingface_hub import ModelCard

    readme = Path(name) / "README.md"
    try:
        if Path(name).exists():
            return ModelCard.load(readme).data.license if readme.is_file() else None
        return ModelCard.load(name).data.license
    except Exception:  # best effort: an unreachable Hub must not stop a training run
        return None


def recipe_provenance(recipe: Path) -> dict:
    """A shipped recipe by its name; a user's own by its file name and a fingerprint of its bytes."""
    if recipe.resolve().parent == RECIPES_DIR.resolve():
        return {"name": recipe.stem, "shipped": True, "file": recipe.name, "fingerprint": None}
    return {"name": recipe.stem, "shipped": False, "file": recipe.name,
            "fingerprint": hashlib.blake2b(recipe.read_bytes(), digest_size=16).hexdigest()}


def card_info(recipe: Path, overrides: list[str], script_args, training_args, model_args, dataset: dict,
              base_pixels: tuple[int, int]) -> dict:
    base = model_args.model_name_or_path
    local_base = Path(base).expanduser()
    hyperparameters = {}
    for name in (
        "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "optim",
        "num_generations", "temperature", "top_p", "max_completion_length", "beta", "epsilon", "epsilon_high",
        "delta", "loss_type", "scale_rewards", "num_iterations", "per_device_train_batch_size",
        "gradient_accumulation_steps", "generation_batch_size", "steps_per_generation", "world_size",
        "num_train_epochs", "max_steps", "bf16", "gradient_checkpointing", "use_vllm", "vllm_mode", "seed"):
        value = getattr(training_args, name)
        hyperparameters[name] = getattr(value, "value", value)  # enums (SchedulerType.CONSTANT) as their value
    hyperparameters.update(min_pixels=script_args.min_pixels, max_pixels=script_args.max_pixels,
                           max_prompt_length=script_args.max_prompt_length,
                           prompt_length_unit=script_args.prompt_length_unit)
    recipe_record = recipe_provenance(recipe)
    arguments = [(argument.partition("=") if argument.startswith("--") else ("", "", argument))
                 for argument in overrides]  # `--flag PATH` and `--flag=PATH`
    return {
        "model_name": Path(training_args.output_dir).resolve().name,
        "base_model": base if not local_base.exists() else local_base.resolve().name,
        "base_model_revision": model_args.model_revision,
        "base_model_on_hub": not local_base.exists(),
        "base_model_fingerprint": folder_fingerprint(local_base, "*.safetensors") if local_base.is_dir() else None,
        "base_model_license": _base_model_license(base),
        "base_model_fingerprint_method": FINGERPRINT_METHOD.format(kind="safetensors"),
        "pixels": {"training": (script_args.min_pixels, script_args.max_pixels), "base": base_pixels},
        "dataset": {**dataset, "max_prompt_length": script_args.max_prompt_length,
                    "prompt_length_unit": script_args.prompt_length_unit},
        "recipe": recipe_record,
        "rewards": list(zip(script_args.reward_funcs,
                            training_args.reward_weights or [1.0] * len(script_args.reward_funcs), strict=True)),
        "hyperparameters": hyperparameters,
        "command": shlex.join(["critic-data", "train", "--recipe",
                               recipe_record["name"] if recipe_record["shipped"] else recipe_record["file"],
                               *(flag + equals + shareable(value) for flag, equals, value in arguments)]),
        "versions": {name: package_version(name) for name in ("critic-data", "trl", "transformers", "torch", "vllm")},
        "max_steps": training_args.max_steps if training_args.max_steps > 0 else None,
    }


class CriticGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose resume loads the checkpoint's weights, and whose saved folders are ready to publish.

    Each save (checkpoint or final) holds `published_processor`, the base model's processor as loaded,
    instead of the training one with the recipe's pixel bounds: the official checkpoints ship the base
    model's, and a server of a checkpoint would otherwise upscale every small image to 512x512. Its
    `training_args.bin` names no local folder (`critic-data push` publishes it).

    transformers' Trainer resumes by loading the saved state dict as it is, but Qwen2.5-VL saves its
    weights under their original names (`visual.*`, `model.layers.*`) and holds them under others
    (`model.visual.*`, `model.language_model.*`): nothing matches, a warning scrolls by, and training
    silently goes on from the *base* weights with the checkpoint's optimiser state
    (huggingface/transformers#43701). `from_pretrained` renames; so the weights are read through it.
    DeepSpeed and FSDP resume from their own sharded state, and PEFT adapters keep their names: those
    are left to the Trainer.
    """

    def __init__(self, *args, published_processor=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.published_processor = published_processor

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        import torch
        from transformers.trainer import TRAINING_ARGS_NAME

        super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return
        folder = output_dir if output_dir is not None else self.args.output_dir
        if self.published_processor is not None:
            self.published_processor.save_pretrained(folder)
        shared = copy.copy(self.args)  # the run itself goes on with its own paths
        for name, value in vars(self.args).items():
            setattr(shared, name, shareable(value))
        torch.save(shared, os.path.join(folder, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from transformers import PreTrainedModel

        model = model if model is not None else self.model
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not isinstance(model, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(model.parameters()).dtype
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=dtype)
        model.load_state_dict(saved.state_dict(), strict=True)  # every tensor, or an error
        del saved


def check_output_dir(out: Path, resume: str | None) -> None:
    """A run writes into an empty or new folder, or, resumed, into its checkpoint's own run folder: the
    trainer writes checkpoints, weights and a card over whatever else a folder holds (a dataset's README,
    another run)."""
    refuse_a_path_that_cannot_be_a_folder("--output_dir", out)
    try:
        held = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    except OSError as error:
        raise UserError(f"--output_dir {out} cannot be read ({error.strerror}); pass a folder you can write") from None
    listed = f"{', '.join(held[:3])}{', ...' if len(held) > 3 else ''}"
    if held and resume and out.resolve() != Path(resume).resolve().parent:
        raise UserError(f"--output_dir {out} already holds {listed}, and it is not the run folder of "
                        f"--resume_from_checkpoint {resume}: continue in {Path(resume).parent} "
                        "or in a new, empty folder")
    if held and not resume:
        steps = [int(name[11:]) for name in held if name.startswith("checkpoint-") and name[11:].isdecimal()]
        again = f"continue it with --resume_from_checkpoint {out}/checkpoint-{max(steps)}, " if steps else ""
        raise UserError(f"--output_dir {out} already holds {listed}; "
                        f"a new run would write over it: {again}choose another --output_dir, or empty it yourself")


class ModelCardCallback(TrainerCallback):
    """TRL writes a generic card on every save; ours replaces it and goes into each checkpoint too,
    so any checkpoint can be pushed as a model repo."""

    def __init__(self, info: dict | None):
        self.info = info

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.info is not None:
            for folder in (Path(args.output_dir) / f"checkpoint-{state.global_step}", Path(args.output_dir)):
                write_model_card(folder, self.info, step=state.global_step)


# --------------------------------------------------------------------------- the run


def filtered_splits(dataset, processor, script_args, training_args, log: bool) -> tuple[dict, int]:
    """The splits training uses (train, and test when evaluating), each without the rows over the prompt
    budget and with its images fitted to the pixel bounds; and how many train rows were dropped."""
    splits, dropped = {}, 0
    wanted = [script_args.dataset_train_split]
    if training_args.eval_strategy != "no" and script_args.dataset_test_split in dataset:
        wanted.append(script_args.dataset_test_split)
    for split in wanted:
        kept, n_dropped = within_budget(dataset[split], processor, script_args.max_prompt_length, split,
                                        training_args.chat_template_kwargs, log=log,
                                        unit=script_args.prompt_length_unit)
        if len(kept) == 0:
            raise UserError(f"no {split} row fits --max_prompt_length {script_args.max_prompt_length} "
                            f"({script_args.prompt_length_unit})")
        splits[split] = sized_images(kept, processor)
        dropped += n_dropped if split == script_args.dataset_train_split else 0
    return splits, dropped


def make_trainer(model_args, training_args, rewards, train_split, eval_split, processor, base_processor, info):
    """The GRPO trainer of a run: the model loaded as ModelConfig says, the card written at each save."""
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype, **(training_args.model_init_kwargs or {}),
    }
    return CriticGRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train_split,
        eval_dataset=eval_split,
        processing_class=processor,
        callbacks=[ModelCardCallback(info)],
        published_processor=base_processor,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )


def train(recipe: str, overrides: list[str]) -> Path:
    """Run a recipe with overrides; returns the output folder (weights, processor, model card)."""
    path = resolve_recipe(recipe)
    script_args, training_args, model_args = parse_recipe(recipe, overrides)
    if training_args.push_to_hub:
        raise UserError("--push_to_hub is not supported here: push a checkpoint folder with `critic-data push`")
    resume = training_args.resume_from_checkpoint
    if resume and not Path(resume).is_dir():
        raise UserError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    check_output_dir(Path(training_args.output_dir), resume)
    rewards = [reward_function(name) for name in script_args.reward_funcs]
    check_hub_model(model_args.model_name_or_path)
    dataset = load_critic_dataset(script_args)
    processor = load_processor(model_args, script_args, training_args.trust_remote_code)
    check_completion_budget(model_args, training_args.max_completion_length, training_args.trust_remote_code)
    base_processor = load_base_processor(model_args, training_args.trust_remote_code)

    main = training_args.process_index == 0
    splits, dropped = filtered_splits(dataset, processor, script_args, training_args, log=main)
    train_split = splits[script_args.dataset_train_split]
    prompts_per_rollout = training_args.generation_batch_size // training_args.num_generations
    if len(train_split) < prompts_per_rollout:  # TRL's sampler would yield no batch and fail obscurely
        raise UserError(f"{len(train_split)} train rows are fewer than the {prompts_per_rollout} prompts of one "
                        "rollout (generation_batch_size / num_generations); lower --generation_batch_size")

    info = None
    if main:  # only the main process writes cards
        provenance = {**dataset_provenance(script_args), "rows_used": len(train_split), "rows_dropped": dropped}
        base_size = base_processor.image_processor.size
        info = card_info(path, overrides, script_args, training_args, model_args, provenance,
                         base_pixels=(base_size["shortest_edge"], base_size["longest_edge"]))

    trainer = make_trainer(model_args, training_args, rewards, train_split, splits.get(script_args.dataset_test_split),
                           processor, base_processor, info)
    trainer.train(resume_from_checkpoint=resume)
    output = Path(training_args.output_dir)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        write_model_card(output, info, step=trainer.state.global_step)
        console.print(f"trained {trainer.state.global_step} steps; weights, processor and model card in {output}",
                      highlight=False, soft_wrap=True)
    trainer.accelerator.end_training()
    return output
