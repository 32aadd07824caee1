"""Every shipped recipe and accelerate launch config loads, validates and says how to launch it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from critic_data import UserError
from critic_data.rl import RECIPES_DIR, recipes
from critic_data.rl.options import OFFICIAL_MAX_PROMPT_LENGTH

ACCELERATE_DIR = RECIPES_DIR / "accelerate"


def parse_recipe(recipe: str, overrides: list[str]):
    """critic_data.rl.train's, imported when a test parses (importing TRL takes seconds: not at collection)."""
    from critic_data.rl.train import parse_recipe as parse

    return parse(recipe, overrides)


CRITIC_DATA_KEYS = {"min_pixels", "max_pixels", "max_prompt_length", "prompt_length_unit"}  # TRL 1.16 has no field

OFFICIAL = "si0wang/LLaVA-Critic-R1@6fd42d1"
CONFIG = f"{OFFICIAL}:EasyR1/examples/config.yaml"
SCRIPT = f"{OFFICIAL}:EasyR1/examples/qwen2_5_vl_7b_llava_critic_grpo.sh"
DATASET_PY = f"{OFFICIAL}:EasyR1/verl/utils/dataset.py"
ACTOR = f"{OFFICIAL}:EasyR1/verl/workers/actor/config.py"
ALGOS = f"{OFFICIAL}:EasyR1/verl/trainer/core_algos.py"

# Every method-relevant field of the effective GRPOConfig / ModelConfig / script arguments (after TRL's
# defaults and __post_init__), the value the official run used, and where that value is written.
FIDELITY = {
    "learning_rate": (1e-6, f"{CONFIG}:42 (worker.actor.optim.lr)"),
    "lr_scheduler_type": ("constant", f"{ACTOR}:49 (lr_warmup_ratio 0.0, constant schedule)"),
    "warmup_steps": (0, f"{CONFIG}:45 (lr_warmup_ratio: 0.0)"),
    "optim": ("adamw_torch", f"{OFFICIAL}:EasyR1/verl/workers/fsdp_workers.py:299 (torch.optim.AdamW)"),
    "adam_beta1": (0.9, f"{ACTOR}:46"),
    "adam_beta2": (0.999, f"{ACTOR}:46"),
    "adam_epsilon": (1e-8, "torch.optim.AdamW's default, fsdp_workers.py:299-305 sets none"),
    "weight_decay": (0.01, f"{CONFIG}:43"),
    "max_grad_norm": (1.0, f"{CONFIG}:31"),
    "num_generations": (8, f"{CONFIG}:55 (rollout.n)"),
    "temperature": (1.0, f"{CONFIG}:56"),
    "top_p": (0.99, f"{CONFIG}:57"),
    "top_k": (0, f"{OFFICIAL}:EasyR1/verl/workers/rollout/config.py:28 (top_k -1: off; TRL's 0 is off)"),
    "min_p": (None, "EasyR1 sets none"),
    "repetition_penalty": (1.0, "EasyR1 sets none"),
    "max_completion_length": (2048, f"{CONFIG}:8 (max_response_length)"),
    "mask_truncated_completions": (False, "EasyR1 trains on truncated completions too"),
    "beta": (0.01, f"{CONFIG}:22-24 (use_kl_loss, low_var_kl, kl_coef 1.0e-2)"),
    "use_bias_correction_kl": (False, f"{ALGOS}:420-423 (k3 with no pi_theta/pi_old factor)"),
    "epsilon": (0.2, f"{ACTOR}:82 (clip_ratio_low)"),
    "epsilon_high": (0.3, f"{ACTOR}:83 (clip_ratio_high)"),
    "delta": (3.0, f"{ACTOR}:84 (clip_ratio_dual; equivalent, see test_losses)"),
    "loss_type": ("bnpo", f"{ALGOS}:349 (token mean per micro-batch of 4; see test_losses)"),
    "importance_sampling_level": ("token", f"{ALGOS}:331-336 (per-token ratio)"),
    "scale_rewards": ("group", f"{ALGOS}:169-172 ((r - group mean) / (group std + eps))"),
    "num_iterations": (1, f"{ACTOR}:85 (ppo_epochs)"),
    "vllm_importance_sampling_correction": (False, "EasyR1 has no rollout-vs-trainer reweighting"),
    "multi_objective_aggregation": ("sum_then_normalize", f"{ALGOS}:169-172 (one weighted reward, group-normalised)"),
    "entropy_coef": (0.0, f"{SCRIPT}:25 (worker.actor.is_entropy_reg=False; dp_actor.py:336-339)"),
    "use_adaptive_entropy": (False, "EasyR1 has no entropy control"),
    "top_entropy_quantile": (1.0, "EasyR1 trains on every completion token"),
    "off_policy_mask_threshold": (None, "EasyR1 masks no off-policy token"),
    "sync_ref_model": (False, f"{CONFIG}:22-24 (a fixed reference model)"),
    "reward_weights": ([0.9, 0.1], f"{OFFICIAL}:EasyR1/examples/reward_function/math.py (format_weight 0.1)"),
    "reward_funcs": (["preference", "format"], f"{OFFICIAL}:EasyR1/examples/reward_function/math.py"),
    "per_device_train_batch_size": (4, f"{SCRIPT}:27 (micro_batch_size_per_device_for_update)"),
    "generation_batch_size": (2048, f"{CONFIG}:9 (rollout_batch_size 256 prompts x n 8)"),
    "gradient_accumulation_steps": (32, f"{SCRIPT}:26 (global_batch_size 128 prompts on 8 GPUs)"),
    "shuffle_dataset": (True, f"{CONFIG}:13"),
    "num_train_epochs": (15, f"{CONFIG}:82 (total_epochs)"),
    "save_steps": (20, f"{CONFIG}:93 (save_freq 10 rollout steps = 20 optimiser steps)"),
    "save_total_limit": (None, f"{CONFIG}:94 (save_limit -1)"),
    "bf16": (True, f"{OFFICIAL}:EasyR1/verl/workers/fsdp_workers.py:251 (bf16 mixed precision)"),
    "dtype": ("float32", f"{OFFICIAL}:EasyR1/verl/workers/fsdp_workers.py:199 (fp32 actor weights)"),
    "gradient_checkpointing": (True, f"{CONFIG}:38"),
    "use_vllm": (True, f"{CONFIG}:54-63 (vLLM rollout)"),
    "vllm_mode": ("colocate", "EasyR1 rolls out on the training GPUs"),
    "vllm_tensor_parallel_size": (2, f"{CONFIG}:63"),
    "vllm_gpu_memory_utilization": (0.6, f"{CONFIG}:58"),
    "vllm_max_model_length": (8192, f"{CONFIG}:60"),
    "min_pixels": (262_144, f"{CONFIG}:16"),
    "max_pixels": (4_194_304, f"{CONFIG}:15"),
    "max_prompt_length": (OFFICIAL_MAX_PROMPT_LENGTH, f"{SCRIPT}:24"),
    "prompt_length_unit": ("characters", f"{DATASET_PY}:167-172 (len() of apply_chat_template's string)"),
}
# Values a TRL release could change without a word: each recipe states them itself (a default is not enough).
PINNED_IN_RECIPES = ("use_bias_correction_kl", "vllm_importance_sampling_correction", "multi_objective_aggregation",
                     "top_k", "entropy_coef", "use_adaptive_entropy", "max_prompt_length", "prompt_length_unit")
PER_RECIPE = {
    "critic-r1": {"model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct", "learning_rate": 1e-6},
    # LLaVA-VL/LLaVA-NeXT@20530d1 llava-critic-r1/EasyR1/examples/thinklite_vl_7b_llava_critic_grpo.sh:14 sets
    # worker.actor.optim.lr=5.0e-7; the fork's own copy of that script leaves config.yaml's 1e-6
    "critic-r1-plus": {"model_name_or_path": "russwang/ThinkLite-VL-7B", "learning_rate": 5e-7},
}


def test_both_published_recipes_ship():
    assert set(recipes()) == set(PER_RECIPE)


@pytest.mark.parametrize("name", sorted(PER_RECIPE))
def test_recipe_effective_config_equals_the_official_one(name):
    """Each value after TRL's defaults and __post_init__: a TRL release that changes a default the
    recipe leaves unset fails here."""
    # --use_cpu only lets bf16 validate on this GPU-less machine; it changes no method value.
    script, training, model = parse_recipe(name, ["--use_cpu"])
    expected = {key: value for key, (value, _) in FIDELITY.items()} | PER_RECIPE[name]
    for key, value in expected.items():
        holder = next(args for args in (training, model, script) if hasattr(args, key))
        actual = getattr(holder, key)
        assert getattr(actual, "value", actual) == value, f"{key}: {actual!r}, official {value!r} ({FIDELITY.get(key)})"
    assert training.vllm_max_model_length >= script.max_prompt_length + training.max_completion_length
    # 256 prompts per rollout and 128 per optimiser step on the published 8 GPUs: 2 optimiser steps per rollout
    assert training.generation_batch_size // training.num_generations == 256
    assert training.per_device_train_batch_size * 8 * training.gradient_accumulation_steps // 8 == 128
    assert training.output_dir == f"out/{name}"


@pytest.mark.parametrize("name", sorted(PER_RECIPE))
def test_recipe_states_what_a_trl_release_could_change(name):
    stated = yaml.safe_load(recipes()[name].read_text())
    assert set(PINNED_IN_RECIPES) <= set(stated), set(PINNED_IN_RECIPES) - set(stated)


@pytest.mark.slow
@pytest.mark.parametrize("path", [*sorted(RECIPES_DIR.glob("*.yaml")), RECIPES_DIR.parent / "rewards.py",
                                  Path(__file__)], ids=lambda p: p.name)
def test_sources_are_cited_by_public_paths_not_by_notes_outside_the_repository(path):
    """A citation of a document that is not in the repository cannot be checked by a reader."""
    root = RECIPES_DIR.parents[1]
    in_repository = {p.name for p in root.rglob("*.md") if ".venv" not in p.parts}
    cited = set(re.findall(r"\b[\w-]+\.md\b", path.read_text()))
    assert cited <= in_repository, cited - in_repository


def test_what_trl_hard_codes_is_pinned_and_its_distance_to_easyr1_bounded():
    """Two values of the official loss cannot be set in TRL 1.16; these checks fail when a TRL release
    changes them, and bound what they change. The advantage: EasyR1 divides by (group std + 1e-6)
    (core_algos.py:139,172), TRL by (std + 1e-4), both with the unbiased std. With rewards in
    {0, 0.1, 0.9, 1} and groups of 8 the smallest non-zero std is 0.0354, so TRL's advantages are at most
    0.28% smaller. The k3 KL: EasyR1 clamps it to [-10, 10] (core_algos.py:420-423); TRL does not. k3 >= 0,
    so only +10 binds, in both directions of log(ref/policy): above 2.6109 (the reference 13.6 times
    as likely as the policy) and below -11.0000 (60,000 times less likely)."""
    import inspect
    import itertools

    import torch
    from trl import GRPOTrainer
    from trl.trainer.utils import nanstd

    source = " ".join(inspect.getsource(GRPOTrainer._generate_and_score_completions).split())
    assert "advantages = advantages / (std_rewards + 1e-4)" in source
    assert "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)" in source
    group = torch.tensor([1.0] * 7 + [0.9])
    assert torch.isclose(nanstd(group), group.std())  # unbiased, as EasyR1's torch.std
    stds = {round(torch.tensor(rewards).std().item(), 6)
            for rewards in itertools.combinations_with_replacement([0.0, 0.1, 0.9, 1.0], 8)} - {0.0}
    smallest = min(stds)
    assert 0.0353 < smallest < 0.0354
    assert 0.0027 < 1 - (smallest + 1e-6) / (smallest + 1e-4) < 0.0028

    loss = " ".join(inspect.getsource(GRPOTrainer._compute_loss).split())
    k3 = "torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1"
    assert k3 in loss and "per_token_kl = torch.clamp" not in loss and "per_token_kl.clamp" not in loss
    log_ratio = torch.linspace(-14, 4, 180_001, dtype=torch.float64)  # log(ref / policy)
    trl = torch.exp(log_ratio) - log_ratio - 1
    easyr1 = torch.clamp(trl, min=-10, max=10)
    differs = log_ratio[trl != easyr1]
    assert differs[differs > 0].min() == pytest.approx(2.6109, abs=1e-4)
    assert differs[differs < 0].max() == pytest.approx(-11.0, abs=1e-4)
    assert bool((trl >= 0).all())  # the lower clamp never binds


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    return "\n".join(header)


def _commands(header: str) -> list[list[str]]:
    """Launch commands in a header: lines after a blank-free run joined on trailing backslashes."""
    joined = re.sub(r"\\\n\s*", " ", header).replace("$NODE_RANK", "0").replace("$MAIN_IP", "10.0.0.1")
    return [shlex.split(line) for line in joined.splitlines()
            if line.startswith(("critic-data ", "accelerate ", "CUDA_VISIBLE_DEVICES"))]


@pytest.mark.parametrize("name", sorted(PER_RECIPE))
def test_recipe_opens_with_launch_commands_that_parse(name):
    from accelerate.commands.launch import launch_command_parser

    path = recipes()[name]
    header = _header(path)
    assert header, f"{path.name} must open with a comment giving the launch commands"
    commands = _commands(header)
    launches = [c for c in commands if "accelerate" in c or c[0] == "critic-data"]
    assert any("--num_machines" in c for c in launches), "a multi-node command"
    assert any("--config_file" in c and "--num_processes" not in c for c in launches), "an 8-GPU command"
    assert "One GPU" in header and "vllm serve" in header
    for command in launches:
        env = [c for c in command if re.fullmatch(r"[A-Z_]+=\S*", c)]
        command = command[len(env):]
        if command[0] == "accelerate":
            launch = launch_command_parser().parse_args(command[2:])  # validates accelerate's flags
            assert Path(launch.config_file).is_file(), launch.config_file
            assert launch.module and launch.training_script == "critic_data.cli"
            config = yaml.safe_load(Path(launch.config_file).read_text())
            processes = launch.num_processes or config["num_processes"]
            train_args = launch.training_script_args
        else:
            processes, train_args = 1, command[1:]
        assert train_args[:3] == ["train", "--recipe", name]
        overrides = [("/data/built" if a == "DATASET" else a) for a in train_args[3:]] + ["--use_cpu"]
        script, training, _ = parse_recipe(name, overrides)  # every override is a real flag with a valid value
        # each GPU layout keeps the published 128 prompts per optimiser step
        completions = training.per_device_train_batch_size * processes * training.gradient_accumulation_steps
        if training.use_vllm:
            assert completions // training.num_generations == 128, " ".join(command)
            assert training.generation_batch_size % (training.per_device_train_batch_size * processes) == 0


@pytest.mark.parametrize("name", sorted(PER_RECIPE))
def test_trl_grpo_reads_every_recipe_key_but_critic_datas_own(name):
    """What the README says about `trl grpo --config`: TRL's own parser knows every key but three."""
    from trl.scripts.grpo import make_parser

    *_, config_remaining, _ = make_parser().parse_args_and_config(
        ["--config", str(recipes()[name]), "--use_cpu"], return_remaining_strings=True,
        separate_remaining_strings=True)
    assert set(config_remaining[::2]) == {f"--{key}" for key in CRITIC_DATA_KEYS}


@pytest.mark.parametrize("path", sorted(ACCELERATE_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_validates(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(path)  # rejects unknown top-level keys
    assert config.distributed_type.value in {"DEEPSPEED", "FSDP"}
    assert config.mixed_precision == "bf16" and config.num_machines == 1
    flags = {action.dest for action in launch_command_parser()._actions}
    nested = config.deepspeed_config or config.fsdp_config
    assert nested and set(nested) <= flags, set(nested) - flags  # nested keys are accelerate launch flags
    if config.distributed_type.value == "DEEPSPEED":
        assert nested["zero_stage"] == 3 and nested["zero3_save_16bit_model"]  # HF-format weights in checkpoints
    else:
        assert nested["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert "accelerate launch --config_file rl/recipes/accelerate/" + path.name in _header(path)


def test_every_accelerate_config_is_used_by_a_recipe():
    mentioned = set(re.findall(r"rl/recipes/accelerate/([\w-]+\.yaml)",
                               " ".join(path.read_text() for path in recipes().values())))
    assert mentioned == {path.name for path in ACCELERATE_DIR.glob("*.yaml")}


# --- train: a recipe whose values make no sense is one line -------------------------------------------

CPU = ["--use_cpu", "--bf16", "false", "--use_vllm", "false"]


@pytest.mark.parametrize("text, message", [
    ("- learning_rate\n- 1e-6\n", "must be a YAML mapping of option names to values"),
    ("{1: 2}\n", "must be a YAML mapping of option names to values"),
    ("max_prompt_length: null\n", "max_prompt_length: None is not int"),
    ("min_pixels: null\n", "min_pixels: None is not int"),
    ("max_prompt_length: 1.5\n", "max_prompt_length: 1.5 is not int"),
    ("learning_rate: [1]\n", "learning_rate: [1] is not float"),
    ("output_dir: 3\n", "output_dir: 3 is not str | None"),
    ("reward_funcs: preference\n", "reward_funcs: 'preference' is not list[str]"),
    ("reward_weights: 0.5\n", "reward_weights: 0.5 is not list[float] | None"),
    ("learning_rate: -1.0e-6\n", "--learning_rate -1e-06 must be a number, 0 or more"),
    ("learning_rate: .nan\n", "--learning_rate nan must be a number, 0 or more"),
    ("num_train_epochs: .inf\n", "--num_train_epochs inf must be a finite number"),
    ("temperature: -1.0\n", "--temperature -1.0 must be above 0"),
    ("temperature: 0.0\n", "--temperature 0.0 must be above 0"),
    ("top_p: 1.5\n", "--top_p 1.5 must be above 0 and at most 1"),
    ("top_k: -3\n", "--top_k -3 must be 0 (no top-k filtering) or a number of tokens"),
    ("top_k: -1\n", "--top_k -1 must be 0 (no top-k filtering)"),  # vLLM's "off"; transformers' sampler refuses it
    ("prompt_length_unit: words\n", "prompt_length_unit must be one of characters, tokens, got 'words'"),
    ("beta: -0.01\n", "--beta -0.01 must be a number, 0 or more"),
    ("beta: .nan\n", "--beta nan must be a number, 0 or more"),
    ("epsilon_high: -0.3\n", "--epsilon_high -0.3 must be a number, 0 or more"),
    ("delta: 0.5\n", "--delta 0.5 must be above 1"),
    ("max_completion_length: 0\n", "--max_completion_length 0 must be at least 1"),
    ("max_steps: -2\n", "--max_steps -2 must be -1 (train --num_train_epochs) or at least 1"),
    ("save_steps: 0\n", "--save_steps 0 must be above 0"),
    ("gradient_accumulation_steps: 0\n", "--gradient_accumulation_steps 0 must be at least 1"),
    ("reward_weights: [0.9, .inf]\n", "--reward_weights [0.9, inf] must be finite numbers"),
    ("per_device_train_batch_size: 0\n", "--per_device_train_batch_size 0 must be at least 1"),
    ("generation_batch_size: 8\nper_device_train_batch_size: 0\n", "a batch size, step count or generation count is 0"),
])
def test_a_recipe_value_of_the_wrong_type_or_out_of_range_is_one_line(tmp_path, text, message):
    """Before the fix the first six ended in a TypeError traceback (TRL's parser takes YAML values as
    they are), `reward_funcs: preference` asked for rewards named 'p', 'r', ...; the range checks
    trained (a batch size of 0: a ZeroDivisionError traceback)."""

    recipe = tmp_path / "mine.yaml"
    recipe.write_text(text)
    with pytest.raises(UserError) as refused:
        parse_recipe(str(recipe), CPU)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_recipe_may_write_numbers_as_strings_and_a_shipped_recipe_parses(tmp_path):

    recipe = tmp_path / "mine.yaml"
    # YAML reads 1e-6 as text
    recipe.write_text("learning_rate: 1e-6\nmax_prompt_length: '100'\nreward_funcs: [preference]\n")
    script_args, training_args, _ = parse_recipe(str(recipe), CPU)
    assert (training_args.learning_rate, script_args.max_prompt_length, script_args.reward_funcs) == (1e-6, 100,
                                                                                                      ["preference"])
    _, shipped, _ = parse_recipe(str(RECIPES_DIR / "critic-r1.yaml"), CPU)
    assert shipped.learning_rate == 1e-6


def test_a_dataset_whose_train_split_has_no_rows_is_one_line(monkeypatch, capsys, tmp_path):
    """datasets cannot read a parquet file of no rows (pyarrow: "BatchSize must be greater than 0"):
    before the fix a DatasetGenerationError traceback, exit 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.rl.test_train import _cli_error

    data = tmp_path / "dataset" / "data"
    data.mkdir(parents=True)
    schema = pa.schema([("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                        ("images", pa.list_(pa.binary())), ("answer", pa.string())])
    pq.write_table(schema.empty_table(), data / "train-00000-of-00001.parquet")
    line = _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *CPU, "--model_name_or_path", str(tmp_path / "m"),
                      "--dataset_name", str(data.parent))
    assert line.startswith(f"error: cannot load dataset {data.parent}: ") and "BatchSize" in line
