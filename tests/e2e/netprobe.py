"""Reachability probes, run inside a container's network namespace from the
lab machine (`nsenter --net=/proc/<pid>/ns/net python3 netprobe.py ...`):
the lab's busybox nc has no UDP (`nc -u`), and one short-lived Python is
quicker than `docker exec`.  The traffic still leaves through the container's
own interface, so the host's policy sees exactly what the container sends.
Standard library only.

    netprobe.py serve PORT...               TCP listeners and UDP echo on each PORT
    netprobe.py tcp ADDRESS PORT TIMEOUT    exit 0 if a TCP connection opens
    netprobe.py udp ADDRESS PORT TIMEOUT    exit 0 if the UDP echo answers
    netprobe.py until open|closed ADDRESS PORT DEADLINE
        Print "polling", then try TCP connections until one sees the port in
        that state (open: answered, by a connection or a refusal, so no
        server is needed; closed: no answer, the SYN was dropped); print the
        time.time() at which that attempt's SYN went out and exit 0, or exit
        1 at DEADLINE (a time.time() value).
    netprobe.py send SOURCE ADDRESS PORT
        One UDP datagram, one ICMP echo request and one TCP SYN to ADDRESS
        (IPv4 or IPv6) from SOURCE, any address: IP_TRANSPARENT, which
        NET_RAW (a default capability of Docker's containers) allows.
    netprobe.py advertise IFNAME
        One IPv6 router advertisement (router lifetime 1800 s) to all nodes
        out of IFNAME, as a router on the link would send it.
    netprobe.py resolve SERVER NAME TIMEOUT ATTEMPTS
        Ask SERVER (port 53, UDP) for NAME's A records as a resolver would:
        up to ATTEMPTS questions, each given TIMEOUT s; print the addresses
        of the first reply and its rcode, exit 0 if one came.
    netprobe.py arrivals
        Print, as JSON, this namespace's counters of what arrived for it:
        ICMP echo requests and UDP datagrams to closed ports per family,
        TCP segments (both families).
"""

import json
import os
import selectors
import socket
import struct
import sys
import time

OPEN_TIMEOUT = 0.1  # a refused SYN is not resent within 1 s: try a new one
CLOSED_TIMEOUT = 0.3  # no answer for this long: the SYN was dropped
INTERVAL = 0.05
IP_TRANSPARENT, IPV6_TRANSPARENT = 19, 75  # linux/in.h, linux/in6.h
ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}


def serve(ports):
    sel = selectors.DefaultSelector()
    for port in ports:
        tcp = socket.socket()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("0.0.0.0", port))
        tcp.listen(128)
        sel.register(tcp, selectors.EVENT_READ, "tcp")
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", port))
        sel.register(udp, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "tcp":
                conn, _ = key.fileobj.accept()
                conn.close()
            else:
                data, peer = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(data, peer)


def tcp(address, port, timeout):
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def udp(address, port, timeout):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(b"probe", (address, port))
            return s.recvfrom(2048)[0] == b"probe"
        except OSError:
            return False


def answers(address, port, timeout):
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return True
    except ConnectionRefusedError:  # a RST: the SYN got through
        return True
    except OSError:
        return False


def until(state, address, port, deadline):
    print("polling", flush=True)
    want_open = state == "open"
    timeout = OPEN_TIMEOUT if want_open else CLOSED_TIMEOUT
    while time.time() < deadline:
        sent = time.time()
        if answers(address, port, timeout) == want_open:
            print(f"{sent:.6f}", flush=True)
            return True
        time.sleep(INTERVAL)
    return False


def send(source, address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    v6 = family == socket.AF_INET6

    def bound(kind, proto=0):
        s = socket.socket(family, kind, proto)
        s.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP,
                     IPV6_TRANSPARENT if v6 else IP_TRANSPARENT, 1)
        s.bind((source, 0))
        return s

    with bound(socket.SOCK_DGRAM) as s:
        s.sendto(b"forged?", (address, port))
    with bound(socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP) as s:
        echo = bytes([ECHO_REQUEST[family], 0, 0, 0, 0x12, 0x34, 0, 1]) + b"forged?"
        if not v6:  # the kernel sums ICMPv6 itself
            total = sum(int.from_bytes(echo[i:i + 2], "big") for i in range(0, len(echo) - 1, 2))
            total += echo[-1] << 8 if len(echo) % 2 else 0
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            echo = echo[:2] + (~total & 0xFFFF).to_bytes(2, "big") + echo[4:]
        s.sendto(echo, (address, 0))
    with bound(socket.SOCK_STREAM) as s:
        s.setblocking(False)
        s.connect_ex((address, port))  # the SYN leaves now; closing sends nothing
    return True


def advertise(ifname):
    index = socket.if_nametoindex(ifname)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # RFC 4861 6.1.2
        # Type 134, code 0, checksum (the kernel's), hop limit 64, no flags,
        # router lifetime, reachable time, retrans timer.
        ra = bytes([134, 0, 0, 0, 64, 0]) + (1800).to_bytes(2, "big") + bytes(8)
        s.sendto(ra, ("ff02::1", 0, 0, index))
    return True


def arrivals():
    counters = {}
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f]
    for names, values in zip(lines[::2], lines[1::2]):
        table = dict(zip(names[1:], map(int, values[1:])))
        if names[0] == "Icmp:":
            counters["icmp4"] = table["InEchos"]
        elif names[0] == "Udp:":
            counters["udp4"] = table["NoPorts"]
        elif names[0] == "Tcp:":
            counters["tcp"] = table["InSegs"]
    with open("/proc/net/snmp6") as f:
        table = dict((name, int(value)) for name, value in map(str.split, f))
    counters["icmp6"], counters["udp6"] = table["Icmp6InEchos"], table["Udp6NoPorts"]
    print(json.dumps(counters), flush=True)
    return True


def resolve(server, name, timeout, attempts):
    for attempt in range(attempts):
        qid = (os.getpid() + attempt) & 0xFFFF
        question = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"".join(
            bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
        question += struct.pack("!HH", 1, 1)
        with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET,
                           socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            try:
                s.sendto(question, (server, 53))
                reply = s.recv(4096)
            except OSError:
                continue
        if reply[:2] != question[:2]:
            continue
        flags, _, count = struct.unpack("!HHH", reply[2:8])
        at, addresses = len(question), []
        for _ in range(count):
            at = _skip_name(reply, at)
            rtype, _, _, size = struct.unpack("!HHIH", reply[at:at + 10])
            if rtype == 1 and size == 4:
                addresses.append(socket.inet_ntoa(reply[at + 10:at + 14]))
            at += 10 + size
        print(f"rcode {flags & 0xF} {' '.join(addresses)}", flush=True)
        return True
    return False


def _skip_name(data, at):
    while data[at]:
        if data[at] & 0xC0 == 0xC0:  # a pointer ends the name
            return at + 2
        at += 1 + data[at]
    return at + 1


def main(argv):
    mode, args = argv[0], argv[1:]
    if mode == "serve":
        serve([int(p) for p in args])
    elif mode in ("tcp", "udp"):
        check = tcp if mode == "tcp" else udp
        return check(args[0], int(args[1]), float(args[2]))
    elif mode == "until":
        return until(args[0], args[1], int(args[2]), float(args[3]))
    elif mode == "send":
        return send(args[0], args[1], int(args[2]))
    elif mode == "advertise":
        return advertise(args[0])
    elif mode == "resolve":
        return resolve(args[0], args[1], float(args[2]), int(args[3]))
    elif mode == "arrivals":
        return arrivals()
    raise SystemExit(f"netprobe: unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:]) else 1)
