"""A tiny DNS server for the lab, standing for the hosts' real nameserver:
`python -m tests.e2e.dns_upstream ADDRESS PORT NAME=IP...` answers A for the
names given and NXDOMAIN for every other name, over UDP and TCP."""

import sys
import time

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer


class Resolver(BaseResolver):
    def __init__(self, records):
        self.records = records

    def resolve(self, request, handler):
        reply = request.reply()
        address = self.records.get(str(request.q.qname).rstrip(".").lower())
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
