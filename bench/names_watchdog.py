"""The names watchdog (agent/names/watchdog.py), measured in the lab site
of tests/agent/names_site.py (namespaces, veths, the agent's name service
with its watchdog, the test's own nameservers):

    sudo .venv/bin/python bench/names_watchdog.py [--seconds 10] [--freezes 5]

- probe cost: CPU time (schedstat, all threads) of the watchdog process
  and of the agent over --seconds, idle but for the probes; the agent's
  part against the CPU it spends on forwarded lookups in the same run
  (the cost of the probes in lookups per second); the watchdog's memory;
- failover: from SIGSTOP of the agent to the first question (asked again
  every 50 ms, 50 ms timeout, from the container) the nameserver answers;
  and from SIGCONT to the first the responder answers again; median, max.
Not a test.
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnslib import RCODE  # noqa: E402

from tests.agent.names_site import EXTERNAL, NAMED, NAMESERVERS, Site  # noqa: E402
from tests.lab import Lab  # noqa: E402

def cpu(pid: int) -> float:
    """Seconds of CPU process pid's live threads have used (schedstat: ns,
    finer than the clock ticks of /proc/PID/stat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def until(predicate, timeout=10.0) -> float | None:
    """Seconds until predicate() holds, asking every 50 ms; None: never."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--freezes", type=int, default=5)
    args = parser.parse_args()
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="names-watchdog-") as tmp:
        site = Site(lab, Path(tmp))
        try:
            site.start_agent()
            agent, watchdog = site.agent.pid, site.health()["pid"]
            responder = (RCODE.NOERROR, [NAMED[1]])
            until(lambda: site.ask(NAMESERVERS[0], NAMED[0]) == responder)

            a0, w0 = cpu(agent), cpu(watchdog)
            time.sleep(args.seconds)
            agent_probes = (cpu(agent) - a0) / args.seconds
            watchdog_cpu = (cpu(watchdog) - w0) / args.seconds
            lookups, a0, started = 0, cpu(agent), time.monotonic()
            while time.monotonic() - started < args.seconds:
                site.ask(NAMESERVERS[0], EXTERNAL[0])
                lookups += 1
            per_lookup = (cpu(agent) - a0 - agent_probes * args.seconds) / lookups
            print(f"probe cost: watchdog {watchdog_cpu * 1000:.2f} ms CPU/s "
                  f"({watchdog_cpu * 100:.2f}% of a core); agent idle (echoes, resolv.conf reads) "
                  f"{agent_probes * 1000:.2f} ms CPU/s = "
                  f"{agent_probes / per_lookup if per_lookup > 0 else float('nan'):.1f} "
                  f"forwarded lookups/s ({per_lookup * 1000:.3f} ms CPU per lookup, "
                  f"{lookups} lookups)")
            print(f"memory: watchdog {rss_mb(watchdog):.1f} MB resident, agent's name service "
                  f"{rss_mb(agent):.1f} MB")

            bypassed, restored = [], []
            for _ in range(args.freezes):
                os.kill(agent, signal.SIGSTOP)
                try:
                    bypassed.append(until(lambda: site.ask(NAMESERVERS[0], NAMED[0], 0.05)
                                          == (RCODE.NXDOMAIN, [])))
                finally:
                    os.kill(agent, signal.SIGCONT)
                restored.append(until(lambda: site.ask(NAMESERVERS[0], NAMED[0], 0.05)
                                      == responder))
                time.sleep(0.5)
            for what, times in (("SIGSTOP -> answered by the nameserver", bypassed),
                                ("SIGCONT -> answered by the responder", restored)):
                ok = [t for t in times if t is not None]
                print(f"{what}: median {statistics.median(ok):.2f} s, max {max(ok):.2f} s "
                      f"({len(ok)}/{len(times)})" if ok else f"{what}: never")
        finally:
            site.close()


if __name__ == "__main__":
    main()
