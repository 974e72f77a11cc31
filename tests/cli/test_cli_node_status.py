"""`calico-libnetwork node status` (issue 21) against real BIRD 2 daemons:
two lab hosts whose BIRDs peer over IPv4 (mesh) and IPv6 (node specific),
and a global peer that refuses the connection; a real node agent in the
first host's namespace, with its own etcd there.  The command runs in that
namespace as a user runs it, and prints calicoctl's tables byte for byte
(timestamps aside).  The layout of wrapped cells and the parsing of BIRD's
rows are checked on fixed input as well.  Last, the BGP line of `status`:
the agent's BIRD status file and the sessions on BIRD's socket."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.bgp.daemon import BirdPaths
from agent.bgp.sessions import UnexpectedOutput, parse_protocols
from agent.policy.engine import write_status
from plugin.cli.node_status import peers_table
from tests.lab import Lab
from tests.lab.common import LabProcess, in_netns, wait_until
from tests.lab.etcd import EtcdServer

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

H1, H2, REFUSING = "10.251.0.1", "10.251.0.2", "10.251.0.3"
H1_V6, H2_V6 = "fd51::1", "fd51::2"
# Quick retries so the sessions settle in seconds; the global peer retries
# slowly, so that it stays in Active between two looks.
_TIMERS = "connect delay time 1; connect retry time 1; error wait time 1, 2;"
H1_CONF = f"""
router id {H1};
timeformat protocol iso short;
protocol device {{ scan time 2; }}
protocol bgp Mesh_10_251_0_2 {{
  local {H1} as 64512; neighbor {H2} as 64512; {_TIMERS}
  ipv4 {{ import all; export none; }};
}}
protocol bgp Global_10_251_0_3 {{
  local {H1} as 64512; neighbor {REFUSING} as 65001; multihop;
  connect delay time 1; connect retry time 60;
  ipv4 {{ import all; export none; }};
}}
protocol bgp Node_fd51__2 {{
  local {H1_V6} as 64512; neighbor {H2_V6} as 64512; {_TIMERS}
  ipv6 {{ import all; export none; }};
}}
"""
# strict bind: H2 listens on its own addresses only, so REFUSING (also
# H2's) refuses port 179.
H2_CONF = f"""
router id {H2};
protocol device {{ scan time 2; }}
protocol bgp Mesh_10_251_0_1 {{
  local {H2} as 64512; neighbor {H1} as 64512; strict bind on; {_TIMERS}
  ipv4 {{ import all; export none; }};
}}
protocol bgp Node_fd51__1 {{
  local {H2_V6} as 64512; neighbor {H1_V6} as 64512; strict bind on; {_TIMERS}
  ipv6 {{ import all; export none; }};
}}
"""


class Host:
    def __init__(self, lab, netns, run_dir: Path):
        self.lab, self.netns, self.run_dir = lab, netns, run_dir
        self.processes = []

    def start(self, argv, log, env=None):
        process = LabProcess(argv, self.run_dir / log, env, self.netns).start()
        self.processes.append(process)
        return process

    def bird(self, conf: str):
        (self.run_dir / "bird").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "bird.conf").write_text(conf)
        return self.start(["bird", "-f", "-c", str(self.run_dir / "bird.conf"),
                           "-s", str(self.run_dir / "bird" / "bird.ctl")], "bird.log")

    def node_status(self, run_dir: Path | None = None):
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "NODENAME": "bgp-h1",
               "CALICO_LIBNETWORK_RUN_DIR": str(run_dir or self.run_dir)}
        return subprocess.run(in_netns([sys.executable, "-m", "plugin.cli", "node", "status"],
                                       self.netns),
                              capture_output=True, text=True, env=env, timeout=30, cwd=REPO)

    def stop(self):
        for process in self.processes:
            process.stop()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """(h1, h2): BIRDs peering, and a node agent on h1."""
    with Lab() as lab:
        h1 = Host(lab, lab.netns("nodestatus-h1"), tmp_path_factory.mktemp("h1"))
        h2 = Host(lab, lab.netns("nodestatus-h2"), tmp_path_factory.mktemp("h2"))
        lab.veth(h1.netns, "eth0", h2.netns, "eth0", f"{H1}/24", f"{H2}/24")
        lab.addr(h2.netns, "eth0", f"{REFUSING}/24")
        for host, address in ((h1, H1_V6), (h2, H2_V6)):
            subprocess.run(["ip", "-n", host.netns, "addr", "add", f"{address}/64", "dev",
                            "eth0", "nodad"], check=True)
        etcd = EtcdServer(netns=h1.netns)
        try:
            etcd.start()
            # A node agent as `run` starts it; vxlan: it routes from etcd and
            # runs no BIRD of its own (the test's BIRD is on its socket).
            h1.start([sys.executable, "-P", "-m", "plugin.cli", "agent"], "agent.log", {
                "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO),
                "ETCD_ENDPOINTS": etcd.endpoints, "NODENAME": "bgp-h1", "IP": f"{H1}/24",
                "CALICO_LIBNETWORK_RUN_DIR": str(h1.run_dir), "CALICO_NETWORKING_BACKEND":
                "vxlan", "CALICO_LIBNETWORK_POLICY": "false", "CALICO_LIBNETWORK_DNS": "false"})
            h1.bird(H1_CONF)
            h2.bird(H2_CONF)
            yield h1, h2
        finally:
            h1.stop()
            h2.stop()
            etcd.close()


def _settled(h1) -> bool:
    out = h1.node_status().stdout
    return out.count("Established") == 2 and "Active Socket: Connection" in out


@needs_root
def test_peers_established_and_refused(hosts):
    h1, _ = hosts
    assert wait_until(lambda: _settled(h1), 30), h1.node_status()
    result = h1.node_status()
    assert result.returncode == 0 and result.stderr == ""
    assert re.sub(r"\b\d\d:\d\d:\d\d\b", "hh:mm:ss", result.stdout) == """\
Calico process is running.

IPv4 BGP status
+--------------+-------------------+-------+----------+--------------------------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |              INFO              |
+--------------+-------------------+-------+----------+--------------------------------+
| 10.251.0.2   | node-to-node mesh | up    | hh:mm:ss | Established                    |
| 10.251.0.3   | global            | start | hh:mm:ss | Active Socket: Connection      |
|              |                   |       |          | refused                        |
+--------------+-------------------+-------+----------+--------------------------------+

IPv6 BGP status
+--------------+---------------+-------+----------+-------------+
| PEER ADDRESS |   PEER TYPE   | STATE |  SINCE   |    INFO     |
+--------------+---------------+-------+----------+-------------+
| fd51::2      | node specific | up    | hh:mm:ss | Established |
+--------------+---------------+-------+----------+-------------+

"""


@needs_root
def test_peer_down_when_the_other_bird_stops(hosts):
    h1, h2 = hosts
    h2.processes.pop(0).stop()  # h2's BIRD
    try:
        assert wait_until(lambda: "Established" not in h1.node_status().stdout, 30)
        rows = [line for line in h1.node_status().stdout.splitlines() if "mesh" in line]
        assert re.match(r"\| 10\.251\.0\.2   \| node-to-node mesh \| start \| .* \| "
                        r"(Active|Connect|Idle)", rows[0]), rows
    finally:
        h2.bird(H2_CONF)
    assert wait_until(lambda: _settled(h1), 30), h1.node_status()


@needs_root
def test_bird_not_running(hosts, tmp_path):
    """calicoctl's words on stdout; on stderr, why (the BGP line of status)."""
    h1, _ = hosts
    result = h1.node_status(run_dir=tmp_path)  # no control socket there
    assert result.returncode == 1
    assert result.stdout == ("Calico process is running.\n\n"
                             "The BGP backend process (BIRD) is not running.\n\n")
    assert result.stderr == "calico-libnetwork: BGP: off (CALICO_NETWORKING_BACKEND=vxlan)\n"
    _agent_wrote(tmp_path, {"backend": "bird", "bird": "running", "pid": 4242})
    result = h1.node_status(run_dir=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"calico-libnetwork: BGP: BIRD not answering (BIRD's control "
                             f"socket {tmp_path}/bird/bird.ctl: [Errno 2] No such file or "
                             "directory)\n")


@needs_root
def test_no_node_agent(hosts):
    _, h2 = hosts  # BIRD runs there, but no node agent
    result = h2.node_status()
    assert result.returncode == 1
    assert (result.stdout, result.stderr) == ("", "Calico process is not running.\n")


# -- BIRD's rows and calicoctl's layout, from fixed input ---------------------

def _reply(*rows: str) -> list[tuple[str, str]]:
    return ([("2002", "Name       Proto      Table      State  Since         Info")]
            + [("1002", row) for row in rows] + [("0000", "")])


def test_rows_as_calicoctl_reads_them():
    found = parse_protocols(_reply(
        "device1    Device     ---        up     11:07:11",
        "Mesh_10_0_0_2 BGP     ---        up     11:07:16      Established",
        "Node_10_0_0_3_port_1179 BGP  ---   start  11:07:11      Active   Socket: Connection  "
        "refused",
        "Global_fd00__1 BGP    ---        up     11:07:16      Established",
        "Mesh_10_0_0_4 BGP     ---        down   11:07:16",  # 5 columns: calicoctl skips it
        "Local_Workload_10_0_0_5 BGP  --- up     11:07:16      Established",
        "static1    Static     master4    up     11:07:11"))
    assert [(s.address, s.peer_type, s.state, s.info, s.version, s.established)
            for s in found] == [
        ("10.0.0.2", "node-to-node mesh", "up", "Established", 4, True),
        ("10.0.0.3.port.1179", "node specific", "start", "Active Socket: Connection refused",
         4, False),
        ("fd00::1", "global", "up", "Established", 6, True)]


@pytest.mark.parametrize("reply, message", [
    ([("2002", "Name Proto Table State Since")], "unknown BIRD table output format"),
    ([("1006", "  BGP state: Established")], "unexpected output line from BIRD"),
])
def test_unexpected_reply(reply, message):
    with pytest.raises(UnexpectedOutput, match=message):
        parse_protocols(reply)


def test_long_info_wraps_and_no_peers():
    found = parse_protocols(_reply(
        "Mesh_10_0_0_2 BGP ---  start  11:07:16  Active  Received: Bad peer AS: 64513 "
        "and a very long explanation"))
    # Minimal raggedness, not greedy: greedy would fill "... Bad peer AS:".
    assert peers_table(found, 4).splitlines()[3:6] == [
        "| 10.0.0.2     | node-to-node mesh | start | 11:07:16 | Active Received: Bad peer      |",
        "|              |                   |       |          | AS: 64513 and a very long      |",
        "|              |                   |       |          | explanation                    |"]
    assert peers_table([], 6) == "No IPv6 peers found.\n"


# -- the BGP line of `status` -------------------------------------------------

def _agent_wrote(run_dir: Path, status: dict, socket: Path | None = None) -> None:
    """run_dir as an agent under CALICO_NETWORKING_BACKEND=bird leaves it:
    BIRD's status file (as agent/bgp/daemon.py writes it) and its socket."""
    paths = BirdPaths(str(run_dir))
    write_status(paths.status, status)
    if socket is not None:
        os.symlink(socket, paths.socket)


def _bgp_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("BGP:"))[4:].strip()


@needs_root
def test_status_counts_established_sessions(hosts, cli, tmp_path, monkeypatch):
    h1, _ = hosts
    assert wait_until(lambda: _settled(h1), 30), h1.node_status()
    _agent_wrote(tmp_path, {"backend": "bird", "bird": "running", "pid": 4242},
                 h1.run_dir / "bird" / "bird.ctl")
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path))
    report = cli("status", "-o", "json").json()
    assert report["bgp"] == {"backend": "bird", "bird": "running", "pid": 4242,
                             "log": f"{tmp_path}/bird/bird.log", "sessions": 3,
                             "established": 2}
    assert not any("BIRD" in p for p in report["problems"])
    assert _bgp_line(cli("status").out) == "BIRD running (pid 4242), 2 of 3 sessions " \
                                          "Established (`calico-libnetwork node status`)"


def test_status_bird_not_answering_is_a_problem(cli, tmp_path, monkeypatch):
    _agent_wrote(tmp_path, {"backend": "bird", "bird": "running", "pid": 4242})
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path))
    result = cli("status")
    assert result.code == 1
    assert _bgp_line(result.out) == f"BIRD not answering (BIRD's control socket " \
                                    f"{tmp_path}/bird/bird.ctl: [Errno 2] No such file or " \
                                    "directory)"
    assert f"calico-libnetwork: unhealthy: BIRD does not answer (BIRD's control socket " \
           f"{tmp_path}/bird/bird.ctl: [Errno 2] No such file or directory); see " \
           f"{tmp_path}/bird/bird.log" in result.err


@pytest.mark.parametrize("status, env, shown", [
    (None, None, "off (CALICO_NETWORKING_BACKEND=vxlan)"),
    (None, "none", "off (CALICO_NETWORKING_BACKEND=none)"),
    ({"backend": "vxlan", "bird": "off"}, "bird", "off (CALICO_NETWORKING_BACKEND=vxlan)"),
    (None, "bird", "BIRD not started yet (is the node agent running?)"),
    ({"backend": "bird", "bird": "not started",
      "reason": "another BIRD (pid 7: bird -c /etc/bird.conf) runs in this network namespace"},
     None, "BIRD not started: another BIRD (pid 7: bird -c /etc/bird.conf) runs in this "
           "network namespace"),
])
def test_status_bgp_line(cli, tmp_path, monkeypatch, status, env, shown):
    """What the agent wrote wins over this command's own environment."""
    if status is not None:
        _agent_wrote(tmp_path, status)
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path))
    if env is not None:
        monkeypatch.setenv("CALICO_NETWORKING_BACKEND", env)
    result = cli("status")
    assert _bgp_line(result.out) == shown
    assert "BIRD" not in result.err  # none of these is a problem
