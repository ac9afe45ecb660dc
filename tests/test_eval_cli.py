"""`python -m conductor_core.eval FILE` as CI runs it: a subprocess, its providers' keys and base
URLs in the environment, in front of loopback OpenAI and Anthropic servers (the real SDKs,
real HTTP), storing into a real database. Thresholds decide the exit status (0 / 1, naming
the threshold and the value measured; 2 for a bad file, naming the line and field), the JUnit
XML is parsed with xml.etree (counts per variant exact), the HTML report names the variants,
and the run is in the database as the Experiments page reads it, at the URL printed. The keys
are canaries: no piece of one reaches the terminal, the JUnit XML or the HTML report.

The file's rules without a subprocess: the thresholds' syntax and verdicts, and the errors
that name where to change the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from conductor_core.eval.cli import main
from conductor_core.eval.spec import EvalFileError, parse_spec, read_document
from conductor_core.eval.thresholds import Threshold, judge
from conductor_core.providers.spec import provider_variables
from conductor_core.store import RequestLog
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, OpenAIServer
from conductor_core.workbench.dataset_store import DatasetStore
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import CheckStats, ExperimentStore, VariantStats
from conductor_core.workbench.prompts import PromptContent, PromptMessage, PromptStore
from conductor_core.workbench.variants import Variant
from tests.judge_support import ScriptedJudge, verdict
from tests.secret_support import leaks, problems, quotes
from tests.store_backends import REPO_ROOT, postgres_schema

pytestmark = pytest.mark.timeout(600)

EXAMPLE = REPO_ROOT / "examples" / "eval.yaml"
# Canaries: random, shaped like no known key; only the eval process registers them.
KEYS = {"openai": "qV7mZk2RtX9wLp4NcJ8sHd3F", "anthropic": "Tb6YgW1nQx5KzR8mVc2PjL9e"}
ALL_TEAMS = "That one is for the billing, technical or account team."  # contains every row's expected
ROWS = 6  # examples/tickets.csv: billing, technical, account, billing, technical, account


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    servers = {
        "openai": OpenAIServer(reply=ALL_TEAMS, require_key=KEYS["openai"]),
        "anthropic": AnthropicServer(reply=ALL_TEAMS, require_key=KEYS["anthropic"]),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def servers(upstreams: dict[str, Any]) -> dict[str, Any]:
    for server in upstreams.values():
        server.reset()
    return upstreams


def eval_env(servers: dict[str, Any], data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in provider_variables() and not k.startswith("CONDUCTOR_")}
    env.update(
        OPENAI_API_KEY=KEYS["openai"],
        OPENAI_BASE_URL=servers["openai"].url,
        ANTHROPIC_API_KEY=KEYS["anthropic"],
        ANTHROPIC_BASE_URL=servers["anthropic"].url,
        CONDUCTOR_LOCAL_ENABLED="false",
        CONDUCTOR_MAX_RETRIES="0",
        CONDUCTOR_DATA_DIR=str(data_dir),
        CONDUCTOR_CONFIG=str(data_dir / "none.toml"),  # no conductor.toml from the working directory
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["CONDUCTOR_DATABASE_URL"] = database_url
    return env


def command(file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "conductor_core.eval", str(file), *args]


def interruptible(file: Path, *args: str) -> list[str]:
    """`command`, as started from a terminal, where Ctrl-C reaches it. A job started in the
    background (`cmd &`, as CI scripts and harnesses start test runs) inherits SIGINT ignored,
    and Python then installs no KeyboardInterrupt handler: the eval would never see Ctrl-C."""
    start = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = sys.argv[1:]; runpy.run_module('conductor_core.eval', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", start, "conductor_core.eval", str(file), *args]


def run_eval(servers, tmp_path: Path, file: Path, *args: str, database_url: str | None = None, **env: str):
    return subprocess.run(
        command(file, *args),
        cwd=tmp_path,
        env=eval_env(servers, tmp_path / "data", database_url) | env,
        capture_output=True,
        text=True,
        timeout=420,
    )


def suites(path: Path) -> dict[str, dict[str, Any]]:
    """Per testsuite name: its counts as attributes and as found in its testcases."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    found = {}
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        found[suite.get("name")] = {
            "tests": int(suite.get("tests")),
            "failures": int(suite.get("failures")),
            "errors": int(suite.get("errors")),
            "skipped": int(suite.get("skipped")),
            "cases": cases,
            "failed": [c.get("name") for c in cases if c.find("failure") is not None],
            "errored": [c.get("name") for c in cases if c.find("error") is not None],
            "skips": [c.get("name") for c in cases if c.find("skipped") is not None],
            "properties": {p.get("name"): p.get("value") for p in suite.iter("property")},
        }
    for name, suite in found.items():  # the attributes say what the testcases hold
        assert suite["tests"] == len(suite["cases"]), name
        assert (suite["failures"], suite["errors"], suite["skipped"]) == (
            len(suite["failed"]),
            len(suite["errored"]),
            len(suite["skips"]),
        ), name
    return found


def printed_run(stdout: str) -> tuple[str, str, str]:
    match = re.search(r"Open the run: (\S+/experiments\?experiment=(\S+)&run=(\S+))", stdout)
    assert match, stdout
    return match.group(1), match.group(2), match.group(3)


def no_key_in(*texts: str) -> None:
    for name, key in KEYS.items():
        for text in texts:
            assert not leaks(key, text), f"pieces of the {name} key: {leaks(key, text)}"


def test_the_canaries_are_fit_test_keys() -> None:
    assert all(not problems(key) for key in KEYS.values())


# --- the command, end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_example_passes_its_thresholds_and_its_run_opens_in_the_playground(
    servers, tmp_path: Path, backend: str
) -> None:
    with postgres_schema() if backend == "postgresql" else nullcontext() as database_url:
        run = run_eval(
            servers,
            tmp_path,
            EXAMPLE,
            "--junit",
            "out/junit.xml",
            "--html",
            "out/report.html",
            "--base-url",
            "http://play.example:8501/",
            database_url=database_url,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        # Not a terminal: plain progress lines, then the table, each threshold's verdict and the link.
        assert f"{2 * ROWS}/{2 * ROWS} cells (ok {2 * ROWS}, errors 0, incomplete 0) — completed" in run.stdout
        assert "ok   variant B (anthropic/claude-haiku-5-5): p95_latency_ms <= 10000, measured" in run.stdout
        assert run.stdout.count("pass_rate[right_team] >= 0.8, measured 1") == 2
        url, experiment_id, run_id = printed_run(run.stdout)
        assert url.startswith("http://play.example:8501/experiments?")

        # Every row reached each upstream through its SDK, with the system prompt and the row's text.
        assert len(servers["openai"].requests) == ROWS and len(servers["anthropic"].requests) == ROWS
        first = servers["openai"].requests[0]["json"]
        assert first["model"] == "gpt-5.4-mini" and first["temperature"] == 0
        assert first["messages"][0] == {"role": "system", "content": "You route support tickets. Answer with one word."}

        report = suites(tmp_path / "out" / "junit.xml")
        assert set(report) == {"A · openai/gpt-5.4-mini", "B · anthropic/claude-haiku-5-5"}
        a, b = report["A · openai/gpt-5.4-mini"], report["B · anthropic/claude-haiku-5-5"]
        # A row per testcase, then the thresholds: three for every variant, one more of B's own.
        assert (a["tests"], a["failures"], a["errors"]) == (ROWS + 3, 0, 0)
        assert (b["tests"], b["failures"], b["errors"]) == (ROWS + 4, 0, 0)
        assert a["cases"][0].get("name") == "row 1: I was charged twice for my March invoice."
        assert a["properties"]["run_id"] == run_id and a["properties"]["url"] == url

        html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
        assert "Ticket triage" in html and "openai/gpt-5.4-mini" in html and "anthropic/claude-haiku-5-5" in html

        # The run is stored as the Experiments page reads it (its URL names this experiment and run).
        log = RequestLog(database_url, data_dir=tmp_path / "data")
        try:
            store = ExperimentStore(log)
            stored = store.run(run_id)
            assert stored.experiment_id == experiment_id and stored.status == "completed"
            assert store.experiment(experiment_id).name == "Ticket triage"
            assert [s.pass_rate for s in store.stats(run_id)] == [1.0, 1.0]
            assert {r.source for r in log.records()} == {"eval"}
        finally:
            log.close()
        no_key_in(run.stdout, run.stderr, (tmp_path / "out" / "junit.xml").read_text(), html)
        assert "conductor:conductor@" not in run.stdout + run.stderr  # the database's password is never shown


def test_a_variant_under_its_threshold_fails_the_eval_naming_it(servers, tmp_path: Path) -> None:
    # Right on rows 1 and 4 only (2/6), with a character XML cannot hold (the file must still parse).
    servers["anthropic"].reply = "billing\x1b"
    run = run_eval(
        servers, tmp_path, EXAMPLE, "--junit", "junit.xml", CONDUCTOR_PLAYGROUND_URL="https://play.example.com"
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert printed_run(run.stdout)[0].startswith("https://play.example.com/experiments?experiment=")
    assert "2 threshold(s) failed:" in run.stderr
    assert "FAIL variant B (anthropic/claude-haiku-5-5): pass_rate >= 0.8, measured 0.333333" in run.stderr
    assert "FAIL variant B (anthropic/claude-haiku-5-5): pass_rate[right_team] >= 0.8, measured 0.333333" in run.stderr
    assert "variant A" not in run.stderr  # A holds every threshold

    report = suites(tmp_path / "junit.xml")
    a, b = report["A · openai/gpt-5.4-mini"], report["B · anthropic/claude-haiku-5-5"]
    assert (a["tests"], a["failures"], a["errors"]) == (ROWS + 3, 0, 0)
    # Rows 2, 3, 5, 6 fail their check; two thresholds fail.
    assert (b["tests"], b["failures"], b["errors"]) == (ROWS + 4, 4 + 2, 0)
    assert [n.split(":")[0] for n in b["failed"]] == [
        "row 2",
        "row 3",
        "row 5",
        "row 6",
        "threshold pass_rate >= 0.8",
        "threshold pass_rate[right_team] >= 0.8",
    ]
    failure = b["cases"][1].find("failure")
    assert failure.get("message") == "contains: does not contains 'technical'"
    assert "expected: technical" in failure.text and "answer:\nbilling\ufffd" in failure.text
    no_key_in(run.stdout, run.stderr, (tmp_path / "junit.xml").read_text())


def test_failed_calls_are_junit_errors_and_fail_the_errors_threshold(servers, tmp_path: Path) -> None:
    # Every call fails with an error body that quotes the key (as upstreams do) until the breaker opens.
    servers["openai"].script(*[Fault("status", status=500, message=quotes(KEYS["openai"]))] * ROWS)
    run = run_eval(servers, tmp_path, EXAMPLE, "--junit", "junit.xml", "--html", "report.html")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL variant A (openai/gpt-5.4-mini): errors == 0, measured 6" in run.stderr
    a = suites(tmp_path / "junit.xml")["A · openai/gpt-5.4-mini"]
    # Six errors (no answer), and the three thresholds fail (pass rates 0, six errors).
    assert (a["tests"], a["failures"], a["errors"]) == (ROWS + 3, 3, ROWS)
    assert {c.find("error").get("type") for c in a["cases"][:ROWS]} <= {"unavailable", "circuit_open"}
    assert "[REDACTED]" in (tmp_path / "junit.xml").read_text()  # the quoted key, taken out
    no_key_in(run.stdout, run.stderr, (tmp_path / "junit.xml").read_text(), (tmp_path / "report.html").read_text())


def test_a_terminal_gets_a_progress_bar(servers, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 wide
    process = subprocess.Popen(
        command(EXAMPLE),
        cwd=tmp_path,
        env=eval_env(servers, tmp_path / "data"),
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the process has exited
                break
            if not chunk:
                break
            shown += chunk
        process.wait(timeout=300)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    text = shown.decode("utf-8", "replace")
    assert process.returncode == 0, text
    assert re.search(r"100%\|.*\| 12/12 ", text), text  # tqdm's bar, redrawn in place
    assert "cells (ok" not in text  # no plain progress lines on a terminal
    assert "Open the run: " in text


def write_eval(tmp_path: Path, text: str) -> Path:
    shutil.copy(REPO_ROOT / "examples" / "tickets.csv", tmp_path / "tickets.csv")
    path = tmp_path / "eval.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BAD_TEMPERATURE = """\
prompt: "Team for {{ticket}}?"
dataset: tickets.csv
variants:
  - target: openai/gpt-5.4-mini
  - target: anthropic
    temperature: 5
checks: [contains]
thresholds:
  - pass_rate >= 0.9
"""


def test_a_bad_file_exits_2_naming_the_line_and_the_field(servers, tmp_path: Path) -> None:
    run = run_eval(servers, tmp_path, write_eval(tmp_path, BAD_TEMPERATURE), "--junit", "junit.xml")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "eval.yaml, line 6: variants[1].temperature: Input should be less than or equal to 2" in run.stderr
    assert not (tmp_path / "junit.xml").exists() and not servers["openai"].requests


def test_a_dataset_that_cannot_be_read_exits_2_naming_its_line(servers, tmp_path: Path) -> None:
    path = write_eval(tmp_path, BAD_TEMPERATURE.replace("temperature: 5", "temperature: 0"))
    (tmp_path / "tickets.csv").write_text('ticket,expected\n"never closed,billing\n', encoding="utf-8")
    run = run_eval(servers, tmp_path, path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "tickets.csv: line 2: malformed CSV" in run.stderr and not servers["openai"].requests

    path.write_text(path.read_text().replace("dataset: tickets.csv", "dataset: {ref: tickets@3}"))
    run = run_eval(servers, tmp_path, path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "tickets@3: there is no dataset named 'tickets'" in run.stderr and not servers["openai"].requests


def test_a_saved_dataset_at_a_version_is_what_the_run_reads_and_records(servers, tmp_path: Path) -> None:
    log = RequestLog(None, data_dir=tmp_path / "data")
    try:
        saved = DatasetStore(log)
        rows = read_dataset((EXAMPLE.parent / "tickets.csv").read_bytes(), filename="tickets.csv")
        saved.import_dataset("tickets", rows, by="test")
        saved.add_rows("tickets", [{"ticket": "Where is my refund?", "expected": "billing"}], by="test")
    finally:
        log.close()
    text = EXAMPLE.read_text(encoding="utf-8").replace("dataset: tickets.csv", "dataset: {ref: tickets@1}")
    path = tmp_path / "eval.yaml"
    path.write_text(text, encoding="utf-8")
    run = run_eval(servers, tmp_path, path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(servers["openai"].requests) == ROWS  # version 1: the file's rows, not the row added in v2
    _, _, run_id = printed_run(run.stdout)

    servers["openai"].reset()
    path.write_text(text.replace("tickets@1", "tickets@latest"), encoding="utf-8")
    latest = run_eval(servers, tmp_path, path)
    assert latest.returncode == 0, latest.stdout + latest.stderr
    assert len(servers["openai"].requests) == ROWS + 1

    log = RequestLog(None, data_dir=tmp_path / "data")
    try:
        store = ExperimentStore(log)
        assert (store.run(run_id).dataset_name, store.run(run_id).dataset_version) == ("tickets", 1)
        _, _, latest_id = printed_run(latest.stdout)
        assert store.run(latest_id).dataset_version == 2
    finally:
        log.close()


def test_a_saved_prompt_at_a_label_is_what_the_run_sends_and_records(servers, tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text[: text.index("prompt:")] + "prompt: triage@production\n" + text[text.index("dataset:") :]
    path = tmp_path / "eval.yaml"
    path.write_text(text.replace("dataset: tickets.csv", f"dataset: {EXAMPLE.parent / 'tickets.csv'}"))

    missing = run_eval(servers, tmp_path, path)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "eval.yaml, line 4: prompt: " in missing.stderr and "triage" in missing.stderr
    assert not servers["openai"].requests

    log = RequestLog(None, data_dir=tmp_path / "data")
    try:
        prompts = PromptStore(log)
        variant = Variant(provider="openai", model="gpt-5.4-mini")
        turn = PromptMessage(role="user", content="T: {{ticket}}")
        one = PromptContent(system="Route tickets.", messages=(turn,), variant=variant)
        saved = prompts.save("triage", one, by="test")
        prompts.move_label("triage", "production", saved.version, by="test")
        two_turns = (PromptMessage(role="user", content="Hi"), PromptMessage(role="user", content="T: {{ticket}}"))
        prompts.save("triage", one.model_copy(update={"messages": two_turns}), by="test")
    finally:
        log.close()

    run = run_eval(servers, tmp_path, path)
    assert run.returncode == 0, run.stdout + run.stderr
    sent = servers["openai"].requests[0]["json"]["messages"]
    assert sent[0] == {"role": "system", "content": "Route tickets."}
    assert sent[1]["content"].startswith("T: ") and len(sent) == 2
    _, _, run_id = printed_run(run.stdout)
    log = RequestLog(None, data_dir=tmp_path / "data")
    try:
        assert ExperimentStore(log).run(run_id).prompt_version_id == saved.id
    finally:
        log.close()

    # Version 2 has two user turns: an eval sends one, so it says so rather than drop one.
    path.write_text(path.read_text().replace("triage@production", "triage@2"))
    refused = run_eval(servers, tmp_path, path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "prompt triage@2 has 2 message(s) (user, user)" in refused.stderr


SHORT_FORMS = """\
prompt:
  messages:
    - {role: system, content: Be brief.}
    - {role: user, content: "Team for {{ticket}}?"}
dataset: tickets.jsonl
variants:
  - target: loopback/loop-1
  - {provider: openai, model: gpt-5.4-mini, system: Answer in one word.}
checks: [contains, {kind: regex, name: one_word}]
thresholds: pass_rate[one_word] >= 0.5   # one, without a list
concurrency: {"*": 2, loopback: 1}
"""


def test_an_endpoint_configured_by_the_environment_and_the_short_forms(servers, tmp_path: Path) -> None:
    """A variant on an OpenAI-compatible endpoint from CONDUCTOR_ENDPOINTS; a JSONL dataset; the
    prompt as messages (the variant's own system prompt wins over the file's)."""
    loop = OpenAIServer(reply="billing", models=["loop-1"]).start()
    try:
        (tmp_path / "eval.yaml").write_text(SHORT_FORMS, encoding="utf-8")
        rows = [("charged twice", "billing"), ("app crashes", "technical|billing")]
        (tmp_path / "tickets.jsonl").write_text(
            "".join(json.dumps({"ticket": t, "expected": e}) + "\n" for t, e in rows), encoding="utf-8"
        )
        env = eval_env(servers, tmp_path / "data")
        env["CONDUCTOR_ENDPOINTS"] = json.dumps({"loopback": {"base_url": loop.url, "models": ["loop-1"]}})
        run = subprocess.run(
            command(tmp_path / "eval.yaml", "--junit", "junit.xml"),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        # contains fails row 2 for both (no answer holds the text "technical|billing"); the regex passes every row.
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.count("pass_rate[one_word] >= 0.5, measured 1") == 2
        sent = loop.requests[0]["json"]["messages"]
        assert sent[0] == {"role": "system", "content": "Be brief."} and sent[1]["content"] in (
            "Team for charged twice?",
            "Team for app crashes?",
        )
        assert servers["openai"].requests[0]["json"]["messages"][0]["content"] == "Answer in one word."
        assert loop.peak_in_flight == 1
        report = suites(tmp_path / "junit.xml")
        assert {name: (s["tests"], s["failures"]) for name, s in report.items()} == {
            "A · loopback/loop-1": (3, 1),
            "B · openai/gpt-5.4-mini": (3, 1),
        }
    finally:
        loop.stop()


JUDGED = """\
name: Judged triage
prompt: "Team for {{ticket}}?"
dataset: tickets.csv
variants:
  - target: openai/gpt-5.4-mini
  - target: anthropic/claude-haiku-5-5
checks:
  - kind: rubric
    name: quality
    rubric: "Is this a sound routing of the ticket {{ticket}}? Answer: {{answer}}"
    judge: {provider: judge, model: judge-1}
thresholds:
  - pass_rate[quality] >= 0.7
"""


def test_a_model_graded_check_in_the_file_is_judged_and_thresholded(servers, tmp_path: Path) -> None:
    """A rubric check judged by a scripted judge endpoint: rows whose ticket says "good" pass."""
    judge = ScriptedJudge(
        lambda prompt: verdict("good" in prompt, 0.9 if "good" in prompt else 0.2, "scripted"), models=["judge-1"]
    )
    judge.start()
    try:
        tickets = ["good one", "good two", "good three", "bad four"]
        path = write_eval(tmp_path, JUDGED)
        (tmp_path / "tickets.csv").write_text("ticket\n" + "".join(f"{t}\n" for t in tickets), encoding="utf-8")
        endpoint = json.dumps({"judge": {"base_url": judge.url, "models": ["judge-1"]}})
        run = run_eval(servers, tmp_path, path, "--junit", "junit.xml", CONDUCTOR_ENDPOINTS=endpoint)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.count("pass_rate[quality] >= 0.7, measured 0.75") == 2
        assert len(judge.prompts()) == 2 * len(tickets)  # one verdict per cell
        report = suites(tmp_path / "junit.xml")
        assert {name: (s["tests"], s["failures"]) for name, s in report.items()} == {
            "A · openai/gpt-5.4-mini": (5, 1),
            "B · anthropic/claude-haiku-5-5": (5, 1),
        }

        path.write_text(JUDGED.replace(">= 0.7", ">= 0.8"), encoding="utf-8")
        failing = run_eval(servers, tmp_path, path, CONDUCTOR_ENDPOINTS=endpoint)
        assert failing.returncode == 1, failing.stdout + failing.stderr
        assert "pass_rate[quality] >= 0.8, measured 0.75" in failing.stderr
    finally:
        judge.stop()


def test_a_setting_that_is_not_valid_exits_2_naming_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CONDUCTOR_MAX_RETRIES", "many")
    path = write_eval(tmp_path, BAD_TEMPERATURE.replace("temperature: 5", "seed: 1"))
    assert main([str(path)]) == 2
    said = capsys.readouterr().err
    assert "could not start: a setting is not valid: max_retries: Input should be a valid integer" in said


def test_ctrl_c_stops_the_run_like_stop_keeping_what_finished(servers, tmp_path: Path) -> None:
    servers["openai"].hold()  # openai's calls wait; anthropic's answer
    process = subprocess.Popen(
        interruptible(EXAMPLE, "--junit", "junit.xml"),
        cwd=tmp_path,
        env=eval_env(servers, tmp_path / "data"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: dict[str, list[str]] = {"out": [], "err": []}
    readers = [
        threading.Thread(target=lambda name=name, pipe=pipe: said[name].extend(pipe), daemon=True)
        for name, pipe in (("out", process.stdout), ("err", process.stderr))
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 300
        anthropic = servers["anthropic"]
        # Every anthropic answer sent in full (so some finished before Ctrl-C), an openai call held.
        while servers["openai"].held < 1 or len(anthropic.requests) < ROWS or anthropic.in_flight:
            assert process.poll() is None, "".join(said["out"] + said["err"])
            assert time.monotonic() < deadline, "the run never reached the upstreams"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        # Released only once the eval has stopped the run (a busy machine may take a while to
        # deliver the signal): released earlier, the held calls and the rows after them would
        # all answer, and nothing would be left to cancel.
        while not any(line.startswith("Stopping") for line in said["err"]):
            assert process.poll() is None, "".join(said["out"] + said["err"])
            assert time.monotonic() < deadline, "the eval never said it was stopping"
            time.sleep(0.1)
        servers["openai"].release()  # the calls in flight answer; the run closes them and takes no more
        process.wait(timeout=300)
        for reader in readers:
            reader.join(timeout=60)
        stdout, stderr = "".join(said["out"]), "".join(said["err"])
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stdout + stderr
    assert "Stopped with Ctrl-C" in stderr
    _url, _experiment_id, run_id = printed_run(stdout)
    log = RequestLog(None, data_dir=tmp_path / "data")
    try:
        store = ExperimentStore(log)
        assert store.run(run_id).status == "stopped"
        cells = store.cells(run_id)
        by_status = {(c.variant, c.status) for c in cells}
        assert len(cells) == 2 * ROWS  # every cell stored: finished or marked cancelled
        assert (1, "ok") in by_status and (0, "cancelled") in by_status
    finally:
        log.close()
    a = suites(tmp_path / "junit.xml")["A · openai/gpt-5.4-mini"]
    assert a["skipped"] >= 1


# --- the file's rules ------------------------------------------------------------------------------


def spec_problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(EvalFileError) as caught:
        parse_spec(read_document(write_eval(tmp_path, text)))
    return [p.text("eval.yaml") for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            BAD_TEMPERATURE.replace("temperature: 5", "temprature: 0"),
            "eval.yaml, line 5: variants[1]: unknown field temprature; a variant takes target",
        ),
        (
            BAD_TEMPERATURE.replace("pass_rate >= 0.9", "pass rate above 0.9"),
            "eval.yaml, line 9: thresholds[0]: 'pass rate above 0.9' is not a threshold; write METRIC OP VALUE",
        ),
        (
            # Checked once the rest of the file is valid (it needs the checks read).
            BAD_TEMPERATURE.replace("pass_rate >= 0.9", "pass_rate[tone] >= 0.9").replace("temperature: 5", "seed: 1"),
            "eval.yaml, line 9: thresholds[0]: no check 'tone'; name one of: contains (or its number)",
        ),
        (
            BAD_TEMPERATURE.replace("pass_rate >= 0.9", "p99_latency_ms <= 10"),
            "eval.yaml, line 9: thresholds[0].metric: unknown metric 'p99_latency_ms'; use one of: pass_rate",
        ),
        (
            BAD_TEMPERATURE.replace("checks: [contains]", "checks: [{kind: contans}]"),
            "eval.yaml, line 7: checks[0].kind: Input should be 'contains'",
        ),
        (
            BAD_TEMPERATURE.replace("dataset: tickets.csv\n", ""),
            "eval.yaml, line 1: dataset: required: add it",
        ),
        (
            BAD_TEMPERATURE.replace("prompt: ", "prompt:\n  system: Be brief {{tone}}\n  user: "),
            "eval.yaml, line 1: prompt: the system message cannot use {{variables}}",
        ),
        (
            BAD_TEMPERATURE.replace("    temperature: 5\n", "    thresholds: [{metric: errors, op: '<', value: x}]\n"),
            "eval.yaml, line 6: variants[1].thresholds[0].value: Input should be a valid number",
        ),
    ],
)
def test_every_problem_names_its_line_field_and_fix(tmp_path: Path, text: str, said: str) -> None:
    found = spec_problems(tmp_path, text)
    assert any(line.startswith(said) for line in found), found


def test_a_json_file_and_a_prompt_reference(tmp_path: Path) -> None:
    (tmp_path / "eval.json").write_text(
        '{\n  "prompt": "support-reply@production",\n  "dataset": "t.csv",\n'
        '  "variants": [{"target": "openai"}, {"target": "anthropic", "temperature": 9}]\n}\n'
    )
    with pytest.raises(EvalFileError) as caught:
        parse_spec(read_document(tmp_path / "eval.json"))
    assert [p.text("eval.json") for p in caught.value.problems] == [
        "eval.json, line 4: variants[1].temperature: Input should be less than or equal to 2"
    ]
    (tmp_path / "eval.json").write_text(
        '{"prompt": "support-reply@production", "dataset": "t.csv", "variants": [{"target": "openai"}, {"target": "anthropic"}]}'
    )
    spec = parse_spec(read_document(tmp_path / "eval.json"))
    assert spec.prompt.ref == "support-reply@production" and spec.prompt.user is None


def stats(**figures: Any) -> VariantStats:
    return VariantStats(variant=1, label="anthropic", **figures)


@pytest.mark.parametrize(
    ("written", "figures", "holds", "measured"),
    [
        ("pass_rate >= 0.9", {"pass_rate": 0.9}, True, 0.9),
        ("pass_rate >= 90%", {"pass_rate": 0.89}, False, 0.89),
        ("p50_latency_ms <= 2000", {"p50_latency_ms": 2000.5}, False, 2000.5),
        ("p50_latency_ms<2000", {"p50_latency_ms": 1999.0}, True, 1999.0),
        ("errors == 0", {"errors": 0}, True, 0.0),
        ("pass_rate >= 0.5", {}, False, None),  # nothing checked: a gate that measured nothing fails
        ("cost_usd <= 1", {"cost_usd": 0.0, "priced": 0}, False, None),  # no price known is not free
    ],
)
def test_thresholds_read_a_variants_figures(written: str, figures: dict, holds: bool, measured: float | None) -> None:
    verdict = judge(Threshold.model_validate(written), stats(**figures))
    assert (verdict.holds, verdict.measured) == (holds, measured)


def test_a_named_checks_threshold_reads_that_checks_pass_rate() -> None:
    threshold = Threshold.model_validate({"metric": "pass_rate", "check": "tone", "op": ">=", "value": "75%"})
    assert threshold.text == "pass_rate[tone] >= 0.75"
    figures = stats(
        pass_rate=0.2, checks=[CheckStats(label="contains", pass_rate=0.2), CheckStats(label="x", pass_rate=0.8)]
    )
    verdict = judge(threshold, figures, check_index=1)
    assert verdict.holds and verdict.measured == 0.8
    assert "FAIL" in judge(Threshold.model_validate("pass_rate[1] >= 0.5"), figures, check_index=0).text


def test_the_printed_link_opens_the_run_in_the_playground(servers, services, shots, tmp_path: Path) -> None:
    """A person follows the link the eval printed: the Experiments page shows that run."""
    from playwright.sync_api import sync_playwright

    from tests.browser_support import Playground, launch, wait_settled

    playground = Playground(tmp_path, config="", name="eval", extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"})
    try:
        run = run_eval(servers, tmp_path, EXAMPLE, "--base-url", playground.url)  # the playground's database
        assert run.returncode == 0, run.stdout + run.stderr
        url, _experiment_id, _run_id = printed_run(run.stdout)
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            try:
                page.goto(url)
                page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=120_000)
                wait_settled(page)
                main = page.get_by_test_id("stMain")
                main.get_by_role("heading", name="Ticket triage").wait_for(timeout=30_000)
                table = main.get_by_test_id("stTable").first.inner_text()
                assert "openai/gpt-5.4-mini" in table and "anthropic/claude-haiku-5-5" in table
                assert f"{2 * ROWS} answers" in main.inner_text()
                shots(page, "eval_run_opened", full_page=True)
            except BaseException:
                shots(page, "failure_eval_run_opened", full_page=True)
                raise
            finally:
                browser.close()
    finally:
        playground.stop()
