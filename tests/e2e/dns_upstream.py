"""A tiny DNS server for the lab, standing for the hosts' real nameserver:
`python -m tests.e2e.dns_upstream ADDRESS PORT NAME=IP...` answers A for the
names given and NXDOMAIN for every other name, over UDP and TCP.  A question
for delay-<ms>.<name> is answered as one for <name>, <ms> milliseconds late:
a nameserver farther away than this one on the lab's veth (bench/names.py)."""

import re
import sys
import time

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer


DELAYED = re.compile(r"delay-(\d+)\.(.+)")


class Resolver(BaseResolver):
    def __init__(self, records):
        self.records = records

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        delayed = DELAYED.fullmatch(name)
        if delayed:
            time.sleep(int(delayed[1]) / 1000)  # the server answers each question in a thread
            name = delayed[2]
        address = self.records.get(name)
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=60))
        return reply


def main():
    address, port, *pairs = sys.argv[1:]
    resolver = Resolver(dict(p.split("=", 1) for p in pairs))
    servers = [DNSServer(resolver, address=address, port=int(port), tcp=tcp)
               for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    print("serving", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
