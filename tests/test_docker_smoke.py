"""The Docker smoke test's host ports, without Docker (`make docker-test` itself builds an image
for minutes): by default Docker picks free ones and the URLs are read back from `docker port`;
ports named in DOCKER_TEST_PORTS are checked first, and one that another program holds is named
with how to choose others (it failed with "address already in use" on 127.0.0.1:8622).

docker/smoke.py is run as docker/smoke-test.sh runs it: a subprocess, its exit code and output."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def smoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "smoke.py"), *args], capture_output=True, text=True, timeout=60
    )


def test_a_port_another_program_listens_on_is_named_with_how_to_choose_others() -> None:
    with socket.socket() as taken, socket.socket() as spare:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
        spare.close()  # a port nothing holds now
        port = taken.getsockname()[1]
        ran = smoke("ports-free", str(free), str(port))
    assert ran.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in ran.stderr
    assert "DOCKER_TEST_PORTS" in ran.stderr and "Docker picks free ones" in ran.stderr


def test_free_ports_pass() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
    ran = smoke("ports-free", str(free))
    assert ran.returncode == 0, ran.stderr


def test_the_url_of_a_port_docker_chose_is_read_from_docker_port() -> None:
    assert smoke("published", "127.0.0.1:49153\n").stdout.strip() == "http://127.0.0.1:49153"
    # Published on every interface, IPv4 and IPv6 (one line each): the loopback URL of the IPv4 one.
    assert smoke("published", "[::]:49154\n0.0.0.0:49154\n").stdout.strip() == "http://127.0.0.1:49154"
    missing = smoke("published", "")
    assert missing.returncode == 1 and "no IPv4 host port" in missing.stderr


def test_the_smoke_test_lets_docker_choose_unless_told() -> None:
    """The shell script publishes on an empty host port by default (`127.0.0.1::8000`: Docker
    chooses) and reads the URLs back; fixed ports only come from DOCKER_TEST_PORTS."""
    script = (ROOT / "docker" / "smoke-test.sh").read_text()
    assert '<<<"${DOCKER_TEST_PORTS:-}"' in script
    assert "8620" not in script.split("read -r PORT_GATEWAY")[1].split("\n")[0]
    for published in ('port "$SOLO" 8000', "port gateway 8000", "port playground 8501"):
        assert published in script
    assert subprocess.run(["bash", "-n", str(ROOT / "docker" / "smoke-test.sh")]).returncode == 0


def test_the_image_compiles_the_llama_cpp_python_that_requirements_pin() -> None:
    """The Dockerfile installs llama-cpp-python in a layer of its own (a change to another pin
    must not recompile llama.cpp), so its version is written there too: the two must agree."""
    import re

    pinned = re.search(r"^llama-cpp-python==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    built = re.search(r"^ARG LLAMA_CPP_PYTHON=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert pinned and built, "requirements.txt or the Dockerfile no longer names llama-cpp-python's version"
    assert built.group(1) == pinned.group(1), "update ARG LLAMA_CPP_PYTHON in the Dockerfile to the pin"
