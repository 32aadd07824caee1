"""The CLI shell: every user mistake ends in one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import run_cli


@pytest.mark.parametrize(("args", "message"), [
    (["build", "--source", "vlfeedback"],
     "Missing option '--out' / '--output-dir'. (`critic-data build --help` lists the options)"),
    (["build", "--source", "vlfeedback", "--out", "o", "--seed", "abc"], "Invalid value for '--seed'"),
    (["bild"], "No such command 'bild'"),
    (["eval", "--nope"], "No such option: --nope"),
])
def test_usage_errors_are_one_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr


def test_a_line_break_in_a_path_stays_on_one_line(tmp_path):
    result = run_cli("build", "--source", "vlfeedback", "--input", str(tmp_path / "no\nsuch"), "--out",
                  str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no\\nsuch" in result.stderr


@pytest.mark.parametrize("endpoint", ["http://[::1", "ftp://example.org", "not a url"])
def test_a_malformed_hf_endpoint_is_one_line_before_anything_imports_it(endpoint, tmp_path):
    result = run_cli("build", "--source", "vlfeedback", "--input", str(tmp_path), "--out", str(tmp_path / "o"),
                  env={"HF_ENDPOINT": endpoint})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "HF_ENDPOINT" in result.stderr


# a slow image check (half a second each) keeps a build busy long enough to interrupt it
_SLOW_BUILD = ("import time, critic_data.builders.prepare as prepare; check = prepare.check_image; "
               "prepare.check_image = lambda *a, **k: (time.sleep(0.5), check(*a, **k))[1]; "
               "from critic_data.cli import main; import sys; sys.argv = ['critic-data'] + sys.argv[1:]; main()")


@pytest.mark.slow
def test_an_interrupted_build_says_so_and_leaves_no_output(tmp_path):
    """Ctrl-C mid-build: exit 130 with one line (typer would exit silently), --out untouched."""
    from tests.snapshots import write_vlfeedback_jsonl

    write_vlfeedback_jsonl(tmp_path / "snapshot", n=24)
    process = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, "build", "--source", "vlfeedback", "--input",
                                str(tmp_path / "snapshot"), "--out", str(tmp_path / "out"), "--num-proc", "1"],
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(6)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "interrupted; --out is as it was"
    assert not (tmp_path / "out").exists() and not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".")]


def _slow_build_with_workers(tmp_path) -> subprocess.Popen:
    """`critic-data build --num-proc 2` in a session of its own, each image check slowed to half a
    second: two parts of 12 rows keep both workers busy for six seconds."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "snapshot", n=24, shards=2)
    return subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, "build", "--source", "vlfeedback", "--input",
                             str(tmp_path / "snapshot"), "--out", str(tmp_path / "out"), "--num-proc", "2"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _processes_left(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ctrl_c_during_a_build_with_workers_is_one_line_and_ends_every_process(tmp_path):
    """Ctrl-C reaches every process of the build (its workers and the card's process too): one line
    from the build, no traceback from the others, none of them left running."""
    process = _slow_build_with_workers(tmp_path)
    time.sleep(3)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines() == ["interrupted; --out is as it was"]
    time.sleep(1)
    assert not _processes_left(process.pid)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_build_killed_by_sigterm_leaves_no_worker_behind(tmp_path):
    """SIGTERM to the build's process alone: its workers and the card's process end with it,
    instead of waiting for work forever."""
    process = _slow_build_with_workers(tmp_path)
    time.sleep(3)
    process.terminate()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while _processes_left(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_left(process.pid)


@pytest.mark.slow
@pytest.mark.parametrize("num_proc", ["1", "2"])
def test_a_build_without_a_working_matplotlib_is_one_line(num_proc, tmp_path):
    """matplotlib that fails to import: the card cannot be drawn, in this process or in the card's
    own; one line naming the missing library, exit 2, nothing written."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=24, shards=2)
    (tmp_path / "broken" / "matplotlib").mkdir(parents=True)
    (tmp_path / "broken" / "matplotlib" / "__init__.py").write_text('raise ImportError("a broken matplotlib")\n')
    result = run_cli("build", "--source", "vlfeedback", "--input", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                  "--num-proc", num_proc, env={"PYTHONPATH": str(tmp_path / "broken")})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: drawing charts (the dataset card's, --plots) needs matplotlib; install it with `pip install "
        "matplotlib`"]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_build_command_run_in_process_leaves_pyarrow_looking_for_pandas(tmp_path):
    """Only `main` spares pandas' import: the `build` command invoked in-process (typer's CliRunner)
    leaves pyarrow's pandas handling as it was for the rest of the caller's process."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=12)
    script = ("from typer.testing import CliRunner; from critic_data.cli import app; "
              "result = CliRunner().invoke(app, ['build', '--source', 'vlfeedback', '--input', "
              f"{str(tmp_path / 's')!r}, '--out', {str(tmp_path / 'o')!r}]); assert result.exit_code == 0, "
              "result.output; import pandas as pd, pyarrow as pa; print(pa.array(pd.Categorical(['a', 'b'])).type)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip().startswith("dictionary<")  # with pandas unseen: string


@pytest.mark.slow
def test_a_build_from_the_command_line_spares_pandas_import_and_leaves_pandas_usable(tmp_path):
    """pyarrow imports pandas (0.2 s) to look for pandas objects among the Python values it converts;
    `critic-data build` tells it pandas is absent, so neither its process nor its workers import it,
    with the same data files. pandas is still imported where a conversion needs it."""
    import hashlib

    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=24)
    digests = []
    for cli in (True, False):
        out = tmp_path / f"o{cli}"
        build = (f"sys.argv = ['critic-data', 'build', '--source', 'vlfeedback', '--input', {str(tmp_path / 's')!r}, "
                 f"'--out', {str(out)!r}, '--num-proc', '2']; from critic_data.cli import main; main()" if cli else
                 "from critic_data.builders.options import BuildOptions; from critic_data.builders.pipeline import "
                 f"build; build(BuildOptions(out=Path({str(out)!r}), inputs={{'vlfeedback': "
                 f"Path({str(tmp_path / 's')!r})}}, num_proc=2))")
        script = (f"import sys; from pathlib import Path; {build}; print('pandas' in sys.modules, file=sys.stderr); "
                  "import pyarrow as pa; print(pa.table({'a': [1, 2]}).to_pandas()['a'].sum())")
        # -X importtime: every import of the process and of its forked workers, on stderr
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", script], capture_output=True, text=True,
                                check=True, timeout=120)
        during_build, _, _ = result.stderr.rpartition(f"\n{not cli}\n")
        assert bool(re.search(r"\| +pandas\.core", during_build)) != cli
        assert result.stdout.split()[-1] == "3"  # to_pandas works after the build
        digests.append(hashlib.md5(b"".join(p.read_bytes() for p in sorted(out.glob("data/*.parquet")))).hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.slow
def test_main_run_in_a_process_leaves_its_garbage_collector_as_it_was(tmp_path):
    """main() defers its exit-time gc.freeze to the process's exit: a caller running it in its own
    process gets its collector back, and the command's files are complete."""
    from tests.snapshots import write_vlfeedback_parquet

    write_vlfeedback_parquet(tmp_path / "s", n=12)
    script = ("import gc, sys; from critic_data.cli import main; "
              f"sys.argv = ['critic-data', 'build', '--source', 'vlfeedback', '--input', {str(tmp_path / 's')!r}, "
              f"'--out', {str(tmp_path / 'o')!r}]; main(); print('frozen after main:', gc.get_freeze_count())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "frozen after main: 0"
    assert json.loads((tmp_path / "o" / "build.json").read_text())["splits"]["train"]["rows"] > 0


# --- what a new user meets: version, usage, help, flag spellings, usage errors, the training extra ----------

def test_version_is_printed_on_stdout():
    from critic_data import __version__

    result = run_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"critic-data {__version__}\n", "")


def test_a_bare_command_prints_its_usage_and_no_error_line():
    """As click answers a group called without a command: the usage on stderr, exit 2."""
    result = run_cli()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("Usage: critic-data ") and "error:" not in result.stderr
    for command in ("build", "push", "train", "inspect", "env", "eval", "best-of-n"):
        assert re.search(rf"^  {command} +\w", result.stderr, re.MULTILINE), command


def _declared_options(command: str) -> list[str]:
    """Every option name a command takes (both names of an on/off flag), from the command itself."""
    import typer

    from critic_data.cli import app

    declared = typer.main.get_command(app).commands[command].params
    return [name for param in declared for name in (*param.opts, *param.secondary_opts) if name.startswith("-")]


@pytest.mark.parametrize("command", ["build", "eval", "best-of-n", "inspect", "push"])
def test_help_at_80_columns_names_every_option_whole_and_fits(command):
    result = run_cli(command, "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    names = _declared_options(command)
    assert len(names) > 3
    for name in names:  # whole: not cut short, as in "--pairs-per-prom…"
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", result.stdout), name


@pytest.mark.parametrize(("command", "choices"), [
    ("build", ["<vlfeedback|rlhf_v|llava_rlhf|llava_critic|all>", "<max-gap|all>", "<trl|easyr1>",
               "<structure|decode>", "<critic-data|llava-critic>", "<count|all>"]),
    ("eval", ["<built|vl-rewardbench|mm-rlhf>", "<critic-data|paper>"]),
    ("best-of-n", ["<knockout|round-robin>"]),
])
@pytest.mark.slow
def test_help_lists_the_choices_of_an_option(command, choices):
    result = run_cli(command, "-h", env={"COLUMNS": "80"})  # -h as TRL's commands take it
    assert all(choice in result.stdout for choice in choices), result.stdout
    assert "<list[str]>" not in result.stdout


_SERVER = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]


@pytest.mark.parametrize(("args", "message"), [
    # each value is refused by the option it names: TRL's spelling reached that option
    (["build", "--source", "vlfeedback", "--output_dir", "o", "--num_proc", "0"], "--num-proc must be at least 1"),
    (["eval", *_SERVER, "--benchmark", "built", "--input", "x", "--output_dir", "o", "--max_tokens", "0"],
     "--max-tokens must be at least 1"),
    (["best_of_n", *_SERVER, "--input", "q.jsonl", "--n", "2", "--out", "o", "--top_p", "2"],
     "--top-p must be above 0"),
    (["inspect", ".", "--max_prompt_length", "5"], "--max-prompt-length needs --processor"),
])
def test_trl_underscore_spelling_is_accepted(args, message):
    result = run_cli(*args)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr, result.stderr


@pytest.mark.slow
def test_a_build_takes_trls_output_dir_and_underscores(tmp_path):
    """`--output_dir` is TRL's name for --out; `--test_size` is --test-size."""
    sample = str(Path(__file__).resolve().parents[2] / "sample" / "vlfeedback")
    result = run_cli("build", "--source", "vlfeedback", "--input", sample, "--output_dir", str(tmp_path / "o"),
                  "--test_size", "0.25", "--num_proc", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "o" / "build.json").read_text())["options"]["test_size"] == 0.25


@pytest.mark.parametrize(("args", "message"), [
    (["push"], "Missing argument 'folder'"),
    (["inspect"], "Missing argument 'path'"),
    (["train"], "Missing option '--recipe'"),
    (["build", "--source", "vlfeedback", "--out"], "Option '--out' requires an argument"),
    (["push", ".", "--repo-id", "a/b", "--nope"], "No such option: --nope"),
    (["inspect", ".", "--nope"], "No such option: --nope"),
    (["best-of-n", "--nope"], "No such option: --nope"),
    (["env", "extra"], "unexpected extra argument(s) (extra)"),
    (["--nope"], "No such option: --nope"),
    (["build", "--source", "vlfeedback", "--out", "o", "--format", "parquet"], "--format must be 'trl' or 'easyr1'"),
    (["build", "--source", "nosuch", "--out", "o"], "unknown source nosuch"),
    (["eval", *_SERVER, "--benchmark", "imagenet", "--input", "x", "--out", "o"], "choose from built, vl-rewardbench"),
    (["best-of-n", *_SERVER, "--input", "q", "--n", "2", "--out", "o", "--strategy", "swiss"], "choose from knockout"),
    (["push", ".", "--repo-id", "a/b", "--timeout", "soon"], "Invalid value for '--timeout'"),
])
@pytest.mark.slow
def test_every_commands_usage_errors_are_one_error_line(args, message):
    """click's own errors (a box, or 'Usage: ... Error: ...') and the commands' checks look the same."""
    result = run_cli(*args, env={"COLUMNS": "80"})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr, \
        result.stderr


def _training_extra() -> list[str]:
    """The import names of the `rl` extra's packages (pyproject.toml), each the name of its distribution."""
    import tomllib

    extra = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    return [re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
            for requirement in extra["project"]["optional-dependencies"]["rl"]]


def _run_without_training_extra(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`critic-data ARGS` as it runs where the rl extra is not installed: each of its packages fails to
    import, and the checks that look for one (importlib.util.find_spec) find none."""
    script = (f"import sys; sys.modules.update(dict.fromkeys({_training_extra()!r})); "
              "from critic_data.cli import main; sys.argv = ['critic-data'] + sys.argv[1:]; main()")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_train_without_the_training_extra_says_what_to_install():
    result = _run_without_training_extra("train", "--recipe", "critic-r1", "--max_steps", "1")
    assert result.returncode == 2
    assert result.stderr == "error: critic-data train needs the training extra: pip install 'critic-data[rl]'\n"


@pytest.mark.slow
def test_inspect_processor_without_the_training_extra_says_what_to_install(built_dataset, tmp_path):
    result = _run_without_training_extra("inspect", str(built_dataset), "--processor", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and "pip install 'critic-data[rl]'" in result.stderr


@pytest.mark.slow
def test_every_other_command_works_without_the_training_extra(tmp_path):
    """build (on the sample), inspect, push --dry-run, eval, best-of-n and env need none of torch,
    transformers, trl: a user without the rl extra can run them."""
    from tests.serve import completion, fake_server
    from tests.snapshots import jpeg

    sample = Path(__file__).resolve().parents[2] / "sample" / "vlfeedback"
    out = tmp_path / "built"
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "0.jpg").write_bytes(jpeg(1))
    (tmp_path / "q" / "questions.jsonl").write_text(json.dumps({"id": "q0", "image": "0.jpg", "question": "How many?"}))
    runs = [["build", "--source", "vlfeedback", "--input", str(sample), "--out", str(out)],
            ["inspect", str(out)],
            ["push", str(out), "--repo-id", "someone/critic-set", "--dry-run"],
            ["env"]]
    with fake_server(lambda request: completion("I think so. \\boxed{1}")) as server:
        served = ["--base-url", server.url, "--model", "fake-model"]
        runs += [["eval", *served, "--benchmark", "built", "--input", str(out), "--limit", "2", "--out",
                  str(tmp_path / "eval")],
                 ["best-of-n", *served, "--input", str(tmp_path / "q" / "questions.jsonl"), "--n", "2", "--out",
                  str(tmp_path / "bon")]]
        results = {run[0]: _run_without_training_extra(*run, env={"OPENAI_API_KEY": "k"}) for run in runs}
    for command, result in results.items():
        assert result.returncode == 0, (command, result.stderr)
    assert "torch:            not installed" in results["env"].stdout
    assert (tmp_path / "eval" / "summary.json").exists() and (tmp_path / "bon" / "picks.jsonl").exists()


# The options a first run changes, as `train --help` must name them (TRL's spelling).
_TRAIN_HELP_OPTIONS = ("model_name_or_path", "dataset_name", "dataset_revision", "output_dir", "max_steps",
                       "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                       "num_generations", "use_vllm", "vllm_mode", "report_to", "max_prompt_length",
                       "prompt_length_unit", "min_pixels", "max_pixels")


@pytest.mark.slow
def test_train_help_names_the_options_people_change_with_the_recipes_values_in_seconds_without_torch():
    """With torch, transformers and trl unimportable the help still answers, at 80 columns, within 5 s:
    each option on a line with its value in critic-r1 and critic-r1-plus (one value where they agree)."""
    import yaml

    recipes_dir = Path(__file__).resolve().parents[2] / "rl" / "recipes"
    shipped = [yaml.safe_load((recipes_dir / f"{name}.yaml").read_text()) for name in ("critic-r1", "critic-r1-plus")]
    started = time.monotonic()
    result = _run_without_training_extra("train", "--help", env={"COLUMNS": "80"})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 5, elapsed
    lines = result.stdout.splitlines()
    for option in _TRAIN_HELP_OPTIONS:
        values = [str(recipe[option]).lower() if isinstance(recipe.get(option), bool)
                  else str(recipe.get(option, "(unset)")) for recipe in shipped]
        shown = values[0] if values[0] == values[1] else f"{values[0]} | {values[1]}"
        assert f"  --{option} {shown}" in lines or any(line.startswith(f"  --{option} {shown} ") for line in lines), \
            (option, shown, result.stdout)
    assert "Qwen/Qwen2.5-VL-7B-Instruct | russwang/ThinkLite-VL-7B" in result.stdout  # side by side, whole
    assert "`critic-data train --recipe critic-r1 -h` lists them all" in " ".join(result.stdout.split())


@pytest.mark.slow
def test_a_build_on_a_terminal_says_when_it_writes_the_card_after_the_rows(tmp_path):
    """The card (statistics, charts) is a pause of its own after the rows' bar: a step names it."""
    sample = str(Path(__file__).resolve().parents[2] / "sample" / "vlfeedback")
    # rich draws its bars only on a terminal; TTY_COMPATIBLE=1 tells it stderr is one
    result = run_cli("build", "--source", "vlfeedback", "--input", sample, "--out", str(tmp_path / "o"),
                  env={"TTY_COMPATIBLE": "1", "TERM": "xterm"})
    assert result.returncode == 0, result.stderr
    assert "writing the card" in result.stderr
    assert result.stderr.index("vlfeedback") < result.stderr.index("writing the card")
