"""Every shipped recipe and accelerate launch config loads, validates and says how to launch it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from critic_data.rl.train import RECIPES_DIR, parse_recipe, recipes

ACCELERATE_DIR = RECIPES_DIR / "accelerate"
CRITIC_DATA_KEYS = {"min_pixels", "max_pixels", "max_prompt_length"}  # keys TRL 1.16 has no field for

# METHOD.md: the published settings, per recipe.
PUBLISHED = {
    "critic-r1": {"model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct", "learning_rate": 1e-6},
    "critic-r1-plus": {"model_name_or_path": "russwang/ThinkLite-VL-7B", "learning_rate": 5e-7},
}
COMMON = {
    "num_generations": 8, "temperature": 1.0, "top_p": 0.99, "beta": 0.01, "epsilon": 0.2, "epsilon_high": 0.3,
    "delta": 3.0, "loss_type": "bnpo", "max_completion_length": 2048, "weight_decay": 0.01, "max_grad_norm": 1.0,
    "warmup_steps": 0, "bf16": True, "gradient_checkpointing": True, "save_steps": 10, "use_vllm": True,
    "vllm_mode": "colocate", "vllm_tensor_parallel_size": 2, "vllm_gpu_memory_utilization": 0.6,
    "reward_weights": [0.9, 0.1], "num_iterations": 1,
}


def test_both_published_recipes_ship():
    assert set(recipes()) == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_has_the_published_settings(name):
    # --use_cpu only lets bf16 validate on this GPU-less machine; it changes no recipe value.
    script, training, model = parse_recipe(name, ["--use_cpu"])
    for key, expected in {**COMMON, **PUBLISHED[name]}.items():
        holder = next(args for args in (training, model, script) if hasattr(args, key))
        assert getattr(holder, key) == expected, key
    assert training.lr_scheduler_type.value == "constant"
    assert script.reward_funcs == ["preference", "format"]
    assert (script.min_pixels, script.max_pixels, script.max_prompt_length) == (262_144, 4_194_304, 6142)
    assert training.vllm_max_model_length >= script.max_prompt_length + training.max_completion_length
    assert model.dtype == "float32"  # fp32 master weights: a 1e-6 update is lost when added to bf16 weights
    # 256 prompts per rollout, 128 per optimiser step on the published 8 GPUs
    assert training.generation_batch_size // training.num_generations == 256
    assert training.per_device_train_batch_size * 8 * training.gradient_accumulation_steps // 8 == 128
    assert training.save_total_limit is None and training.output_dir == f"out/{name}"


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


@pytest.mark.parametrize("name", sorted(PUBLISHED))
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


@pytest.mark.parametrize("name", sorted(PUBLISHED))
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
