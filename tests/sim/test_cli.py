"""`graph-gateway sim` and `--version` as real subprocesses of the current interpreter."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway import __version__
from tests.sim.support import Graph, campaign_params, create

# Python start-up plus importing aiohttp can be slow on a loaded CI machine.
START_TIMEOUT_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 10.0
CAMPAIGN = campaign_params("cli campaign")
GOOD_TOML = """\
seed = 42

[[accounts]]
id = "act_4001"
name = "Rehearsal Account"
currency = "EUR"

[[tokens]]
token = "rehearsal-token"
user_id = "20001"
accounts = ["act_4001"]
"""


def gateway_cmd(*args: str) -> list[str]:
    """The CLI run by this venv's interpreter (what the `graph-gateway` script runs)."""
    return [sys.executable, "-m", "gateway", *args]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # our own CLI with arguments from this file
        gateway_cmd(*args),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        cwd=cwd,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


@dataclass
class SimProcess:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def read_banner(self) -> str:
        """stdout up to and including the banner's last line ("Control API: ...")."""
        assert self.proc.stdout is not None
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Control API:"):
                break
        return "".join(lines)

    def wait_until_listening(self) -> None:
        """Poll the port. Only needed because the banner comes before the bind (see
        test_sim_accepts_connections_as_soon_as_the_banner_is_printed)."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not accepts_connections(self.port):
            assert self.proc.poll() is None, "the simulator exited"
            assert time.monotonic() < deadline, "the simulator never accepted a connection"
            time.sleep(0.01)


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """`start_sim(*args)`: `python -m gateway sim --port <free> *args`; stopped afterwards."""
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        port = free_port()
        # stderr (access log) goes to a file: an unread pipe could fill up and block the server.
        with (tmp_path / f"sim-{port}.stderr").open("w") as stderr:
            proc = subprocess.Popen(  # noqa: S603  # our own CLI with arguments from this file
                gateway_cmd("sim", "--port", str(port), *args),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=tmp_path,
            )
        sim = SimProcess(proc, port)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait(EXIT_TIMEOUT_SECONDS)
        if sim.proc.stdout is not None:
            sim.proc.stdout.close()


async def banner_of(sim: SimProcess) -> str:
    return await asyncio.wait_for(asyncio.to_thread(sim.read_banner), START_TIMEOUT_SECONDS)


async def test_sim_prints_a_banner_and_serves_graph_until_terminated(
    start_sim: Callable[..., SimProcess], http: aiohttp.ClientSession
) -> None:
    """`sim --seed 3` lists accounts and tokens, creates a campaign, and stops on SIGTERM."""
    sim = start_sim("--seed", "3")
    banner = await banner_of(sim)

    assert f"listening on {sim.url}" in banner
    for account in ("act_1001", "act_1002", "act_2001", "act_3001"):
        assert account in banner
    for token in ("sim-token-alice", "sim-token-expired", "sim-token-readonly"):
        assert token in banner
    await asyncio.to_thread(sim.wait_until_listening)

    graph = Graph(http, sim.url)
    reply = await create(graph, "campaigns", CAMPAIGN)
    assert reply.status == 200
    campaign_id = reply.body["id"]
    objects = (await graph.control("GET", "objects")).body["objects"]
    state = (await graph.control("GET", "state")).body

    assert [o["id"] for o in objects] == [campaign_id]
    assert state["seed"] == 3
    sim.proc.terminate()
    assert await asyncio.to_thread(sim.proc.wait, EXIT_TIMEOUT_SECONDS) == 0


async def test_sim_accepts_connections_as_soon_as_the_banner_is_printed(
    start_sim: Callable[..., SimProcess],
) -> None:
    """The banner says "listening on": by the time it is printed, the port must accept."""
    sim = start_sim()
    await banner_of(sim)

    assert accepts_connections(sim.port), "banner printed before the port was bound"


def test_sim_on_a_port_in_use_fails_without_claiming_to_listen(tmp_path: Path) -> None:
    """If the port is taken, `sim` exits non-zero and never prints "listening on"."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = run_cli("sim", "--port", str(port), cwd=tmp_path)

    assert result.returncode != 0
    assert "listening on" not in result.stdout
    assert "Traceback" not in result.stderr
    assert str(port) in result.stderr


def test_sim_with_a_bad_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    """An invalid TOML configuration: exit status 2, every problem on stderr, no banner."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "\n".join(
            [
                'default_version = "25"',
                "colour = 'red'",
                "[[accounts]]",
                'id = "1234"',
                'name = "No prefix"',
                "[rate_limits]",
                'throttle_error = "999"',
                "max_score = 0",
            ]
        )
    )

    result = run_cli("sim", "--config", str(bad), "--port", str(free_port()), cwd=tmp_path)

    assert result.returncode == 2
    assert "listening on" not in result.stdout
    assert "invalid simulator configuration" in result.stderr
    for needle in ("default_version", "colour", "accounts[0].id", "throttle_error", "max_score"):
        assert needle in result.stderr, (needle, result.stderr)


def test_sim_with_unparseable_toml_exits_2(tmp_path: Path) -> None:
    """A file that is not TOML is a configuration problem, not a traceback."""
    bad = tmp_path / "broken.toml"
    bad.write_text("seed = = 3\n")

    result = run_cli("sim", "--config", str(bad), cwd=tmp_path)

    assert result.returncode == 2
    assert "broken.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_sim_with_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not a traceback."""
    result = run_cli("sim", "--config", str(tmp_path / "absent.toml"), cwd=tmp_path)

    assert result.returncode == 2
    assert "absent.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_sim_with_a_bad_fault_rule_in_the_config_exits_2_listing_it(tmp_path: Path) -> None:
    """Fault rules in the file are validated with the rest: exit 2, problem listed, no banner."""
    bad = tmp_path / "bad-fault.toml"
    bad.write_text('[[faults]]\nid = "oops"\nkind = "explode"\n')

    result = run_cli("sim", "--config", str(bad), "--port", str(free_port()), cwd=tmp_path)

    assert result.returncode == 2, result.stderr[-2000:]
    assert "oops" in result.stderr
    assert "kind" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stdout


async def test_sim_with_a_good_config_makes_its_extra_account_usable(
    start_sim: Callable[..., SimProcess], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An extra account and token from the file are listed and usable; --seed beats the file."""
    good = tmp_path / "good.toml"
    good.write_text(GOOD_TOML)
    sim = start_sim("--config", str(good), "--seed", "5")
    banner = await banner_of(sim)

    assert "act_4001" in banner
    assert "act_1001" in banner, "extra accounts are added to the defaults"
    assert "rehearsal-token" in banner
    await asyncio.to_thread(sim.wait_until_listening)

    graph = Graph(http, sim.url)
    reply = await create(graph, "campaigns", CAMPAIGN, account="act_4001", token="rehearsal-token")
    assert reply.status == 200, reply.text
    reply = await create(graph, "campaigns", CAMPAIGN, token="rehearsal-token")
    assert reply.status == 400, "the token is limited to act_4001"
    assert reply.body["error"]["error_subcode"] == 33
    state = (await graph.control("GET", "state")).body

    assert state["seed"] == 5
    [account] = [a for a in state["accounts"] if a["id"] == "act_4001"]
    assert account["currency"] == "EUR"


def test_version_flag_prints_the_version(tmp_path: Path) -> None:
    """`graph-gateway --version` prints the package version and exits 0."""
    result = run_cli("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.strip() == f"graph-gateway {__version__}"


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    """Without a command the CLI prints usage and exits 2 (argparse's convention)."""
    result = run_cli(cwd=tmp_path)

    assert result.returncode == 2
    assert "usage: graph-gateway" in result.stderr
