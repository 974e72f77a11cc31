"""Request validation for every plugin call, kept apart from the handlers.

A schema maps each field Docker sends to a checker.  Checkers raise
BadRequest naming the field; unknown fields are ignored (newer Docker
versions add some), missing optional fields get a default.
"""

import re

import netaddr


class BadRequest(Exception):
    pass


# Docker network/endpoint ids are 64 hex chars; swarm ids are 25 alphanumerics.
_ID_RE = re.compile(r"^([0-9a-f]{64}|[0-9a-z]{25})$")


def docker_id(value, field):
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise BadRequest(f"{field} must be a Docker id (64 hex characters), got {_show(value)}")
    return value


def string(value, field):
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, got {_show(value)}")
    if len(value) > 4096:
        raise BadRequest(f"{field} is too long ({len(value)} characters)")
    return value


def boolean(value, field):
    if not isinstance(value, bool):
        raise BadRequest(f"{field} must be true or false, got {_show(value)}")
    return value


def any_map(value, field):
    """An options map: any JSON values, string keys (null means empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{field} must be an object, got {_show(value)}")
    return value


def string_map(value, field):
    value = any_map(value, field)
    for k, v in value.items():
        if not isinstance(v, str):
            raise BadRequest(f"{field}[{k!r}] must be a string, got {_show(v)}")
    return value


def cidr(value, field):
    """An address with prefix ("10.0.0.5/24") or "" when unset."""
    string(value, field)
    if value == "":
        return value
    try:
        netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise BadRequest(f"{field} must be an address in CIDR form, got {value!r}") from None
    if "/" not in value:
        raise BadRequest(f"{field} must be an address in CIDR form, got {value!r}")
    return value


def ip(value, field):
    """A plain address or "" when unset."""
    string(value, field)
    if value == "":
        return value
    try:
        netaddr.IPAddress(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise BadRequest(f"{field} must be an IP address, got {value!r}") from None
    return value


def mac(value, field):
    string(value, field)
    if value and not re.match(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$", value):
        raise BadRequest(f"{field} must be a MAC address, got {value!r}")
    return value


def obj(**fields):
    """A JSON object with the given fields: name -> (checker, default).

    A default of ... marks a required field.
    """
    def check(value, field):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise BadRequest(f"{field or 'request'} must be a JSON object, got {_show(value)}")
        out = {}
        for name, (checker, default) in fields.items():
            where = f"{field}.{name}" if field else name
            if name not in value or value[name] is None:
                if default is ...:
                    raise BadRequest(f"{where} is required")
                out[name] = default() if callable(default) else default
            else:
                out[name] = checker(value[name], where)
        return out
    return check


def list_of(item):
    def check(value, field):
        if not isinstance(value, list):
            raise BadRequest(f"{field} must be a list, got {_show(value)}")
        if len(value) > 64:
            raise BadRequest(f"{field} has too many entries ({len(value)})")
        return [item(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return check


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


NO_ARGS = obj()

_ipam_data = obj(AddressSpace=(string, ""), Pool=(cidr, ""), Gateway=(cidr, ""),
                 AuxAddresses=(string_map, dict))
_interface = obj(Address=(cidr, ""), AddressIPv6=(cidr, ""), MacAddress=(mac, ""))
_endpoint = dict(NetworkID=(docker_id, ...), EndpointID=(docker_id, ...))

CREATE_NETWORK = obj(NetworkID=(docker_id, ...), Options=(any_map, dict),
                     IPv4Data=(list_of(_ipam_data), list), IPv6Data=(list_of(_ipam_data), list))
NETWORK = obj(NetworkID=(docker_id, ...))
ALLOCATE_NETWORK = obj(NetworkID=(docker_id, ...), Options=(any_map, dict),
                       IPv4Data=(list_of(_ipam_data), list), IPv6Data=(list_of(_ipam_data), list))
CREATE_ENDPOINT = obj(**_endpoint, Interface=(_interface, dict), Options=(any_map, dict))
ENDPOINT = obj(**_endpoint)
JOIN = obj(**_endpoint, SandboxKey=(string, ""), Options=(any_map, dict))
ENDPOINT_WITH_OPTIONS = obj(**_endpoint, Options=(any_map, dict))
DISCOVERY = obj(DiscoveryType=(lambda v, f: v, 0), DiscoveryData=(any_map, dict))

REQUEST_POOL = obj(AddressSpace=(string, ""), Pool=(cidr, ""), SubPool=(cidr, ""),
                   Options=(string_map, dict), V6=(boolean, False))
RELEASE_POOL = obj(PoolID=(string, ...))
REQUEST_ADDRESS = obj(PoolID=(string, ...), Address=(ip, ""), Options=(string_map, dict))
RELEASE_ADDRESS = obj(PoolID=(string, ...), Address=(ip, ...))
