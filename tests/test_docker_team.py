"""`make team-test`'s pieces that run without Docker (the target itself brings up seven containers):
the replicated compose file gives every Conductor service the shared database and Redis, the
proxy's configuration keeps browsers on one playground, the relay that lets containers reach the
loopback upstreams carries a streamed answer whole (the real openai SDK through it), and Redis's
MONITOR lines are read as the test needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import yaml

from conductor_core.testing.protocol_servers import OpenAIServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docker"))

import team  # noqa: E402 - docker/team.py, found through the path above

CONDUCTOR_SERVICES = ("gateway-1", "gateway-2", "playground-1", "playground-2", "worker")


def test_every_conductor_service_shares_the_database_and_redis() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.team.yml").read_text())["services"]
    assert set(services) == {*CONDUCTOR_SERVICES, "proxy", "postgres", "redis"}
    for name in CONDUCTOR_SERVICES:
        env = services[name]["environment"]
        assert env["CONDUCTOR_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["CONDUCTOR_REDIS_URL"].startswith("redis://"), name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert services["worker"]["command"] == ["python", "-m", "conductor_core.worker"]
    assert "build" in services["gateway-1"] and "build" not in services["gateway-2"]  # the image is built once
    for name in ("gateway-1", "gateway-2"):
        assert "CONDUCTOR_API_KEY" in services[name]["environment"], name


def test_the_proxy_keeps_a_browser_on_one_playground() -> None:
    caddyfile = (ROOT / "docker" / "team" / "Caddyfile").read_text()
    playgrounds = caddyfile.split(":8080 {", 1)[1].split("\n}", 1)[0]
    assert "reverse_proxy playground-1:8501 playground-2:8501" in playgrounds
    assert "lb_policy cookie conductor_replica" in playgrounds
    assert "health_uri /_stcore/health" in playgrounds


def test_the_relay_carries_a_streamed_answer_whole() -> None:
    with OpenAIServer(reply="one two three four", chunk_delay_s=0.01) as server:
        relay = team.Relay("127.0.0.1", server.port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{relay.port}/v1", api_key="k", max_retries=0, timeout=30)
        model = server.models[0]
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "one two three four"
        whole = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert whole.choices[0].message.content == "one two three four"
        assert team.generations(server) == 2
        client.close()


def test_monitor_lines_name_the_client_the_command_and_its_keys() -> None:
    line = (
        '1701965470.123456 [0 172.18.0.5:41234] "EVALSHA" "ab12" "2" "conductor:breaker:openai" "x:outcomes" "3000"\n'
    )
    assert team.parse_monitor_line(line) == (
        1701965470.123456,
        "172.18.0.5",
        ["evalsha", "ab12", "2", "conductor:breaker:openai", "x:outcomes", "3000"],
    )
    stamp, client, words = team.parse_monitor_line('1.5 [0 lua] "HSET" "conductor:breaker:openai" "state" "open"') or ()
    assert (client, words[0]) == ("lua", "hset")
    assert team.parse_monitor_line('2.0 [0 10.0.0.2:1] "EVAL" "return 1" "0"')[2][0] == "evalsha"
    assert team.parse_monitor_line("OK\n") is None


def test_the_scripts_parse_and_the_compose_command_is_required() -> None:
    for script in ("lib.sh", "team.sh", "smoke-test.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "docker" / script)]).returncode == 0, script
    ran = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "team.py"), "test"], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 2 and "give the compose command after --" in ran.stderr
