"""`critic-data eval`, `best-of-n` and `train` against a hostile user: an --out that cannot hold a
run, two runs into one folder, odd completions for the rewards, recipes with values that make no
sense. The bar: one line saying what is wrong and what to do, non-zero exit, no traceback,
nothing lost, no request sent when the run cannot be written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critic_data import UserError
from critic_data.rl.client import ResultLog
from critic_data.rl.rewards import format_reward, preference_reward
from tests.rl.test_client_hardening import MODEL, eval_args, judge_all_first, write_mmrlhf
from tests.serve import SECRET_KEY, Reply, completion, fake_server, run_cli
from tests.snapshots import jpeg


def chats(server) -> int:
    return sum(path.endswith("/chat/completions") for path, _ in server.requests)


def refused_in_one_line(done) -> str:
    """The one error line of a refused run (exit 2, no traceback, no key)."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and SECRET_KEY not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


# --- an --out that cannot hold a run is refused before any request ---------------------------------

def _a_file(out):
    out.write_text("my notes")


def _under_a_file(out):
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "notes").write_text("my notes")
    return out.parent / "notes" / "run"


def _a_dangling_link(out):
    out.symlink_to(out.parent / "nowhere")


def _folders_named_like_run_files(out):
    for name in ("results.jsonl", "run.json", "summary.json"):
        (out / name).mkdir(parents=True)


@pytest.mark.parametrize("make, says", [
    (_a_file, "is a file"),
    (_under_a_file, "is a file"),
    (_a_dangling_link, "is a link to"),
    (_folders_named_like_run_files, "is not a file"),
])
@pytest.mark.parametrize("resume", [False, True])
def test_an_out_that_cannot_hold_a_run_is_one_line_before_any_request(tmp_path, make, says, resume):
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    out = make(tmp_path / "run") or tmp_path / "run"
    with fake_server(judge_all_first) as server:
        done = run_cli(*eval_args(server.url, snapshot, out, *(["--resume"] if resume else [])))
    line = refused_in_one_line(done)
    assert says in line and "--out" in line
    assert chats(server) == 0  # before the fix: every request was sent, then the first write failed
    assert not (tmp_path / "nowhere").exists()


def test_a_new_run_into_the_folder_of_another_run_is_refused_and_keeps_it(tmp_path):
    """An eval run, then a best-of-n run into the same --out: before the fix the second overwrote the
    first's run.json and summary.json (and the eval could then no longer be resumed)."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])
    (tmp_path / "img.jpg").write_bytes(jpeg(2))
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "q0", "image": "img.jpg", "question": "Q?"}) + "\n")
    out = tmp_path / "run"
    with fake_server(judge_all_first) as server:
        assert run_cli(*eval_args(server.url, snapshot, out)).returncode == 0
        before = {name: (out / name).read_bytes() for name in ("results.jsonl", "run.json", "summary.json")}
        server.requests.clear()
        done = run_cli("best-of-n", "--base-url", server.url, "--model", MODEL, "--input", str(questions),
                       "--n", "2", "--out", str(out))
        line = refused_in_one_line(done)
        assert "holds another run" in line and "choose another --out" in line
        assert chats(server) == 0
        assert {name: (out / name).read_bytes() for name in before} == before
        assert not (out / "picks.jsonl").exists()
        resumed = run_cli(*eval_args(server.url, snapshot, out, "--resume"))  # the eval is still resumable
    assert resumed.returncode == 0, resumed.stderr


# --- two runs into one folder at once --------------------------------------------------------------

def test_two_runs_into_one_out_at_once_cannot_mix(tmp_path):
    path = tmp_path / "run" / "results.jsonl"
    first = ResultLog(path, resume=False, identity={"seed": 0}, valid=lambda record: True)
    second = ResultLog(path, resume=False, identity={"seed": 1}, valid=lambda record: True)  # both saw no file
    first.append({"id": "a"})
    with pytest.raises(UserError, match="another run is writing to .*; wait for it to end, or choose another --out"):
        second.append({"id": "b"})
    with pytest.raises(UserError, match="another run is writing to"):
        ResultLog(path, resume=True, identity={"seed": 0}, valid=lambda record: True)
    first.append({"id": "c"})
    first.close()
    assert path.read_text() == '{"id": "a"}\n{"id": "c"}\n'
    assert json.loads(path.with_name("run.json").read_text()) == {"seed": 0}
    resumed = ResultLog(path, resume=True, identity={"seed": 0}, valid=lambda record: True)  # the lock went with it
    assert [r["id"] for r in resumed.records] == ["a", "c"]
    resumed.close()


# --- rewards never raise on an odd completion --------------------------------------------------------

@pytest.mark.parametrize("parts", [
    [{"type": "text", "text": 3}],
    [{"type": "text", "text": ["\\boxed{1}"]}],
    [{"type": "text", "text": {"a": 1}}, {"type": "text", "text": "\\boxed{1}"}],
])
def test_content_parts_whose_text_is_not_text_never_raise(parts):
    completion = [{"role": "assistant", "content": parts}]
    assert format_reward([completion]) == [0.0]
    expected = 1.0 if any(p["text"] == "\\boxed{1}" for p in parts) else 0.0  # the text parts still count
    assert preference_reward([completion], answer=["1"]) == [expected]


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
    from critic_data.rl.train import parse_recipe

    recipe = tmp_path / "mine.yaml"
    recipe.write_text(text)
    with pytest.raises(UserError) as refused:
        parse_recipe(str(recipe), CPU)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_recipe_may_write_numbers_as_strings_and_a_shipped_recipe_parses(tmp_path):
    from critic_data.rl.train import RECIPES_DIR, parse_recipe

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


# --- eval: a disk that fills, a server that drops the connection mid-answer --------------------------------

def _file_size_limit(limit: int):
    """In the child: files may not grow past `limit` bytes (writes fail with EFBIG, as on a full disk)."""
    def apply():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_fills_while_results_are_written_is_one_line_and_resume_finishes(tmp_path):
    """Before the fix: an OSError traceback from the result log (and another from closing it)."""
    import os
    import subprocess
    import sys

    snapshot = write_mmrlhf(tmp_path / "in", [(f"Q{k}?", jpeg(k)) for k in range(8)])
    with fake_server(judge_all_first) as server:
        whole = run_cli(*eval_args(server.url, snapshot, tmp_path / "whole"))
        assert whole.returncode == 0, whole.stderr
        size = (tmp_path / "whole" / "results.jsonl").stat().st_size
        assert (tmp_path / "whole" / "run.json").stat().st_size < size // 2
        out = tmp_path / "run"
        env = {**os.environ, "OPENAI_API_KEY": SECRET_KEY, "COLUMNS": "200"}
        full = subprocess.run([sys.executable, "-m", "critic_data.cli", *eval_args(server.url, snapshot, out)],
                              capture_output=True, text=True, env=env, timeout=300,
                              preexec_fn=_file_size_limit(size // 2))
        line = refused_in_one_line(full)
        assert f"cannot write {out / 'results.jsonl'} (File too large)" in line and "rerun with --resume" in line
        kept = (out / "results.jsonl").read_bytes()
        assert 0 < len(kept) <= size // 2
        resumed = run_cli(*eval_args(server.url, snapshot, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(json.loads(line)["id"] for line in
                                                      (tmp_path / "whole" / "results.jsonl").read_text().splitlines())
    assert (out / "results.jsonl").read_bytes().startswith(kept[:kept.rfind(b"\n") + 1])  # what finished stayed


def test_a_server_that_drops_the_connection_mid_answer_is_named_as_such(tmp_path):
    """Before the fix: "cannot reach the server ... start it", about a server that had just answered."""
    snapshot = write_mmrlhf(tmp_path / "in", [("Q?", jpeg(1))])

    def cut(request):
        return Reply(completion("<think>ok</think> \\boxed{1}").body, behaviour="cut")

    with fake_server(cut) as server:
        done = run_cli(*eval_args(server.url, snapshot, tmp_path / "run", "--timeout", "3"))
    line = refused_in_one_line(done)
    assert "closed the connection before its answer was complete" in line and "rerun with --resume" in line
    assert "cannot reach" not in line
