"""`critic-data difficulty` against a scripted judge whose pass rate on each row is known (tests/judge_server.py,
real HTTP), then `critic-data inspect` on the run: exact pass rates, resume, the lock, failures, a server
that answers garbage or never, one that ignores `n`, and the figures inspect prints.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import shutil

import pyarrow.parquet as pq
import pytest
from PIL import Image

from critic_data import UserError
from critic_data.builders.keys import digest, image_digest
from critic_data.inspection import inspect
from critic_data.manifest import CURATION_OPTIONS
from critic_data.rl import metrics
from critic_data.rl.client import smart_resize
from critic_data.rl.difficulty import run_difficulty
from critic_data.rl.options import DifficultyOptions
from critic_data.rl.records import DifficultyRow, read_difficulty, row_digest
from tests.cli import one_line_error, run_cli
from tests.judge_server import ScriptedJudge, dataset_plan
from tests.serve import Reply, fake_server, prompt_of

K = 8
RECIPE_PIXELS = (262144, 4194304)  # critic-r1's min_pixels, max_pixels


@pytest.fixture(scope="module")
def planned(built_dataset):
    """The train rows of the shared built dataset, each always, half or never judged right."""
    return dataset_plan(built_dataset)


def _options(dataset, url, out, **changes) -> DifficultyOptions:
    return DifficultyOptions(dataset=str(dataset), base_url=url, model="fake-model", out=out, concurrency=4,
                             timeout=20, **changes)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected_figures(rates: dict[str, float]) -> dict:
    """The histogram and zero-advantage shares a run of these rates must report, counted here by hand."""
    always, half, never = (sum(rate == value for rate in rates.values()) for value in (1.0, 0.5, 0.0))
    histogram = [never] + [0] * (K - 1) + [always]
    histogram[K // 2] = half
    return {"histogram": histogram, "observed": (always + never) / len(rates),
            "expected": (always + never + half * 2 * 0.5 ** K) / len(rates)}


def _chat_requests(server):
    return [body for path, body in server.requests if path.endswith("/chat/completions")]


# --- measuring --------------------------------------------------------------------------------------

def test_pass_rates_are_the_judges_and_requests_are_the_recipes(built_dataset, planned, tmp_path):
    plan, rates = planned
    with fake_server(ScriptedJudge(plan)) as server:
        summary = run_difficulty(_options(built_dataset, server.url, tmp_path / "run"))
    rows = {line["id"]: line for line in _lines(tmp_path / "run" / "difficulty.jsonl")}
    assert {row_id: row["pass_rate"] for row_id, row in rows.items()} == rates
    assert {row_id: row["format_rate"] for row_id, row in rows.items()} == \
        {row_id: 0.0 if rate == 0.0 else 1.0 for row_id, rate in rates.items()}
    assert all(row["samples"] == K and row["requests"] == 1 for row in rows.values())
    figures = _expected_figures(rates)
    assert summary["rows"] == len(rates) and summary["failed"] == 0
    assert summary["histogram"] == figures["histogram"]
    assert summary["zero_advantage"]["observed"] == pytest.approx(figures["observed"])
    assert summary["zero_advantage"]["expected"] == pytest.approx(figures["expected"])
    # the format reward alone spreads no group here: never-rows are unformatted in every sample
    assert summary["zero_advantage"]["observed_all_rewards"] == pytest.approx(figures["observed"])
    assert summary["mean_pass_rate"] == pytest.approx(sum(rates.values()) / len(rates))
    assert summary["server_ignored_n"] is False and summary["judgements_per_second"] > 0
    requests = _chat_requests(server)
    assert len(requests) == len(rates)  # one request per row: n = K
    assert {(r["n"], r["temperature"], r["top_p"], r["max_tokens"]) for r in requests} == {(K, 1.0, 0.99, 2048)}


def test_images_are_fitted_to_the_recipes_pixel_bounds_and_rows_named_by_content(built_dataset, planned, tmp_path):
    """Each image goes as the trainer fits it (smart_resize under the recipe's bounds); each record's digest
    is the build's own digest of the row's image digests and texts."""
    plan, _ = planned
    with fake_server(ScriptedJudge(plan)) as server:
        run_difficulty(_options(built_dataset, server.url, tmp_path / "run", limit=3))
    table = pq.read_table(sorted((built_dataset / "data").glob("train-*.parquet"))).slice(0, 3).to_pylist()
    sent = {prompt_of(body): body for body in _chat_requests(server)}
    records = {line["id"]: line for line in _lines(tmp_path / "run" / "difficulty.jsonl")}
    for row in table:
        stored = Image.open(io.BytesIO(row["images"][0]["bytes"]))
        url = sent[row["prompt"][0]["content"][-1]["text"]]["messages"][-1]["content"][0]["image_url"]["url"]
        shown = Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))
        assert (shown.height, shown.width) == smart_resize(stored.height, stored.width, *RECIPE_PIXELS)
        texts = (row["template"], row["question"], row["response_1"], row["response_2"], row["answer"])
        images = [image["bytes"] for image in row["images"]]
        assert records[row["id"]]["digest"] == digest(*map(image_digest, images), *texts) == row_digest(images, *texts)


def test_run_json_holds_the_shards_digests_that_build_json_records(built_dataset, planned, tmp_path):
    plan, rates = planned
    with fake_server(ScriptedJudge(plan)) as server:
        run_difficulty(_options(built_dataset, server.url, tmp_path / "run", limit=2))
    manifest = json.loads((built_dataset / "build.json").read_text())
    run = read_difficulty(tmp_path / "run")
    # the build it measured, as build --difficulty compares it: options less curation and folders, inputs' content
    build = {"options": {name: value for name, value in manifest["options"].items()
                         if name not in (*CURATION_OPTIONS, "out", "inputs", "image_root", "overwrite")},
             "inputs": {name: {key: value for key, value in origin.items() if key != "folder"}
                        for name, origin in manifest["inputs"].items()}}
    assert run.dataset == {"split": "train", "shards": manifest["splits"]["train"]["xxh3_128"], "build": build}
    assert run.identity["samples"] == K and run.identity["rewards"] == [["preference", 0.9], ["format", 0.1]]
    assert run.pass_rates == {row_id: rates[row_id] for row_id in run.rows} and len(run.rows) == 2


def test_a_hub_dataset_is_named_by_the_commit_measured(built_dataset, planned, tmp_path):
    """Published with `critic-data push` to the local Hub of tests/hub_server.py, measured by its id."""
    from tests.hub_server import LocalHub, client_env

    plan, rates = planned
    hub = LocalHub(tmp_path / "hub", tokens={"hf_test_write": "write"}).start()
    try:
        env = client_env(tmp_path, hub.url, "hf_test_write")
        pushed = run_cli("push", built_dataset, "--repo-id", "critic/difficulty-set", environ=env)
        assert pushed.returncode == 0, pushed.stderr
        with fake_server(ScriptedJudge(plan)) as server:
            done = run_cli("difficulty", "critic/difficulty-set", "--base-url", server.url, "--model",
                           "fake-model", "--out", tmp_path / "run", "--limit", "3", environ=env)
        assert done.returncode == 0, done.stderr
        commit = hub.repos[("dataset", "critic/difficulty-set")].refs["main"]
    finally:
        hub.stop()
    run = read_difficulty(tmp_path / "run")
    assert run.dataset == {"split": "train", "hub_id": "critic/difficulty-set", "revision": commit}
    assert run.pass_rates == {row_id: rates[row_id] for row_id in run.rows} and len(run.rows) == 3


def test_a_server_that_ignores_n_is_asked_once_per_sample(built_dataset, planned, tmp_path):
    plan, rates = planned
    with fake_server(ScriptedJudge(plan, honour_n=False)) as server:
        summary = run_difficulty(_options(built_dataset, server.url, tmp_path / "run", limit=6))
    rows = _lines(tmp_path / "run" / "difficulty.jsonl")
    assert {row["id"]: row["pass_rate"] for row in rows} == {row["id"]: rates[row["id"]] for row in rows}
    assert summary["server_ignored_n"] is True and summary["rows_sampled_one_by_one"] == 6
    assert summary["requests"] == 6 * K == len(_chat_requests(server))
    seeds = [body.get("seed") for body in _chat_requests(server)]
    assert len(set(seeds)) == len(seeds)  # every single request has its own sampling seed


def test_resume_measures_only_the_rows_left_and_refuses_other_options(built_dataset, planned, tmp_path):
    plan, rates = planned
    out = tmp_path / "run"
    with fake_server(ScriptedJudge(plan)) as server:
        run_difficulty(_options(built_dataset, server.url, out, limit=4))
        with pytest.raises(UserError, match="already exists; pass --resume"):
            run_difficulty(_options(built_dataset, server.url, out))
        with pytest.raises(UserError, match="--samples was 8, now 4"):
            run_difficulty(_options(built_dataset, server.url, out, resume=True, samples=4))
        summary = run_difficulty(_options(built_dataset, server.url, out, resume=True))
    assert len(_chat_requests(server)) == len(rates)  # 4, then the rest: none twice
    assert summary["rows"] == len(rates) and sorted(r["id"] for r in _lines(out / "difficulty.jsonl")) == sorted(rates)


def test_a_resume_on_another_build_is_refused(two_seeds, tmp_path):
    first, second = two_seeds
    dataset = tmp_path / "dataset"
    shutil.copytree(first, dataset)
    plan, _ = dataset_plan(dataset)
    with fake_server(ScriptedJudge(plan)) as server:
        run_difficulty(_options(dataset, server.url, tmp_path / "run", limit=2))
        shutil.rmtree(dataset)
        shutil.copytree(second, dataset)  # same path, same row ids, other labels
        with pytest.raises(UserError, match="holds a run with other options \\(--dataset was"):
            run_difficulty(_options(dataset, server.url, tmp_path / "run", resume=True))


def test_a_second_run_into_the_same_folder_is_refused(built_dataset, planned, tmp_path):
    plan, _ = planned
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run in progress holds it
        with fake_server(ScriptedJudge(plan)) as server, pytest.raises(UserError, match="another run is writing"):
            run_difficulty(_options(built_dataset, server.url, out, limit=2))
    finally:
        os.close(fd)
    assert not _chat_requests(server)


def test_a_refused_row_is_counted_left_out_and_measured_on_resume(built_dataset, planned, tmp_path):
    plan, rates = planned
    refused_text = next(iter(plan))
    out = tmp_path / "run"
    with fake_server(ScriptedJudge({**plan, refused_text: (plan[refused_text][0], "refuse")})) as server:
        done = run_cli("difficulty", built_dataset, "--base-url", server.url, "--model", "fake-model",
                       "--out", out, "--concurrency", "4")
    assert done.returncode == 1 and "1 row failed" in done.stderr and "Traceback" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 1 and "HTTP 400" in summary["first_failure"] and summary["rows"] == len(rates) - 1
    with fake_server(ScriptedJudge(plan)) as server:
        done = run_cli("difficulty", built_dataset, "--base-url", server.url, "--model", "fake-model",
                       "--out", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert len(_chat_requests(server)) == 1 and "mean pass rate" in done.stderr
    assert {r["id"]: r["pass_rate"] for r in _lines(out / "difficulty.jsonl")} == rates


@pytest.mark.parametrize("reply, message", [
    (Reply(b"<html>login</html>", content_type="text/html"), "every row failed .* not JSON"),
    (Reply(b'{"choices": []}'), "every row failed .* not a chat completion"),
    (Reply(behaviour="hang"), "did not answer within 2 s"),
])
def test_a_server_that_answers_garbage_or_never_ends_in_one_line(built_dataset, tmp_path, reply, message):
    with fake_server(lambda _: reply) as server:
        done = run_cli("difficulty", built_dataset, "--base-url", server.url, "--model", "fake-model",
                       "--out", tmp_path / "run", "--limit", "3", "--timeout", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    said = done.stderr.strip().splitlines()
    assert said[0].startswith("difficulty: up to 3 rows x 8 samples") and len(said) == 2  # what it set out to do
    assert said[1].startswith("error: ") and re.search(message, said[1]), said[1]


def test_recipe_values_and_overrides(tmp_path):
    plus = DifficultyOptions(dataset="d", base_url="u", model="m", out=tmp_path, recipe="critic-r1-plus",
                             temperature=0.7, max_tokens=512)
    assert (plus.samples, plus.temperature, plus.top_p, plus.max_tokens) == (8, 0.7, 0.99, 512)
    assert plus.pixels == RECIPE_PIXELS and plus.rewards == (("preference", 0.9), ("format", 0.1))
    own = tmp_path / "own.yaml"
    own.write_text("temperature: 0.9\ntop_p: 1.0\nmax_completion_length: 64\nnum_generations: 4\n"
                   "reward_funcs: [format]\nreward_weights: null\nmin_pixels: 3136\nmax_pixels: 12845056\n")
    with pytest.raises(UserError, match="trains on no preference reward"):
        DifficultyOptions(dataset="d", base_url="u", model="m", out=tmp_path, recipe=str(own))
    own.write_text(own.read_text().replace("[format]", "[preference, format]"))
    mine = DifficultyOptions(dataset="d", base_url="u", model="m", out=tmp_path, recipe=str(own))
    assert (mine.samples, mine.temperature, mine.max_tokens, mine.rewards) == \
        (4, 0.9, 64, (("preference", 1.0), ("format", 1.0)))


@pytest.mark.parametrize("changes, message", [
    ({"recipe": "critic-r2"}, "unknown recipe 'critic-r2'"), ({"samples": 1}, "--samples must be from 2 to 64"),
    ({"samples": 65}, "--samples must be from 2 to 64"), ({"temperature": 0.0}, "--temperature must be above 0"),
    ({"top_p": 0.0}, "--top-p must be above 0"), ({"limit": 0}, "--limit must be at least 1"),
])
def test_option_mistakes_are_one_line(tmp_path, changes, message):
    with pytest.raises(UserError, match=message):
        DifficultyOptions(dataset="d", base_url="u", model="m", out=tmp_path, **changes)


def test_a_mistake_on_the_command_line_is_one_line(tmp_path):
    done = run_cli("difficulty", tmp_path / "nowhere", "--base-url", "http://127.0.0.1:9/v1", "--model",
                   "m", "--out", tmp_path / "run", "--recipe", "critic-r2")
    assert "unknown recipe 'critic-r2'" in one_line_error(done)
    done = run_cli("difficulty", tmp_path / "nowhere", "--base-url", "http://127.0.0.1:9/v1", "--model",
                   "m", "--out", tmp_path / "run")
    assert "no such folder, and not a Hub dataset id" in one_line_error(done)


# --- records and figures ----------------------------------------------------------------------------

def _row(row_id="r", passes=(1, 0, 1, 1), formats=(1, 1, 0, 1), content="d") -> DifficultyRow:
    return DifficultyRow(row_id, "vlfeedback", content,
                         {"preference": [float(p) for p in passes], "format": [float(f) for f in formats]}, 1)


def test_a_difficulty_line_reads_back_only_when_its_counts_follow_from_its_rewards():
    line = _row().to_json()
    assert (line["passes"], line["pass_rate"], line["format_rate"]) == (3, 0.75, 0.75)
    assert DifficultyRow.from_json(line).to_json() == line
    for wrong in ({"passes": 2}, {"pass_rate": 0.5}, {"format_rate": 1.0}, {"samples": 3}, {"requests": 0},
                  {"rewards": {"format": [1.0] * 4}}, {"rewards": {"preference": [1.0] * 3}},
                  {"rewards": {"preference": [1.0, 0.0, 1.0, float("nan")], "format": [1.0] * 4}},
                  {"rewards": {"preference": [], "format": []}}, {"rewards": {"preference": 1.0}}, {"rewards": []},
                  {"id": 3}, {"passes": 3.0}, {"source": 1}):
        assert DifficultyRow.from_json({**line, **wrong}) is None, wrong


def test_zero_advantage_bands_and_transitions_on_known_rows():
    rows = [_row("a", (1,) * 4), _row("b", (0,) * 4), _row("c", (1, 0, 0, 0)), _row("d", (1, 1, 0, 0))]
    assert metrics.pass_count_histogram(rows, 4) == [1, 1, 1, 0, 1]
    zero = metrics.zero_advantage(rows, {"preference": 0.9, "format": 0.1})
    expected = (1 + 1 + (0.25 ** 4 + 0.75 ** 4) + 2 * 0.5 ** 4) / 4
    assert zero == {"observed": 0.5, "expected": pytest.approx(expected), "observed_all_rewards": 0.0}
    band = metrics.band_savings(rows, 0.25, 0.75)
    assert (band["rows_kept"], band["rows_dropped"], band["compute_saved"]) == (2, 2, 0.5)
    assert metrics.symmetric_bands(8) == [(0.125, 0.875), (0.25, 0.75), (0.375, 0.625)]
    later = {"a": _row("a", (1,) * 4), "b": _row("b", (1, 1, 0, 0)), "c": _row("c", (0,) * 4, content="other"),
             "e": _row("e")}
    moved = metrics.rate_transitions({row.id: row for row in rows}, later)
    assert (moved["rows_in_both"], moved["other_content"], moved["only_first"], moved["only_second"]) == (2, 1, 1, 1)
    assert moved["mean_change"] == 0.25 and (moved["rose"], moved["fell"], moved["same"]) == (1, 0, 1)
    assert moved["table"][0][2] == 1 and moved["table"][4][4] == 1 and sum(map(sum, moved["table"])) == 2


# --- inspect ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(built_dataset, planned, tmp_path_factory):
    """A run of the plan (always, half, never), and one where every row moved a mode up (never -> half -> always)."""
    plan, _ = planned
    folder = tmp_path_factory.mktemp("difficulty-runs")
    promoted = {text: (label, {"never": "half", "half": "always"}.get(mode, mode)) for text, (label, mode) in
                plan.items()}
    for name, judge in (("base", ScriptedJudge(plan)), ("trained", ScriptedJudge(promoted))):
        with fake_server(judge) as server:
            run_difficulty(_options(built_dataset, server.url, folder / name))
    return folder / "base", folder / "trained"


def test_inspect_reports_the_histogram_zero_advantage_and_band_savings(two_runs, planned, capsys):
    _, rates = planned
    report = inspect(str(two_runs[0]), as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "difficulty" == report["kind"]
    figures = _expected_figures(rates)
    assert [bin_["rows"] for bin_ in report["histogram"]] == figures["histogram"]
    assert report["zero_advantage"]["observed"] == pytest.approx(figures["observed"])
    assert report["zero_advantage"]["expected"] == pytest.approx(figures["expected"])
    half = sum(rate == 0.5 for rate in rates.values())
    default = report["bands"][0]
    assert default["band"] == [0.125, 0.875] and default["rows_kept"] == half
    assert default["compute_saved"] == pytest.approx(1 - half / len(rates))
    inspect(str(two_runs[0]))
    text = capsys.readouterr().out
    assert "zero advantage" in text and "0.125:0.875" in text and f"{100 * default['compute_saved']:.1f}" in text


def test_inspect_against_shows_how_the_rates_moved(two_runs, planned, capsys):
    _, rates = planned
    report = inspect(str(two_runs[0]), against=str(two_runs[1]), as_json=True)
    moved = report["against"]
    always, half, never = (sum(rate == value for rate in rates.values()) for value in (1.0, 0.5, 0.0))
    assert moved["rows_in_both"] == len(rates) and moved["other_content"] == 0
    assert (moved["rose"], moved["same"], moved["fell"]) == (half + never, always, 0)
    assert moved["mean_change"] == pytest.approx(0.5 * (half + never) / len(rates))
    assert moved["table"][0][K // 2] == never and moved["table"][K // 2][K] == half and moved["table"][K][K] == always
    capsys.readouterr()
    inspect(str(two_runs[0]), against=str(two_runs[1]))
    assert "rows in both" in capsys.readouterr().out


def test_inspect_against_a_folder_that_is_no_difficulty_run_is_one_line(two_runs, built_dataset):
    with pytest.raises(UserError, match="--against .* is not a difficulty run"):
        inspect(str(two_runs[0]), against=str(built_dataset))


def test_inspect_counts_a_line_cut_short_and_leaves_it_out(two_runs, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(two_runs[0], copy)
    with (copy / "difficulty.jsonl").open("a") as handle:  # as an interrupted append leaves it
        handle.write('{"id": "half-writ')
    whole, cut = inspect(str(two_runs[0]), as_json=True), inspect(str(copy), as_json=True)
    assert (cut["lines_left_out"], whole["lines_left_out"]) == (1, 0)
    assert {key: value for key, value in cut.items() if key not in ("folder", "lines_left_out")} == \
        {key: value for key, value in whole.items() if key not in ("folder", "lines_left_out")}
