"""driver.dataplane against the real kernel, inside throw-away namespaces.

Nothing here touches the namespace pytest runs in: each test makes a "host"
namespace (with a lab interface, address and default route, as a Docker host
has; or without a default route, as on an air-gapped site) and runs the
dataplane functions in a child forked into it, so netlink and /proc/sys both
act on that namespace. Docker's part of Join (move the temp end into the
container, rename it cali0, set the MAC, address and routes) is emulated
with `ip`.
"""

import itertools
import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from agent import antispoofing
from driver import dataplane
from kernel import netlink
from kernel.errors import KernelError
from plugin import startup
from tests.e2e import reach
from tests.lab.common import wait_until
from tests.lab.netns import run_in

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason='needs root to create network namespaces'
)

LAB_V4, LAB_V6 = '10.99.0.1', 'fd00:99::1'
CONTAINER_MAC = 'ee:ee:ee:ee:ee:ee'
_serial = itertools.count()


# ------------------------------------------------------------------ helpers


def ip(ns, *args):
    return subprocess.run(
        ['ip', '-n', ns, *args], check=True, capture_output=True, text=True
    ).stdout


def ip_json(ns, *args):
    return json.loads(ip(ns, '-j', *args) or '[]')


def links(ns):
    return {link['ifname'] for link in ip_json(ns, 'link', 'show')}


def routes(ns, family, ifname=None):
    dev = ('dev', ifname) if ifname else ()
    return ip_json(ns, family, 'route', 'show', 'table', 'main', *dev)


def ping(ns, address):
    return subprocess.run(
        ['ip', 'netns', 'exec', ns, 'busybox', 'ping', '-c1', '-W1', address],
        capture_output=True,
    ).returncode == 0


def read_sysctl(key):
    with open(f'/proc/sys/{key}') as f:
        return f.read().strip()


def write_sysctl(key, value):
    with open(f'/proc/sys/{key}', 'w') as f:
        f.write(value)


def ipv4_addrs(ns, ifname):
    return [(a['local'], a['prefixlen'], a['scope'])
            for x in ip_json(ns, '-4', 'addr', 'show', 'dev', ifname) for a in x['addr_info']]


LISTENER = """
import socket, sys
address = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ':' in address else socket.AF_INET)
s.settimeout(10)
s.bind((address, 7777))
s.listen()
print('listening', flush=True)
conn, peer = s.accept()
print(peer[0], flush=True)
"""


def _connect(address):
    with socket.create_connection((address, 7777), timeout=5):
        pass


def peer_seen(ctr, address, client_ns):
    """The source address of a TCP connection from client_ns to address,
    as a listener in the container `ctr` sees it."""
    listener = subprocess.Popen(
        ['ip', 'netns', 'exec', ctr, sys.executable, '-c', LISTENER, address],
        stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == 'listening'
        run_in(client_ns, _connect, address)
        return listener.communicate(timeout=10)[0].strip()
    finally:
        listener.kill()
        listener.wait()


def probe_node(ns, address=None):
    """A namespace as reach's probes see it."""
    return reach.Node(ns, None, None, address, f'/run/netns/{ns}')


def names(endpoint_id):
    return f'cali{endpoint_id[:11]}', f'temp{endpoint_id[:11]}'


# ----------------------------------------------------------------- fixtures


@pytest.fixture
def make_netns():
    made = []

    def make(role):
        name = f'dpt{os.getpid()}-{role}{next(_serial)}'
        subprocess.run(['ip', 'netns', 'add', name], check=True)
        made.append(name)
        ip(name, 'link', 'set', 'lo', 'up')
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            subprocess.run(['ip', 'netns', 'del', name], capture_output=True)


@pytest.fixture
def make_host(make_netns):
    """make_host(default_route=True, **sysctls): a Docker host. Without a
    default route proxy ARP answers nothing (Calico issue #3270). `sysctls`
    set net.ipv4.conf.all.<name> (a new namespace copies the machine's)."""

    def make(default_route=True, **sysctls):
        ns = make_netns('host')
        # No dummy driver in this kernel: a veth pair stands in for the uplink.
        ip(ns, 'link', 'add', 'lab0', 'type', 'veth', 'peer', 'name', 'lab1')
        ip(ns, 'link', 'set', 'lab1', 'up')
        ip(ns, 'link', 'set', 'lab0', 'up')
        ip(ns, 'addr', 'add', f'{LAB_V4}/24', 'dev', 'lab0')
        ip(ns, 'addr', 'add', f'{LAB_V6}/64', 'dev', 'lab0', 'nodad')
        if default_route:
            ip(ns, 'route', 'add', 'default', 'via', '10.99.0.254', 'dev', 'lab0')
            ip(ns, '-6', 'route', 'add', 'default', 'via', 'fd00:99::fe', 'dev', 'lab0')
        for name in ('arp_ignore', 'arp_filter', 'rp_filter'):
            value = sysctls.pop(name, 0)
            for scope in ('all', 'default'):
                run_in(ns, write_sysctl, f'net/ipv4/conf/{scope}/{name}', str(value))
        assert not sysctls, f'unknown sysctls {sysctls}'
        return ns

    return make


@pytest.fixture
def host(make_host):
    """A Docker host with default routes: proxy ARP answers for 169.254.1.1
    there, as it does on most hosts."""
    return make_host()


@pytest.fixture
def join_on(make_netns):
    """join_on(host)(endpoint_id, ipv4, ipv6=None): plugin Join
    (set_up_veth) in `host`, then Docker's part."""

    def joiner(host):
        def do_join(endpoint_id, ipv4, ipv6=None):
            host_if, temp_if = names(endpoint_id)
            v6 = [ipv6] if ipv6 else []
            run_in(host, dataplane.set_up_veth, host_if, temp_if, [ipv4], v6, mac=CONTAINER_MAC)
            return host_if, enter_container(host, temp_if, ipv4, ipv6)
        return do_join

    def enter_container(host, temp_if, ipv4, ipv6=None):
        ctr = make_netns('ctr')
        ip(host, 'link', 'set', temp_if, 'netns', ctr)
        ip(ctr, 'link', 'set', temp_if, 'name', 'cali0')
        ip(ctr, 'link', 'set', 'cali0', 'up')
        ip(ctr, 'addr', 'add', f'{ipv4}/32', 'dev', 'cali0')
        ip(ctr, 'route', 'add', '169.254.1.1', 'dev', 'cali0', 'scope', 'link')
        ip(ctr, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'cali0')
        if ipv6:
            ip(ctr, 'addr', 'add', f'{ipv6}/128', 'dev', 'cali0', 'nodad')
            ip(ctr, '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'cali0')
        return ctr

    joiner.enter_container = enter_container
    return joiner


@pytest.fixture
def join(host, join_on):
    return join_on(host)


# -------------------------------------------------------------------- tests


def test_join_programs_host_side_and_traffic_flows(host, join):
    host_if, ctr = join('a1b2c3d4e5f6a7b8', '10.65.0.2', 'fd00:65::2')

    assert host_if == 'calia1b2c3d4e5f'
    assert run_in(host, dataplane.link_exists, host_if)
    assert run_in(ctr, dataplane.links, 'cali0') == {'cali0': CONTAINER_MAC}
    for key in (
        'net/ipv4/ip_forward',
        f'net/ipv4/conf/{host_if}/proxy_arp',
        f'net/ipv4/conf/{host_if}/forwarding',
        'net/ipv6/conf/all/forwarding',
        f'net/ipv6/conf/{host_if}/forwarding',
        f'net/ipv6/conf/{host_if}/proxy_ndp',
    ):
        assert run_in(host, read_sysctl, key) == '1', key
    assert run_in(host, read_sysctl, f'net/ipv4/neigh/{host_if}/proxy_delay') == '0'
    assert run_in(host, read_sysctl, f'net/ipv4/conf/{host_if}/arp_ignore') == '0'
    assert ipv4_addrs(host, host_if) == [('169.254.1.1', 32, 'host')]

    [r4] = routes(host, '-4', host_if)
    assert (r4['dst'], r4['scope']) == ('10.65.0.2', 'link')
    assert any(r['dst'] == 'fd00:65::2' for r in routes(host, '-6', host_if))
    [gw] = [a for a in ip_json(host, '-6', 'addr', 'show', 'dev', host_if)[0]['addr_info']
            if a['local'] == 'fe80::1']
    assert gw['prefixlen'] == 64 and gw.get('nodad') and not gw.get('tentative')

    assert ping(ctr, LAB_V4) and ping(host, '10.65.0.2')
    assert ping(ctr, LAB_V6) and ping(host, 'fd00:65::2')


@pytest.mark.parametrize('v4, v6', [(['10.65.0.3'], []), (['10.65.0.3'], ['fd00:65::3'])],
                         ids=['ipv4-only', 'dual-stack'])
def test_join_hardens_the_host_end_as_felix_does(make_host, v4, v6):
    """Strict rp_filter, and no router advertisements: the host's defaults
    (accept_ra 1, which takes them on an interface that does not forward
    IPv6, as an IPv4-only endpoint's) would let a container become the
    host's IPv6 default gateway."""
    host = make_host()
    run_in(host, write_sysctl, 'net/ipv6/conf/default/accept_ra', '1')
    run_in(host, dataplane.set_up_veth, 'caliHard', 'tempHard', v4, v6)

    assert run_in(host, read_sysctl, 'net/ipv4/conf/caliHard/rp_filter') == '1'
    assert run_in(host, read_sysctl, 'net/ipv6/conf/caliHard/accept_ra') == '0'


def router_advertisements_in(ns):
    snmp6 = subprocess.run(['ip', 'netns', 'exec', ns, 'cat', '/proc/net/snmp6'],
                           check=True, capture_output=True, text=True).stdout
    return int(dict(map(str.split, snmp6.splitlines()))['Icmp6InRouterAdvertisements'])


def test_a_container_router_advertisement_is_ignored(host, join):
    """On an IPv4-only endpoint's host end (which does not forward IPv6, so
    the default accept_ra=1 applies), a container's router advertisement
    would make it a default router of the host."""
    _, ctr = join('ad0ad0ad0ad0ad0a', '10.65.0.97')
    # The advertisement's source must be the container's link-local address.
    assert wait_until(lambda: 'tentative' not in ip(ctr, '-6', 'addr', 'show', 'cali0'), 10)
    before = router_advertisements_in(host)

    subprocess.run(probe_node(ctr).argv(sys.executable, '-I', '-S', reach.script(),
                                        'advertise', 'cali0'),
                   check=True, capture_output=True, timeout=30)

    assert wait_until(lambda: router_advertisements_in(host) > before, 10)  # it arrived
    assert not wait_until(lambda: ip(host, '-6', 'route', 'show', 'proto', 'ra'), 1)


def test_forged_sources_from_a_container_are_dropped(make_host, join_on):
    """Real packets (UDP, ICMP echo, TCP SYN, both families) from a container
    with another container's address, the host's own address and an outside
    one: none arrives, while the container's own addresses still do. The
    host's rp_filter is loose (all=2 outweighs the interfaces' 1), so the
    anti-spoofing table alone stands between."""
    host = make_host(rp_filter=2)
    for _ in range(2):  # replayed: still one table
        run_in(host, antispoofing.ensure)
    join = join_on(host)
    attacker = probe_node(join('a0a0a0a0a0a0a0a0', '10.65.0.91', 'fd00:65::91')[1])
    join('b0b0b0b0b0b0b0b0', '10.65.0.92', 'fd00:65::92')
    victim = probe_node(join('c0c0c0c0c0c0c0c0', '10.65.0.93', 'fd00:65::93')[1])
    forged = [('10.65.0.92', '10.65.0.93'), ('fd00:65::92', 'fd00:65::93'),
              (LAB_V4, '10.65.0.93'), (LAB_V6, 'fd00:65::93'),
              ('10.99.0.50', '10.65.0.93'), ('fd00:99::50', 'fd00:65::93')]
    own = [('10.65.0.91', '10.65.0.93'), ('fd00:65::91', 'fd00:65::93')]
    one_each = {'icmp4': 1, 'udp4': 1, 'icmp6': 1, 'udp6': 1, 'tcp': 2}

    for sends in (own, forged + own):  # own first: neighbours resolved
        before = reach.arrivals(victim)
        for source, target in sends:
            reach.forge(attacker, source, target, 9)
        # Once the own sends have arrived, so has everything sent before them.
        assert reach.arrived_since(victim, before, one_each) == one_each
    table = subprocess.run(
        ['ip', 'netns', 'exec', host, 'nft', 'list', 'table', 'inet', antispoofing.TABLE],
        check=True, capture_output=True, text=True).stdout
    assert table.count('type filter hook prerouting') == 1


def test_strict_rp_filter_drops_forged_ipv4_without_the_table(make_host, join_on):
    """Before `run` writes the table (or after `nft flush ruleset`), the host
    end's own rp_filter still drops forged IPv4 sources."""
    host = make_host(rp_filter=0)
    join = join_on(host)
    attacker = probe_node(join('d0d0d0d0d0d0d0d0', '10.65.0.94')[1])
    join('e0e0e0e0e0e0e0e0', '10.65.0.95')
    victim = probe_node(join('f0f0f0f0f0f0f0f0', '10.65.0.96')[1])
    one_each = {'icmp4': 1, 'udp4': 1, 'tcp': 1}

    for sources in (['10.65.0.94'], ['10.65.0.95', '10.65.0.94']):  # own first
        before = reach.arrivals(victim)
        for source in sources:
            reach.forge(attacker, source, '10.65.0.96', 9)
        assert reach.arrived_since(victim, before, one_each) == one_each


def test_two_containers_on_one_host_reach_each_other(join):
    _, ctr1 = join('1111111111111111', '10.65.0.11', 'fd00:65::11')
    _, ctr2 = join('2222222222222222', '10.65.0.12', 'fd00:65::12')

    assert ping(ctr1, '10.65.0.12') and ping(ctr2, '10.65.0.11')
    assert ping(ctr1, 'fd00:65::12') and ping(ctr2, 'fd00:65::11')


def test_ipv4_only_leaves_ipv6_alone(host):
    run_in(host, dataplane.set_up_veth, 'cali4only', 'temp4only', ['10.65.0.4'], [])

    addrs = ip_json(host, '-6', 'addr', 'show', 'dev', 'cali4only')
    assert not any(a['local'] == 'fe80::1' for x in addrs for a in x['addr_info'])
    assert run_in(host, read_sysctl, 'net/ipv6/conf/cali4only/proxy_ndp') == '0'
    assert [r['dst'] for r in routes(host, '-4', 'cali4only')] == ['10.65.0.4']


def test_ipv6_only_leaves_ipv4_alone(host):
    run_in(host, dataplane.set_up_veth, 'cali6only', 'temp6only', [], ['fd00:65::6'])

    assert ipv4_addrs(host, 'cali6only') == []
    assert routes(host, '-4', 'cali6only') == []


def test_every_function_is_replayable(host):
    before = links(host)
    for _ in range(2):
        run_in(host, dataplane.set_up_veth, 'caliR', 'tempR', ['10.65.0.7'], ['fd00:65::7'],
               mtu=1400, mac=CONTAINER_MAC)
    assert links(host) == before | {'caliR', 'tempR'}
    [temp] = ip_json(host, 'link', 'show', 'tempR')
    assert (temp['address'], temp['mtu'], temp['link']) == (CONTAINER_MAC, 1400, 'caliR')
    # The temp end is left down: moving it into the container would take it down anyway.
    assert 'UP' not in temp['flags']
    [host_end] = ip_json(host, 'link', 'show', 'caliR')
    assert host_end['mtu'] == 1400 and 'UP' in host_end['flags']

    assert [r['dst'] for r in routes(host, '-4', 'caliR')] == ['10.65.0.7']
    assert sum(r['dst'] == 'fd00:65::7' for r in routes(host, '-6', 'caliR')) == 1

    assert ipv4_addrs(host, 'caliR') == [('169.254.1.1', 32, 'host')]

    for _ in range(2):
        run_in(host, dataplane.remove_routes, ['10.65.0.7'], ['fd00:65::7'])
    assert routes(host, '-4', 'caliR') == []
    assert not any(r['dst'] == 'fd00:65::7' for r in routes(host, '-6', 'caliR'))
    assert run_in(host, dataplane.link_exists, 'caliR')

    for _ in range(2):
        run_in(host, dataplane.remove_veth, 'caliR')
    assert links(host) == before
    assert run_in(host, dataplane.links, 'caliR') == {}


def test_create_veth_replaces_stale_leftovers(host):
    # A pair left by an endpoint whose temp end had another name.
    ip(host, 'link', 'add', 'caliS', 'type', 'veth', 'peer', 'name', 'tempOLD')
    run_in(host, dataplane.set_up_veth, 'caliS', 'tempS')
    assert 'tempOLD' not in links(host)
    assert ip_json(host, 'link', 'show', 'tempS')[0]['link'] == 'caliS'

    # Not a veth at all under our name.
    ip(host, 'link', 'add', 'caliB', 'type', 'bridge')
    run_in(host, dataplane.set_up_veth, 'caliB', 'tempB')
    [link] = ip_json(host, '-d', 'link', 'show', 'caliB')
    assert link['linkinfo']['info_kind'] == 'veth'
    assert ip_json(host, 'link', 'show', 'tempB')[0]['link'] == 'caliB'


def test_remove_veth_takes_both_ends_and_routes(host, join):
    host_if, ctr = join('3333333333333333', '10.65.0.33', 'fd00:65::33')
    assert ping(ctr, LAB_V4)

    run_in(host, dataplane.remove_veth, host_if)
    assert host_if not in links(host)
    assert 'cali0' not in links(ctr)
    assert not any(r['dst'] == '10.65.0.33' for r in routes(host, '-4'))
    assert not any(r['dst'] == 'fd00:65::33' for r in routes(host, '-6'))

    run_in(host, dataplane.remove_veth, host_if)
    run_in(host, dataplane.remove_routes, ['10.65.0.33'], ['fd00:65::33'], host_if)


def test_remove_routes_for_one_interface_spares_a_reused_address(host):
    run_in(host, dataplane.set_up_veth, 'caliNew', 'tempNew', ['10.65.0.9'], [])
    run_in(host, dataplane.set_up_veth, 'caliOld', 'tempOld')

    run_in(host, dataplane.remove_routes, ['10.65.0.9'], [], 'caliOld')
    assert [r['dst'] for r in routes(host, '-4', 'caliNew')] == ['10.65.0.9']

    run_in(host, dataplane.remove_routes, ['10.65.0.9'], [], 'caliNew')
    assert routes(host, '-4', 'caliNew') == []


# ------------------------------------------------ hosts without a default route


@pytest.mark.parametrize('sysctls', [
    {},
    # arp_ignore=1 (load balancers, kube-proxy in IPVS mode) answers only for
    # addresses of the asking interface; strict reverse-path filtering.
    {'arp_ignore': 1, 'arp_filter': 1, 'rp_filter': 1},
], ids=['defaults', 'arp_ignore-1-strict'])
def test_host_without_default_route(make_host, join_on, sysctls):
    host = make_host(default_route=False, **sysctls)
    join = join_on(host)
    host_if, ctr1 = join('4444444444444444', '10.65.0.41', 'fd00:65::41')
    _, ctr2 = join('5555555555555555', '10.65.0.42', 'fd00:65::42')

    # The container reaches its gateway, the host and the other container...
    assert ping(ctr1, '169.254.1.1')
    assert ping(ctr1, LAB_V4) and ping(ctr1, LAB_V6)
    assert ping(ctr1, '10.65.0.42') and ping(ctr2, '10.65.0.41')
    assert ping(ctr1, 'fd00:65::42') and ping(ctr2, 'fd00:65::41')
    # ...having learnt the host end's MAC for 169.254.1.1, as proxy ARP gave.
    [gw] = [n for n in ip_json(ctr1, 'neigh', 'show', 'dev', 'cali0')
            if n['dst'] == '169.254.1.1']
    assert gw['lladdr'] == ip_json(host, 'link', 'show', host_if)[0]['address']

    # The host reaches its containers from its usual address, never from
    # 169.254.1.1 (scope host): what health checks and logs show.
    assert ping(host, '10.65.0.41') and ping(host, 'fd00:65::41')
    assert ip_json(host, 'route', 'get', '10.65.0.41')[0]['prefsrc'] == LAB_V4
    assert peer_seen(ctr1, '10.65.0.41', host) == LAB_V4
    assert peer_seen(ctr1, 'fd00:65::41', host) == LAB_V6
    # No route of the host's changed: only our /32s and /128s were added.
    assert [r['dst'] for r in routes(host, '-4')] == ['10.65.0.41', '10.65.0.42', '10.99.0.0/24']


def test_arp_ignore_2_keeps_proxy_arp(make_host, join_on):
    """arp_ignore=2 refuses an ARP for 169.254.1.1/32 from a container
    outside that subnet even on the interface holding it: no address then,
    and proxy ARP answers through the default route as before."""
    host = make_host(arp_ignore=2)
    host_if, ctr = join_on(host)('6666666666666666', '10.65.0.61')

    assert ipv4_addrs(host, host_if) == []
    assert run_in(host, dataplane.arp_answers_local_gateway) is False
    assert ping(ctr, LAB_V4) and ping(host, '10.65.0.61')


def test_start_up_gives_endpoints_joined_before_the_gateway(make_host, join_on):
    """Host ends programmed without the address and the hardening (by an
    older version) get them when `calico-libnetwork run` starts, and their
    containers then work without a default route; only this node's
    endpoints are touched, the address only for IPv4 ones."""
    host = make_host(default_route=False)
    for name in ('caliOld4', 'caliOld6', 'caliOther'):
        run_in(host, dataplane.set_up_veth, name, name.replace('cali', 'temp'))
        run_in(host, write_sysctl, f'net/ipv4/conf/{name}/proxy_arp', '1')
        run_in(host, write_sysctl, f'net/ipv4/conf/{name}/rp_filter', '0')
        run_in(host, write_sysctl, f'net/ipv6/conf/{name}/accept_ra', '1')
    ip(host, 'route', 'add', '10.65.0.71/32', 'dev', 'caliOld4', 'scope', 'link')
    ctr = join_on.enter_container(host, 'tempOld4', '10.65.0.71')
    assert not ping(ctr, LAB_V4)

    def wep(ifname, network, node='here'):
        return SimpleNamespace(name=ifname, spec={
            'node': node, 'interfaceName': ifname, 'ipNetworks': [network]})
    resources = SimpleNamespace(list=lambda kind, namespace, name_prefix='': [
        wep('caliOld4', '10.65.0.71/32'), wep('caliOld6', 'fd00:65::72/128'),
        wep('caliOther', '10.65.0.73/32', node='elsewhere'),
        wep('caliGone', '10.65.0.74/32')])
    config = SimpleNamespace(nodename='here', driver=SimpleNamespace(proc_sys='/proc/sys'))
    for _ in range(2):
        run_in(host, startup.update_host_ends, resources, config)

    assert ipv4_addrs(host, 'caliOld4') == [('169.254.1.1', 32, 'host')]
    for name, hardened in (('caliOld4', True), ('caliOld6', True), ('caliOther', False)):
        assert run_in(host, read_sysctl, f'net/ipv4/conf/{name}/rp_filter') == \
            ('1' if hardened else '0'), name
        assert run_in(host, read_sysctl, f'net/ipv6/conf/{name}/accept_ra') == \
            ('0' if hardened else '1'), name
    assert ipv4_addrs(host, 'caliOld6') == ipv4_addrs(host, 'caliOther') == []
    assert [r['dst'] for r in routes(host, '-4', 'caliOld4')] == ['10.65.0.71']
    assert ping(ctr, LAB_V4) and ping(host, '10.65.0.71')
    assert run_in(host, dataplane.add_ipv4_gateway, 'caliGone') is False


def _fail_to_add_the_route(host_if, temp_if, address):
    """set_up_veth with the kernel refusing the host route, its last step
    (sent in one batch with the gateway address): its request names an
    interface index that does not exist."""
    message = netlink.Netlink.message

    def through_no_device(self, kind, command, kwarg):
        if kind == 'route':
            kwarg = {**kwarg, 'oif': 2**31 - 1}
        return message(self, kind, command, kwarg)

    netlink.Netlink.message = through_no_device  # only in this forked child
    dataplane.set_up_veth(host_if, temp_if, [address])


@pytest.mark.parametrize(
    'call, named',
    [
        (lambda: dataplane.set_up_veth('cali0123456789ab', 'temp0'), 'cali0123456789ab'),
        (lambda: dataplane.set_up_veth('caliE', 'temp0123456789ab'), 'temp0123456789ab'),
        (lambda: dataplane.set_up_veth('caliE', 'tempE', mac='ee:ee'), 'tempE'),
        (lambda: dataplane.set_up_veth('caliE', 'tempE', mtu=70000), 'caliE'),
        (lambda: dataplane.set_up_veth('caliE', 'lab1'), 'lab1'),
        (lambda: _fail_to_add_the_route('caliE', 'tempE', '10.65.0.1'), '10.65.0.1/32 dev caliE'),
        (lambda: dataplane.set_up_veth('caliE', 'tempE', [], [], proc_sys='/nonexistent'),
         'net.ipv4.ip_forward'),
        (lambda: dataplane.set_up_veth('caliE', 'tempE', ['fd00::1'], []), 'fd00::1'),
        (lambda: dataplane.remove_veth('x' * 16), 'x' * 16),
        (lambda: dataplane.link_exists(''), "''"),
    ],
    ids=[
        'host-name-16-chars', 'temp-name-16-chars', 'bad-mac', 'mtu-too-big',
        'temp-name-taken', 'route-refused', 'sysctl-refused', 'ipv6-given-as-ipv4',
        'remove-16-chars', 'empty-name',
    ],
)
def test_errors_are_typed_and_leave_nothing_behind(host, call, named):
    before = links(host), routes(host, '-4'), routes(host, '-6')

    with pytest.raises(KernelError) as caught:
        run_in(host, call)

    assert named in str(caught.value)
    assert (links(host), routes(host, '-4'), routes(host, '-6')) == before


def test_host_routes_read_back_and_restored(host, join):
    """What `check` reads (link names, the cali host routes) and puts back
    (a deleted route), against the kernel; a gone interface gets none."""
    host_if, _ = join('ab' * 32, '10.65.0.7', 'fd00:65::7')
    assert run_in(host, dataplane.link_names, 'cali') == {host_if}
    assert run_in(host, dataplane.host_routes, 'cali') == {
        '10.65.0.7': host_if, 'fd00:65::7': host_if}
    ip(host, 'route', 'del', '10.65.0.7/32')
    ip(host, '-6', 'route', 'del', 'fd00:65::7/128')
    assert run_in(host, dataplane.host_routes, 'cali') == {}
    assert run_in(host, dataplane.restore_routes, host_if, ['10.65.0.7'], ['fd00:65::7'])
    assert run_in(host, dataplane.restore_routes, host_if, ['10.65.0.7'])  # replayed
    assert run_in(host, dataplane.host_routes, 'cali') == {
        '10.65.0.7': host_if, 'fd00:65::7': host_if}
    assert routes(host, '-4', host_if)[0]['scope'] == 'link'
    ip(host, 'link', 'del', host_if)
    assert not run_in(host, dataplane.restore_routes, host_if, ['10.65.0.7'])
    assert run_in(host, dataplane.host_routes, 'cali') == {}
