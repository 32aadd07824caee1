"""`critic-data train` end to end on CPU: a tiny Qwen2.5-VL built offline, a dataset built by
`critic-data build`, two real GRPO steps with the critic-r1 recipe, a checkpoint and a model card,
then two more steps resumed from that checkpoint. Plus the prompt filter (the official character rule
and the token rule), what a saved folder publishes, and user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from critic_data import UserError
from critic_data.rl.rewards import completion_text

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("critic-data")
# The recipe as published, scaled down to CPU: no vLLM, no bf16, groups of 4, short completions.
CPU = ["--use_cpu", "--bf16", "false", "--use_vllm", "false", "--num_generations", "4",
       "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--generation_batch_size", "4",
       "--max_completion_length", "24", "--save_steps", "2", "--report_to", "none",
       "--reward_funcs", "preference", "format", "tests.rl.test_train.spread_reward", "--reward_weights", "0.9", "0.1",
       "1"]


def spread_reward(completions, **_) -> list[float]:
    """Test-only: a random tiny model never writes \\boxed{}, so the real rewards are all 0 and GRPO's
    advantages would vanish; this one varies within a group so the update is not zero."""
    return [len(set(completion_text(c))) / 20 for c in completions]


def true_prompt_lengths(dataset, processor) -> list[int]:
    """Prompt lengths the slow, obvious way: the processor tokenises each prompt with its decoded images."""
    lengths = []
    for row in dataset:
        images = iter(row["images"])
        messages = [{**message, "content": [{**part, "image": next(images)} if part["type"] == "image" else part
                                            for part in message["content"]]} for message in row["prompt"]]
        tokens = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        lengths.append(len(tokens["input_ids"][0]))
    return lengths


def official_prompt_lengths(dataset, processor) -> list[int]:
    """The official filter's measure, as EasyR1's `_filter_overlong_prompts` takes it: len() of what the
    processor's chat template returns for the row's messages (a string: one placeholder per image)."""
    texts = [processor.apply_chat_template(row["prompt"], add_generation_prompt=True) for row in dataset]
    assert all(isinstance(text, str) for text in texts)
    return [len(text) for text in texts]


def _processor(model_dir, min_pixels=262_144, max_pixels=4_194_304):
    from trl import ModelConfig

    from critic_data.rl.train import CriticScriptArguments, load_processor

    return load_processor(ModelConfig(model_name_or_path=str(model_dir)),
                          CriticScriptArguments(min_pixels=min_pixels, max_pixels=max_pixels), False)


def _train(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([str(CLI), "train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def budget(tiny_qwen_dir, built_dataset) -> tuple[int, int]:
    """A prompt budget in characters (the recipes' unit) that drops the longest quarter of the train rows,
    and how many rows that is."""
    from datasets import load_dataset

    lengths = sorted(official_prompt_lengths(load_dataset(str(built_dataset))["train"], _processor(tiny_qwen_dir)))
    limit = lengths[len(lengths) * 3 // 4]
    return limit, sum(n > limit for n in lengths)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_qwen_dir, built_dataset, budget):
    """Two steps of `critic-data train --recipe critic-r1`, then two more resumed from checkpoint-2."""
    out = tmp_path_factory.mktemp("train") / "critic"
    common = ["--recipe", "critic-r1", "--model_name_or_path", str(tiny_qwen_dir), "--dataset_name",
              str(built_dataset), "--output_dir", str(out), "--max_prompt_length", str(budget[0]), *CPU]
    first = _train([*common, "--max_steps", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    state_after_two = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    card_after_two = (out / "checkpoint-2" / "README.md").read_text()
    second = _train([*common, "--max_steps", "4", "--resume_from_checkpoint", str(out / "checkpoint-2")])
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "first": first, "second": second, "state_after_two": state_after_two,
            "card_after_two": card_after_two}


@pytest.mark.slow
def test_two_grpo_steps_change_the_weights(run, tiny_qwen_dir):
    from safetensors.torch import load_file

    before = load_file(tiny_qwen_dir / "model.safetensors")
    after = load_file(run["out"] / "checkpoint-2" / "model.safetensors")
    assert set(before) == set(after)
    changed = {name for name in before if not before[name].equal(after[name])}
    assert any(name.startswith("model.language_model") or "lm_head" in name for name in changed)
    assert any("visual" in name for name in changed), "the vision tower is trained too"


def test_reward_metrics_are_logged(run):
    history = run["state_after_two"]["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    for entry in steps:
        for reward in ("preference_reward", "format_reward", "spread_reward"):
            assert f"rewards/{reward}/mean" in entry and f"rewards/{reward}/std" in entry
        assert 0.0 <= entry["rewards/preference_reward/mean"] <= 1.0
        assert "kl" in entry  # beta = 0.01: the KL term against the base model is computed
    assert any(entry["reward_std"] > 0 for entry in steps)


def test_checkpoint_holds_hf_weights_processor_and_card(run):
    from huggingface_hub import ModelCard

    checkpoint = run["out"] / "checkpoint-2"
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "optimizer.pt"):
        assert (checkpoint / name).is_file(), name
    card = ModelCard.load(checkpoint / "README.md")
    assert "critic" in card.data.tags and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model is None  # a local base model is not a Hub id: prose only
    assert "weights after **2** optimiser steps" in run["card_after_two"]


def test_saved_folders_keep_the_base_processor_and_the_card_names_the_training_bounds(run, tiny_qwen_dir):
    """Before the fix every checkpoint kept the training processor (min 512x512 pixels), so a server of
    it upscaled small images; the official checkpoints keep the base model's processor."""
    from transformers import AutoProcessor

    def bounds(folder):
        size = AutoProcessor.from_pretrained(folder).image_processor.size
        return size["shortest_edge"], size["longest_edge"]

    assert bounds(tiny_qwen_dir) == (56 * 56, 56 * 56)
    for folder in (run["out"], run["out"] / "checkpoint-2", run["out"] / "checkpoint-4"):
        assert bounds(folder) == bounds(tiny_qwen_dir), folder
        card = (folder / "README.md").read_text()
        assert "every image was resized to between 262144 and 4194304\npixels" in card
        assert "\"min_pixels\": 262144, \"max_pixels\": 4194304" in card and "(3136 to 3136 pixels)" in card


def test_nothing_push_would_publish_names_a_local_path(run, tiny_qwen_dir, built_dataset, tmp_path_factory):
    """Before the fix the card held the dataset's, the base model's and the recipe's absolute paths, and
    the command line; training_args.bin held the output folder's."""
    from critic_data.hub import plan_push

    private = {str(tmp_path_factory.getbasetemp()), str(built_dataset.resolve()), str(tiny_qwen_dir.resolve()),
               str(ROOT), str(Path.home())}
    for folder in (run["out"], run["out"] / "checkpoint-2"):
        published = plan_push(folder, "someone/critic").files
        assert {"README.md", "training_args.bin", "config.json", "processor_config.json"} <= set(published)
        for name, path in published.items():
            content = path.read_bytes()
            assert not [p for p in private if p.encode() in content], (folder, name)


def test_model_card_records_the_run(run, tiny_qwen_dir, built_dataset, budget):
    text = (run["out"] / "README.md").read_text()
    assert f"| base model | `{tiny_qwen_dir.name}` (a local folder) |" in text
    assert f"| dataset | `{built_dataset.name}` (a local folder) |" in text
    assert "dataset fingerprint | `" in text and "base model fingerprint | `" in text
    assert f"{budget[1]} dropped (prompt longer than {budget[0]} characters)" in text
    assert "Recipe: `critic-r1`, shipped with critic-data" in text
    assert "`preference` × 0.9" in text and "`format` × 0.1" in text
    assert "| `learning_rate` | `1e-06` |" in text and "| `loss_type` | `bnpo` |" in text
    assert "| `lr_scheduler_type` | `constant` |" in text
    assert (f"critic-data train --recipe critic-r1 --model_name_or_path {tiny_qwen_dir.name} --dataset_name "
            f"{built_dataset.name} --output_dir critic ") in text and "--max_steps 4" in text
    assert "@article{wang2025llavacriticr1" in text
    assert "weights after **4** optimiser steps of 4" in text


def test_prompt_budget_drop_is_logged(run, budget):
    import re

    assert re.search(rf"train: dropped {budget[1]} of \d+ rows whose prompt exceeds {budget[0]} characters ",
                     run["first"].stderr)
    assert budget[1] > 0


def test_resume_continues_from_the_checkpoint(run):
    out = run["out"]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3, 4]
    # steps 1-2 come from checkpoint-2's state verbatim (timings included): they were not run again
    before = [entry for entry in run["state_after_two"]["log_history"] if "loss" in entry]
    assert steps[:2] == before
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert "trained 4 steps" in run["second"].stderr


@pytest.mark.slow
def test_a_new_run_into_a_trained_folder_is_refused_and_leaves_it_as_it_was(run, tiny_qwen_dir, built_dataset,
                                                                            monkeypatch, capsys):
    """Before the fix a new run wrote its checkpoints and final weights over the trained ones. (In this
    process: a refusal in a process of its own, one line and nothing else, is what the no-network
    tests below check.)"""
    out = run["out"]
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    line = _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", "--model_name_or_path", str(tiny_qwen_dir),
                      "--dataset_name", str(built_dataset), "--output_dir", str(out), *CPU, "--max_steps", "2")
    assert line.startswith(f"error: --output_dir {out} already holds"), line
    assert f"--resume_from_checkpoint {out}/checkpoint-4, " in line  # the last one, by step
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before


@pytest.mark.slow
def test_a_resume_into_a_folder_that_is_not_its_run_folder_is_refused_and_leaves_it_as_it_was(
        run, tiny_qwen_dir, built_dataset, tmp_path, monkeypatch, capsys):
    """Before the fix a resume skipped the folder check and wrote checkpoints, weights and a model card
    over whatever --output_dir held (a dataset's README here)."""
    other = tmp_path / "my-dataset"
    (other / "data").mkdir(parents=True)
    (other / "README.md").write_text("---\nlicense: mit\n---\n# my dataset\n")
    (other / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 rows PAR1")
    before = {path: path.read_bytes() for path in other.rglob("*") if path.is_file()}
    checkpoint = run["out"] / "checkpoint-2"
    line = _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", "--model_name_or_path", str(tiny_qwen_dir),
                      "--dataset_name", str(built_dataset), "--output_dir", str(other), *CPU, "--max_steps", "4",
                      "--resume_from_checkpoint", str(checkpoint))
    assert line.startswith(f"error: --output_dir {other} already holds README.md, data"), line
    assert f"continue in {run['out']} or in a new, empty folder" in line
    assert {path: path.read_bytes() for path in other.rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in other.iterdir()) == ["README.md", "data"]


def test_resume_loads_the_checkpoint_weights_not_the_base_ones(run, tiny_qwen_dir):
    """transformers' own resume matches no key of a Qwen2.5-VL checkpoint (saved as `visual.*`, held as
    `model.visual.*`) and trains on from the base weights (huggingface/transformers#43701);
    critic-data's trainer loads every tensor of the checkpoint."""
    from types import SimpleNamespace

    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from critic_data.rl.train import CriticGRPOTrainer

    checkpoint = run["out"] / "checkpoint-2"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen_dir)
    trainer = SimpleNamespace(is_deepspeed_enabled=False, is_fsdp_enabled=False, model=model)
    CriticGRPOTrainer._load_from_checkpoint(trainer, str(checkpoint))
    expected = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint).state_dict()
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen_dir).state_dict()
    loaded = model.state_dict()
    assert all(loaded[name].equal(expected[name]) for name in expected)
    assert not all(loaded[name].equal(base[name]) for name in base)
    # the saved names differ from the in-memory ones: a plain load_state_dict would match only lm_head
    assert set(load_file(checkpoint / "model.safetensors")) & set(loaded) == {"lm_head.weight"}
    assert "missing keys" not in run["second"].stderr  # transformers' warning when the resume loads nothing


@pytest.mark.slow
def test_trl_grpo_runs_a_shipped_recipe_only_with_the_readme_edits(tmp_path, tiny_qwen_dir, built_dataset, capsys,
                                                                   monkeypatch):
    """README: `trl grpo --config <recipe>` fails on critic-data's own keys; with them removed and the
    rewards named by import path, TRL's own CLI trains on a built dataset. (The refusal is the parsing
    of TRL's CLI, run here in this process: were the recipe accepted, the launch would fail the test,
    not start a training process.)"""
    import re

    import trl.cli.accelerate_launcher as launcher
    from trl.cli import main as trl_main

    real_launch = launcher.launch_training_script

    def never_launch(*args, **kwargs):
        def launched(_):
            raise AssertionError("trl grpo accepted the unedited recipe and would have launched training")

        return real_launch(*args, **kwargs, launch_command_fn=launched)

    monkeypatch.setattr(launcher, "launch_training_script", never_launch)

    trl = Path(sys.executable).with_name("trl")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    tiny = ["--model_name_or_path", str(tiny_qwen_dir), "--dataset_name", str(built_dataset), "--use_cpu",
            "--bf16", "false", "--use_vllm", "false", "--max_steps", "1", "--num_generations", "4",
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--generation_batch_size", "4",
            "--max_completion_length", "8", "--save_strategy", "no", "--report_to", "none"]
    recipe = ROOT / "rl" / "recipes" / "critic-r1.yaml"
    with pytest.raises(SystemExit) as refused:
        trl_main(["grpo", "--config", str(recipe), *tiny, "--output_dir", str(tmp_path / "a")])
    assert refused.value.code == 2 and "unrecognized arguments: --min_pixels" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    monkeypatch.undo()
    edited = re.sub(r"^(min_pixels|max_pixels|max_prompt_length|prompt_length_unit):.*\n", "", recipe.read_text(),
                    flags=re.M)
    edited = edited.replace("reward_funcs: [preference, format]",
                            "reward_funcs: [critic_data.rl.rewards.preference_reward, "
                            "critic_data.rl.rewards.format_reward]")
    assert edited.count("critic_data.rl.rewards.") == 2 and "\nmax_pixels:" not in edited
    (tmp_path / "recipe.yaml").write_text(edited)
    trained = subprocess.run([str(trl), "grpo", "--config", str(tmp_path / "recipe.yaml"), *tiny,
                              "--output_dir", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                             timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "b" / "model.safetensors").is_file()


@pytest.mark.slow
def test_prompt_lengths_match_the_processor(tiny_qwen_dir, built_dataset):
    """The budget check counts exactly what the trainer's processor produces, under several pixel bounds."""
    from datasets import load_dataset

    from critic_data.rl.train import prompt_lengths

    dataset = load_dataset(str(built_dataset))["train"]
    for bounds in ((262_144, 4_194_304), (3136, 3136), (3136, 20_000)):
        processor = _processor(tiny_qwen_dir, *bounds)
        assert prompt_lengths(dataset, processor) == true_prompt_lengths(dataset, processor)


@pytest.mark.slow
def test_images_are_fitted_to_the_pixel_bounds(tiny_qwen_dir, built_dataset):
    """Fitted images are a fixed point of the processor: vLLM, whose processor keeps the model's own
    bounds, then sees the same pixels and emits as many image tokens as the trainer."""
    from datasets import load_dataset

    from critic_data.rl.train import sized_images

    dataset = load_dataset(str(built_dataset))["train"].select(range(4))
    processor = _processor(tiny_qwen_dir)
    default = _processor(tiny_qwen_dir, 56 * 56, 10**8)  # a processor with other bounds, as vLLM's may be
    for original, fitted in zip(dataset, sized_images(dataset, processor), strict=True):
        image, resized = original["images"][0], fitted["images"][0]
        assert 262_144 <= resized.width * resized.height <= 4_194_304 and resized.width % 28 == resized.height % 28 == 0
        grid = processor.image_processor(images=[image])["image_grid_thw"]
        assert processor.image_processor(images=[resized])["image_grid_thw"].equal(grid)
        assert default.image_processor(images=[resized])["image_grid_thw"].equal(grid)
        assert fitted["answer"] == original["answer"] and fitted["prompt"] == original["prompt"]


@pytest.mark.slow
def test_the_character_and_the_token_rules_each_keep_rows_the_other_drops(tiny_qwen_dir, built_dataset):
    """The official filter counts the template string's characters (one placeholder per image); the token
    rule counts text tokens + each image's tokens. A large image with a short prompt passes the first and
    not the second; a long prompt of common words with a small image the reverse."""
    from datasets import Dataset, Features, Image, List, load_dataset
    from PIL import Image as PILImage

    from critic_data.rl.train import prompt_lengths, within_budget

    rows = load_dataset(str(built_dataset))["train"].select(range(3))
    long_text = " ".join(["The image shows a red bicycle, two cats on a sofa, a bowl of fruit."] * 40)
    prompts = [rows[0]["prompt"], _with_text(rows[1]["prompt"], long_text), rows[2]["prompt"]]
    images = [[PILImage.new("RGB", (1800, 1800), "red")], [PILImage.new("RGB", (64, 48))], rows[2]["images"]]
    features = Features({"id": rows.features["id"], "prompt": rows.features["prompt"], "images": List(Image())})
    dataset = Dataset.from_dict({"id": rows["id"], "prompt": prompts, "images": images}, features=features)
    processor = _processor(tiny_qwen_dir)
    characters, tokens = official_prompt_lengths(dataset, processor), true_prompt_lengths(dataset, processor)
    assert prompt_lengths(dataset, processor, unit="characters") == characters
    assert prompt_lengths(dataset, processor, unit="tokens") == tokens
    budget = 2000
    assert characters[0] < budget < tokens[0] and tokens[1] < budget < characters[1]  # they disagree both ways
    assert characters[2] < budget and tokens[2] < budget
    for unit, kept_ids in (("characters", [rows[0]["id"], rows[2]["id"]]), ("tokens", [rows[1]["id"], rows[2]["id"]])):
        kept, dropped = within_budget(dataset, processor, budget, "train", None, log=False, unit=unit)
        assert (kept["id"], dropped) == (kept_ids, 1), unit


def _with_text(prompt: list[dict], text: str) -> list[dict]:
    return [{**message, "content": [{**part, "text": text} if part["type"] == "text" else part
                                    for part in message["content"]]} for message in prompt]


def test_budget_drops_long_prompts_and_images_the_processor_cannot_take(tiny_qwen_dir, built_dataset):
    from datasets import Dataset, Features, Image, List, load_dataset
    from PIL import Image as PILImage

    from critic_data.rl.train import prompt_lengths, within_budget

    rows = load_dataset(str(built_dataset))["train"].select(range(3))
    sliver = PILImage.new("RGB", (1000, 4))  # aspect ratio 250: Qwen2-VL's resize refuses it
    images = [[rows[0]["images"][0]], [sliver], [rows[2]["images"][0]]]
    features = Features({"id": rows.features["id"], "prompt": rows.features["prompt"], "images": List(Image())})
    dataset = Dataset.from_dict({"id": rows["id"], "prompt": rows["prompt"], "images": images}, features=features)
    processor = _processor(tiny_qwen_dir)
    lengths = prompt_lengths(dataset, processor)
    assert lengths[1] is None and lengths[0] and lengths[2]
    kept, dropped = within_budget(dataset, processor, max(lengths[0], lengths[2]) - 1, "train", None, log=False)
    assert dropped == 2 and len(kept) == 1
    assert kept[0]["id"] == rows[0 if lengths[0] < lengths[2] else 2]["id"]


def _cli_error(monkeypatch, capsys, *args) -> str:
    from critic_data.cli import main

    monkeypatch.setattr(sys, "argv", ["critic-data", "train", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.slow
def test_user_errors_are_one_line(monkeypatch, capsys, tmp_path, tiny_qwen_dir, built_dataset):
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = ["--model_name_or_path", str(tiny_qwen_dir), "--use_cpu", "--bf16", "false", "--use_vllm", "false"]
    data = ["--dataset_name", str(built_dataset)]
    assert "unknown recipe 'critic-r2'" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r2")
    assert "no dataset folder at" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base,
                                                "--dataset_name", str(tmp_path / "missing"))
    assert "no dataset: pass --dataset_name" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base)
    assert "invalid float value: 'fast'" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base, *data,
                                                       "--learning_rate", "fast")
    assert "['--learning_rat', '1e-5']" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base, *data,
                                                      "--learning_rat", "1e-5")
    assert "use_cpu" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *data)  # bf16 on a CPU machine
    assert "--reward_weights has 3 values for 2" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base,
                                                               *data, "--reward_weights", "1", "1", "1")
    assert "unknown reward 'accuracy'" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base, *data,
                                                     "--reward_funcs", "accuracy", "format")
    assert "no such checkpoint folder" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base, *data,
                                                     "--resume_from_checkpoint", str(tmp_path / "checkpoint-9"))
    assert "cannot load model" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *data, "--use_cpu",
                                             "--bf16", "false", "--model_name_or_path", str(tmp_path))
    assert "need 0 < min_pixels <= max_pixels" in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base,
                                                             *data, "--min_pixels", "9", "--max_pixels", "4")
    plain = tmp_path / "plain" / "data"
    plain.mkdir(parents=True)
    pq.write_table(pa.table({"prompt": ["hi"], "completion": ["yo"]}), plain / "train-00000-of-00001.parquet")
    assert "not a critic-data dataset: no column images, answer" in _cli_error(
        monkeypatch, capsys, "--recipe", "critic-r1", *base, "--dataset_name", str(plain.parent))
    short = ["--max_completion_length", "24"]  # the recipe's 2048 fill the tiny model's whole context
    assert "train rows are fewer than the 256 prompts of one rollout" in _cli_error(
        monkeypatch, capsys, "--recipe", "critic-r1", *base, *data, *short)
    assert "no train row fits --max_prompt_length 10 (characters)" in _cli_error(
        monkeypatch, capsys, "--recipe", "critic-r1", *base, *data, *short, "--max_prompt_length", "10")
    for too_long in ("999999999999", "2048"):  # the tiny model's context: 2048 positions
        assert (f"--max_completion_length {too_long} must be below the 2048 positions of {tiny_qwen_dir}'s context"
                in _cli_error(monkeypatch, capsys, "--recipe", "critic-r1", *base, *data, "--max_completion_length",
                              too_long))


@pytest.mark.slow
def test_env_prints_the_versions_that_matter():
    result = subprocess.run([str(CLI), "env"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    import torch
    import trl

    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert fields["torch"].strip() == torch.__version__ and fields["trl"].strip() == trl.__version__
    for name in ("python", "CUDA", "transformers", "accelerate", "vllm", "deepspeed"):
        assert fields[name].strip(), name


@pytest.mark.slow
@pytest.mark.parametrize("hub", ["closed port", "silent server"])
@pytest.mark.parametrize("what", ["model", "dataset"])
def test_without_a_network_a_hub_model_or_dataset_ends_in_one_line_within_seconds(what, hub, tmp_path, tiny_qwen_dir,
                                                                                  built_dataset):
    """A Hub id that is neither a folder here nor in the (empty) Hub cache, with a Hub that refuses
    connections or accepts them and never answers: one line that says how to get it, in seconds
    (huggingface_hub alone retried each of the processor's files for minutes, in 69 lines)."""
    import socket
    import time

    from tests.serve import free_port

    model, dataset = (("someone/critic-base", str(built_dataset)) if what == "model"
                      else (str(tiny_qwen_dir), "someone/critic-set"))
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HF_HUB_", "HF_HOME"))}
    with socket.socket() as silent:  # the kernel accepts its connections; nothing ever reads or answers them
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1] if hub == "silent server" else free_port()
        env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf-home"), HF_HUB_ETAG_TIMEOUT="3")
        started = time.monotonic()
        result = subprocess.run([str(CLI), "train", "--recipe", "critic-r1", "--model_name_or_path", model,
                                 "--dataset_name", dataset, "--output_dir", str(tmp_path / "out"), *CPU[:5]],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    named = "someone/critic-base" if what == "model" else "someone/critic-set"
    assert f"could not be asked for a {what} {named}" in result.stderr and "none is in the Hub cache" in result.stderr
    assert f"`hf download {named}" in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr
    assert elapsed < 25, elapsed
    assert not (tmp_path / "out").exists()


def test_the_resize_of_eval_and_train_is_the_processors_own():
    """rl/client.py's smart_resize (eval and best-of-n run without transformers; train fits images with
    it) gives transformers' Qwen2-VL sizes, the refusal of an aspect ratio over 200 included, over many
    image sizes, pixel bounds and patch factors."""
    import random

    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as transformers_resize

    from critic_data.rl.client import smart_resize

    def outcome(resize, *args, **kwargs):
        try:
            return resize(*args, **kwargs)
        except ValueError:
            return ValueError

    rng = random.Random(0)
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(1500)] + [
        (1, 1), (13, 15), (14, 14), (28, 5600), (28, 5601), (5601, 28), (1, 200), (1, 201), (9999, 10001)]
    bounds = [(56 * 56, 14 * 14 * 4 * 1280), (224 * 224, 1280 * 28 * 28), (3136, 3136), (56 * 56, 128 * 28 * 28),
              (262_144, 4_194_304)]
    refused = 0
    for factor in (28, 32):
        for low, high in bounds:
            for height, width in sizes:
                expected = outcome(transformers_resize, height, width, factor=factor, min_pixels=low, max_pixels=high)
                assert outcome(smart_resize, height, width, low, high, factor=factor) == expected, (height, width)
                refused += expected is ValueError
    assert refused >= 2 * len(bounds) * 3  # the ratio refusals were among the cases


# --- train: a new run never writes over another ---------------------------------------------------------

def test_an_output_dir_that_cannot_take_a_new_run_is_one_line(tmp_path):
    from critic_data.rl.train import check_output_dir

    check_output_dir(tmp_path / "new", None)  # a new folder, or an empty one, is fine
    check_output_dir(tmp_path, None)
    (tmp_path / "notes").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for out, says in [(tmp_path / "notes", "is a file"), (tmp_path / "link", "which does not exist"),
                      (tmp_path / "notes" / "run", f"{tmp_path / 'notes'} is a file, not a folder"),
                      (tmp_path, "already holds link, notes; a new run would write over it: choose another")]:
        with pytest.raises(UserError, match=says):
            check_output_dir(out, None)
    run = tmp_path / "run"
    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-x", "model.safetensors"):
        (run / name).mkdir(parents=True)
    with pytest.raises(UserError, match=f"continue it with --resume_from_checkpoint {run}/checkpoint-10, "):
        check_output_dir(run, None)
    check_output_dir(run, str(run / "checkpoint-10"))  # a resumed run continues in its folder


def test_a_resumed_run_writes_only_into_its_own_run_folder_or_a_new_one(tmp_path):
    """Before the fix a resume skipped the check: `--output_dir /` or a dataset folder got checkpoints,
    weights and a model card written over its README."""
    from critic_data.rl.train import check_output_dir

    run = tmp_path / "run"
    (run / "checkpoint-10").mkdir(parents=True)
    (run / "model.safetensors").write_text("weights")
    resume = str(run / "checkpoint-10")
    check_output_dir(run, resume)
    check_output_dir(tmp_path / "run" / ".." / "run", resume)  # the same folder, spelled otherwise
    check_output_dir(tmp_path / "elsewhere", resume)  # a new folder
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", resume)
    dataset = tmp_path / "dataset"
    (dataset / "data").mkdir(parents=True)
    (dataset / "README.md").write_text("my card")
    for out in (dataset, run / "checkpoint-10", tmp_path, Path("/")):
        if out == run / "checkpoint-10":
            (out / "optimizer.pt").write_text("state")
        with pytest.raises(UserError, match=f"is not the run folder of --resume_from_checkpoint {resume}: "
                                            f"continue in {run} or in a new, empty folder"):
            check_output_dir(out, resume)
