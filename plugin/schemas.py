"""Request validation for every plugin call, kept apart from the handlers.

A schema maps each field Docker sends to a checker (and, for a call's body,
to the handler parameter that receives it).  Checkers raise BadRequest
naming the field; unknown fields are ignored (newer Docker versions add
some), missing optional fields get a default.
"""

import re

import netaddr


class BadRequest(Exception):
    pass


# Docker network/endpoint ids are 64 hex chars; swarm ids are 25 alphanumerics.
_ID_RE = re.compile(r"[0-9a-f]{64}|[0-9a-z]{25}")


def docker_id(value, field):
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
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


class Request:
    """A call's body: for each field Docker sends, the handler parameter it
    is passed as, its checker and its default (... marks a required field).

    Calling it checks a body and returns the fields by Docker's names;
    `params` maps each of those names to the handler's parameter.
    """

    def __init__(self, **fields):
        self.params = {name: param for name, (param, _, _) in fields.items()}
        self._check = obj(**{name: (checker, default)
                             for name, (_, checker, default) in fields.items()})

    def __call__(self, body) -> dict:
        return self._check(body, None)


_ipam_data = obj(AddressSpace=(string, ""), Pool=(cidr, ""), Gateway=(cidr, ""),
                 AuxAddresses=(string_map, dict))
_interface = obj(Address=(cidr, ""), AddressIPv6=(cidr, ""), MacAddress=(mac, ""))
_network = {"NetworkID": ("network_id", docker_id, ...)}
_endpoint = {**_network, "EndpointID": ("endpoint_id", docker_id, ...)}
_options = {"Options": ("options", any_map, dict)}
_ipam_datas = {"IPv4Data": ("ipv4_data", list_of(_ipam_data), list),
               "IPv6Data": ("ipv6_data", list_of(_ipam_data), list)}

NO_ARGS = Request()

GW_ALLOC_CHECK = Request(**_options)  # Docker >= 28: CreateNetwork's Options
CREATE_NETWORK = Request(**_network, **_options, **_ipam_datas)
NETWORK = Request(**_network)
ALLOCATE_NETWORK = Request(**_network, **_options, **_ipam_datas)
CREATE_ENDPOINT = Request(**_endpoint, Interface=("interface", _interface,
                                                  lambda: _interface({}, "Interface")),
                          **_options)
ENDPOINT = Request(**_endpoint)
JOIN = Request(**_endpoint, SandboxKey=("sandbox_key", string, ""), **_options)
ENDPOINT_WITH_OPTIONS = Request(**_endpoint, **_options)
DISCOVERY = Request(DiscoveryType=("discovery_type", lambda v, f: v, 0),
                    DiscoveryData=("discovery_data", any_map, dict))

REQUEST_POOL = Request(AddressSpace=("address_space", string, ""), Pool=("pool", cidr, ""),
                       SubPool=("sub_pool", cidr, ""), Options=("options", string_map, dict),
                       V6=("v6", boolean, False))
RELEASE_POOL = Request(PoolID=("pool_id", string, ...))
REQUEST_ADDRESS = Request(PoolID=("pool_id", string, ...), Address=("address", ip, ""),
                          Options=("options", string_map, dict))
RELEASE_ADDRESS = Request(PoolID=("pool_id", string, ...), Address=("address", ip, ...))
