"""`calico-libnetwork node status` (issue 21) on two lab hosts whose node
agents run BIRD (CALICO_NETWORKING_BACKEND=bird) from a real etcd: the
node-to-node mesh over IPv4 and IPv6 comes up, and BGPPeers applied with the
CLI to a third namespace that refuses port 179 (a global IPv4 peer and a
node-specific IPv6 one) stay in Active.  The commands run in the hosts'
namespaces as a user runs them, and print calicoctl's tables byte for byte
(timestamps aside).  The layout of wrapped cells and the parsing of BIRD's
rows are checked on fixed input as well.  Last, the BGP line of `status`:
the agent's BIRD status file and the sessions on BIRD's socket."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.bgp.daemon import BirdPaths
from agent.bgp.sessions import UnexpectedOutput, parse_protocols
from agent.status_file import write_status
from plugin.cli import bgp_status
from plugin.cli.node_status import peers_table
from tests.lab import Lab
from tests.lab.common import LabProcess, in_netns, wait_until
from tests.lab.etcd import EtcdServer

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

H1, H2, H1_V6, H2_V6 = "10.251.0.1", "10.251.0.2", "fd51::1", "fd51::2"
# The third namespace: no BGP speaker, so it refuses port 179; routed via h1.
ROUTER, ROUTER_V6 = "10.251.1.3", "fd52::3"
PEERS = f"""
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: rack-router}}
spec: {{peerIP: {ROUTER}, asNumber: 65001}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: h1-router-v6}}
spec: {{node: ns-h1, peerIP: "{ROUTER_V6}", asNumber: 65001}}
"""


class Host:
    """A lab host: its namespace, its run directory, a node agent."""

    def __init__(self, name: str, netns, run_dir: Path, etcd: str):
        self.name, self.netns, self.run_dir, self.etcd = name, netns, run_dir, etcd
        self.agent = None

    def env(self, **more) -> dict:
        # Policy and names are not what is tested here.
        return {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "ETCD_ENDPOINTS": self.etcd,
                "NODENAME": self.name, "CALICO_LIBNETWORK_RUN_DIR": str(self.run_dir),
                "CALICO_NETWORKING_BACKEND": "bird", "CALICO_LIBNETWORK_POLICY": "false",
                "CALICO_LIBNETWORK_DNS": "false", **more}

    def start_agent(self, ip: str, ip6: str) -> None:
        """A node agent as `run` starts it."""
        self.agent = LabProcess(
            [sys.executable, "-P", "-m", "plugin.cli", "agent"], self.run_dir / "agent.log",
            self.env(IP=ip, IP6=ip6), self.netns).start()

    def cli(self, *argv, run_dir: Path | None = None, stdin: str | None = None):
        env = self.env(**({"CALICO_LIBNETWORK_RUN_DIR": str(run_dir)} if run_dir else {}))
        return subprocess.run(in_netns([sys.executable, "-m", "plugin.cli", *argv], self.netns),
                              input=stdin, capture_output=True, text=True, env=env,
                              timeout=90, cwd=REPO)

    def node_status(self, run_dir: Path | None = None):
        return self.cli("node", "status", run_dir=run_dir)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """(h1, h2, router): agents running BIRD on h1 and h2, BGPPeers applied."""
    with Lab() as lab:
        names = ("ns-h1", "ns-h2", "ns-router")
        h1_ns, h2_ns, router_ns = (lab.netns(n) for n in names)
        lab.veth(h1_ns, "eth0", h2_ns, "eth0", f"{H1}/24", f"{H2}/24")
        lab.veth(h1_ns, "eth1", router_ns, "eth0", "10.251.1.1/24", f"{ROUTER}/24")
        for netns, ifname, address in ((h1_ns, "eth0", f"{H1_V6}/64"),
                                       (h2_ns, "eth0", f"{H2_V6}/64"),
                                       (h1_ns, "eth1", "fd52::1/64"),
                                       (router_ns, "eth0", f"{ROUTER_V6}/64")):
            subprocess.run(["ip", "-n", netns, "addr", "add", address, "dev", ifname, "nodad"],
                           check=True)
        # Replies to BIRD's source address (the node's IP) go back through h1.
        lab.route(router_ns, "10.251.0.0/24", via="10.251.1.1")
        subprocess.run(["ip", "-n", router_ns, "-6", "route", "add", "fd51::/64", "via",
                        "fd52::1"], check=True)
        etcd = EtcdServer(host=H1, netns=h1_ns)
        h1 = Host("ns-h1", h1_ns, tmp_path_factory.mktemp("h1"), etcd.endpoints)
        h2 = Host("ns-h2", h2_ns, tmp_path_factory.mktemp("h2"), etcd.endpoints)
        router = Host("ns-router", router_ns, tmp_path_factory.mktemp("router"), etcd.endpoints)
        try:
            etcd.start()
            h1.start_agent(f"{H1}/24", f"{H1_V6}/64")
            h2.start_agent(f"{H2}/24", f"{H2_V6}/64")
            applied = h1.cli("apply", "-f", "-", stdin=PEERS)
            assert applied.returncode == 0, applied.stderr
            yield h1, h2, router
        finally:
            for host in (h1, h2):
                if host.agent:
                    host.agent.stop()  # and its BIRD with it
            etcd.close()


_TIME = re.compile(r"\b\d\d:\d\d:\d\d\b")


def _peers_in_order(text: str) -> str:
    """text with each table's rows sorted: BIRD lists its protocols in the
    order of its config, which is the agent's business."""
    out, rows = [], []
    for line in text.split("\n"):
        if line.startswith("| ") and not line.startswith("| PEER ADDRESS"):
            if line.startswith("|  "):  # a wrapped cell's next line: same row
                rows[-1] += "\n" + line
            else:
                rows.append(line)
            continue
        out += sorted(rows)
        rows = []
        out.append(line)
    return "\n".join(out)


def _settled(h1) -> str | None:
    """node status once the mesh is up and both router peers were refused."""
    out = h1.node_status().stdout
    return out if out.count("Established") == 2 and out.count("Active Socket: Connection") == 2 \
        else None


@needs_root
def test_mesh_established_and_router_refused(hosts):
    h1, _, _ = hosts
    seen = []
    assert wait_until(lambda: seen.append(_settled(h1)) or seen[-1], 60), \
        (h1.node_status(), h1.agent.log_tail())
    assert _peers_in_order(_TIME.sub("hh:mm:ss", seen[-1])) == _peers_in_order("""\
Calico process is running.

IPv4 BGP status
+--------------+-------------------+-------+----------+--------------------------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |              INFO              |
+--------------+-------------------+-------+----------+--------------------------------+
| 10.251.0.2   | node-to-node mesh | up    | hh:mm:ss | Established                    |
| 10.251.1.3   | global            | start | hh:mm:ss | Active Socket: Connection      |
|              |                   |       |          | refused                        |
+--------------+-------------------+-------+----------+--------------------------------+

IPv6 BGP status
+--------------+-------------------+-------+----------+--------------------------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |              INFO              |
+--------------+-------------------+-------+----------+--------------------------------+
| fd51::2      | node-to-node mesh | up    | hh:mm:ss | Established                    |
| fd52::3      | node specific     | start | hh:mm:ss | Active Socket: Connection      |
|              |                   |       |          | refused                        |
+--------------+-------------------+-------+----------+--------------------------------+

""")
    result = h1.node_status()
    assert result.returncode == 0 and result.stderr == ""


@needs_root
def test_status_counts_established_sessions(hosts):
    h1, _, _ = hosts
    assert wait_until(lambda: _settled(h1), 60)
    bgp = json.loads(h1.cli("status", "-o", "json").stdout)["bgp"]
    assert {k: bgp.get(k) for k in ("backend", "bird", "sessions", "established")} == {
        "backend": "bird", "bird": "running", "sessions": 4, "established": 2}
    assert bgp_status.line(bgp) == f"BIRD running (pid {bgp['pid']}), 2 of 4 sessions " \
                                   "Established (`calico-libnetwork node status`)"


@needs_root
def test_peer_down_while_the_other_agent_is_stopped(hosts):
    h1, h2, _ = hosts
    assert wait_until(lambda: _settled(h1), 60)
    h2.agent.stop()  # its BIRD stops with it
    try:
        assert wait_until(lambda: h1.node_status().stdout.count("Established") == 0, 30)
        rows = [line for line in h1.node_status().stdout.splitlines() if "mesh" in line]
        # h1 has the lower address: it waits for h2 (Passive), as calico/node's mesh does.
        down = re.compile(r"\| \S+ +\| node-to-node mesh \| start \| .* \| "
                          r"(Active|Connect|Idle|Passive)")
        assert len(rows) == 2 and all(down.match(row) for row in rows), rows
    finally:
        h2.start_agent(f"{H2}/24", f"{H2_V6}/64")
    assert wait_until(lambda: _settled(h1), 90), (h1.node_status().stdout,
                                                  h2.agent.log_tail(30))


@needs_root
def test_bird_not_running(hosts, tmp_path):
    """calicoctl's words on stdout; on stderr, why (the BGP line of status)."""
    h1, _, _ = hosts
    result = h1.node_status(run_dir=tmp_path)  # no control socket there
    assert result.returncode == 1
    assert result.stdout == ("Calico process is running.\n\n"
                             "The BGP backend process (BIRD) is not running.\n\n")
    assert result.stderr == "calico-libnetwork: BGP: BIRD not started yet (is the node " \
                            "agent running?)\n"
    _agent_wrote(tmp_path, {"backend": "bird", "bird": "running", "pid": 4242})
    result = h1.node_status(run_dir=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"calico-libnetwork: BGP: BIRD not answering (BIRD's control "
                             f"socket {tmp_path}/bird/bird.ctl: [Errno 2] No such file or "
                             "directory)\n")


@needs_root
def test_no_node_agent(hosts):
    _, _, router = hosts
    result = router.node_status()
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

def _agent_wrote(run_dir: Path, status: dict) -> None:
    """BIRD's status file as agent/bgp/daemon.py writes it."""
    write_status(BirdPaths(str(run_dir)).status, status)


def _bgp_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("BGP:"))[4:].strip()


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
