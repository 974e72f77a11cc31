"""Join's and Leave's host-side netlink work, timed (not a test; prints figures).

    .venv/bin/python bench/dataplane.py [--veths 300]

Needs root.  In a throw-away network namespace, sets up --veths veth pairs
one after another as Join does (driver.dataplane.set_up_veth: an IPv4 and
an IPv6 address each), then removes each one's routes as Leave does
(remove_routes) and deletes the pair (remove_veth, as the reaper would;
dockerd does it at Leave).  Prints p50/p99 wall time per call and the
process's CPU time per call, both taken in the namespace.
"""

import argparse
import ipaddress
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

from bench.stats import percentile  # noqa: E402
from driver import dataplane  # noqa: E402
from tests.lab.netns import Lab, run_in  # noqa: E402


def timed(calls):
    """[(wall ms, cpu ms)] of each call."""
    out = []
    for call in calls:
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        out.append(((time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3))
    return out


def cycle(count):
    v4 = ipaddress.ip_network('10.77.0.0/16')
    v6 = ipaddress.ip_network('fd00:77::/64')
    names = [(f'cali{i:011d}', f'tmp{i:011d}', str(v4[i + 1]), str(v6[i + 1]))
             for i in range(count)]
    dataplane.set_up_veth('calibenchwarm', 'tmpbenchwarm', ['10.78.0.1'], ['fd00:78::1'])
    dataplane.remove_veth('calibenchwarm')
    join = timed(lambda n=n: dataplane.set_up_veth(n[0], n[1], [n[2]], [n[3]]) for n in names)
    leave = timed(lambda n=n: dataplane.remove_routes([n[2]], [n[3]], host_ifname=n[0])
                  for n in names)
    remove = timed(lambda n=n: dataplane.remove_veth(n[0]) for n in names)
    return {'set_up_veth (Join)': join, 'remove_routes (Leave)': leave,
            'remove_veth': remove}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--veths', type=int, default=300)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('needs root (network namespaces)')
    with Lab() as lab:
        ns = lab.netns('dp')
        figures = run_in(ns, cycle, args.veths)
    print(f'{args.veths} veths, load {os.getloadavg()[0]:.2f}')
    for name, samples in figures.items():
        wall = sorted(s[0] for s in samples)
        cpu = [s[1] for s in samples]
        print(f'{name:24} wall p50 {percentile(wall, 50):6.2f} ms'
              f'  p99 {percentile(wall, 99):6.2f} ms  cpu mean {statistics.mean(cpu):5.2f} ms')


if __name__ == '__main__':
    main()
