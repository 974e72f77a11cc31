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
"""

import selectors
import socket
import sys
import time

OPEN_TIMEOUT = 0.1  # a refused SYN is not resent within 1 s: try a new one
CLOSED_TIMEOUT = 0.3  # no answer for this long: the SYN was dropped
INTERVAL = 0.05


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


def main(argv):
    mode, args = argv[0], argv[1:]
    if mode == "serve":
        serve([int(p) for p in args])
    elif mode in ("tcp", "udp"):
        check = tcp if mode == "tcp" else udp
        return check(args[0], int(args[1]), float(args[2]))
    elif mode == "until":
        return until(args[0], args[1], int(args[2]), float(args[3]))
    raise SystemExit(f"netprobe: unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:]) else 1)
