"""A published port on a Calico network against one on a user-defined
bridge: connection rate and throughput through it, and `docker run -p`.

Starts a lab Docker host (dockerd, etcd and `calico-libnetwork run` with
its defaults) and a client namespace linked to it, then, in rounds whose
order is drawn at random (--seed repeats it):
- connections: new TCP connections per second from the client to the host's
  address and the published port (connect, close), --seconds each;
- throughput: bytes per second one TCP connection carries to the container;
- docker run: seconds `docker run -d -p <port>:80 busybox` takes.
Printed: each network's median, and the ratio Calico / bridge (ratio of the
medians) with its 95 % interval over the paired rounds.

    sudo .venv/bin/python bench/published_ports.py [--rounds 10] [--seconds 2]

The servers in the containers and the client run as Python processes in
their namespaces (nsenter), alike for both networks.  Not a test.
"""

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stats import bootstrap_interval, ratio_of_medians  # noqa: E402
from tests.e2e.calico_host import CALICO as CALICO_OPTIONS  # noqa: E402
from tests.e2e.calico_host import container_ip, start_plugin  # noqa: E402
from tests.lab import Lab, LabProcess  # noqa: E402
from tests.lab.common import run_dir, wait_until  # noqa: E402
from tests.lab.dockerd import DockerHost  # noqa: E402
from tests.lab.images import import_busybox  # noqa: E402

NETWORKS = {"calinet": 8080, "usernet": 8081}  # network -> its container's host port
HOST, CLIENT = "10.0.41.1", "10.0.41.2"
SINK = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(1024)
def drain(c):
    while c.recv(1 << 20):
        pass
    c.close()
print("ready", flush=True)
while True:
    c, _ = s.accept(); threading.Thread(target=drain, args=(c,), daemon=True).start()
"""
CLIENT_CODE = f"""
import socket, sys, time
what, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.perf_counter() + seconds
if what == "connections":
    n = 0
    while time.perf_counter() < end:
        socket.create_connection(({HOST!r}, port)).close(); n += 1
    print(n / seconds)
else:
    c = socket.create_connection(({HOST!r}, port)); chunk = bytes(1 << 20); n = 0
    start = time.perf_counter()
    while time.perf_counter() < end:
        c.sendall(chunk); n += len(chunk)
    c.close(); print(n / (time.perf_counter() - start))
"""


def nsenter(netns_path, *argv):
    return ["nsenter", f"--net={netns_path}", *argv]


def client_run(client_ns, what, port, seconds) -> float:
    out = subprocess.run(nsenter(f"/run/netns/{client_ns}", sys.executable, "-c", CLIENT_CODE,
                                 what, str(port), str(seconds)),
                         capture_output=True, text=True, check=True, timeout=seconds + 30)
    return float(out.stdout)


def docker_run_p(host, network, port) -> float:
    start = time.perf_counter()
    result = host.docker("run", "-d", "--net", network, "-p", f"{port}:80", "--name", "timed",
                         "busybox", "sleep", "60")
    elapsed = time.perf_counter() - start
    host.docker("rm", "-f", "timed")
    if result.returncode:
        raise RuntimeError(f"docker run -p on {network} failed: {result.stderr.strip()}")
    return elapsed


def report(name, unit, rounds, rng):
    pairs = [(r["calinet"], r["usernet"]) for r in rounds]
    low, high = bootstrap_interval(pairs, ratio_of_medians, rng)
    print(f"{name}: calico {statistics.median(a for a, _ in pairs):.4g} {unit}, bridge "
          f"{statistics.median(b for _, b in pairs):.4g} {unit}; calico/bridge "
          f"{ratio_of_medians(pairs):.3f} (95 % interval {low:.3f}-{high:.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.time()
    lab = Lab()
    host = DockerHost("pub1", 1, lab)
    try:
        host.start()
        import_busybox(host)
        client = lab.netns("pub-client")
        lab.veth(host.netns, "eth1", client, "eth0", f"{HOST}/24", f"{CLIENT}/24")
        host.start_etcd()
        host.plugin = start_plugin(host, IP_AUTODETECTION_METHOD="interface=eth1")
        host.docker("network", "create", *CALICO_OPTIONS, "calinet")
        host.docker("network", "create", "usernet")
        for network, port in NETWORKS.items():
            host.docker("run", "-tid", "--net", network, "-p", f"{port}:80", "--name", network,
                        "busybox")
            pid = host.docker("inspect", "-f", "{{.State.Pid}}", network).stdout.strip()
            log = run_dir() / f"sink-{network}.log"
            sink = LabProcess(nsenter(f"/proc/{pid}/ns/net", sys.executable, "-c", SINK), log)
            host.processes.append(sink)
            sink.start()
            assert wait_until(lambda: "ready" in log.read_text(), 10, 0.05), network
            print(f"{network}: container {container_ip(host, network, network)}, "
                  f"host port {port}")
        assert wait_until(lambda: _answers(client, NETWORKS["calinet"]), 15, 0.2)
        measured = {"connections": [], "throughput": [], "docker run -p": []}
        for _ in range(args.rounds):
            for what in ("connections", "throughput"):
                measured[what].append({n: client_run(client, what, p, args.seconds)
                                       for n, p in rng.sample(list(NETWORKS.items()), 2)})
            measured["docker run -p"].append({n: docker_run_p(host, n, 9000)
                                              for n in rng.sample(list(NETWORKS), 2)})
        report("connections", "/s", measured["connections"], rng)
        report("throughput", "B/s", measured["throughput"], rng)
        report("docker run -p", "s", measured["docker run -p"], rng)
        print(f"{args.rounds} rounds in {time.time() - started:.0f} s")
    finally:
        host.close()
        lab.close()


def _answers(client, port) -> bool:
    try:
        return client_run(client, "connections", port, 0.1) > 0
    except subprocess.CalledProcessError:
        return False


if __name__ == "__main__":
    main()
