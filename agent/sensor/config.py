"""The sensor's rules and known-endpoint lists: YAML -> a typed, validated SensorConfig.

Where the YAML comes from, first match wins: an explicit file (`--config`); the policy's `sensor:`
key (a mapping inline, or a path relative to the policy file); `sensor.yaml` next to the policy;
built-in defaults. Lists change often (Tor relays, DoH resolvers), so they can also live in plain
files named by `*_file` keys, one address or name a line, `#` comments allowed.

Every error names the file and line, all errors are reported in one go, and nothing half-valid is
ever returned, so a bad edit never silently turns a detector off.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from esafety.policy.schema import Policy

# Each detection's protocol name, with the policy category, level and incident flag it gets unless
# the config says otherwise. Hotspots and personal servers have no circumvention category of their
# own in the default AUP, so they go to `uncategorised` (IT's queue) until the school adds one.
DEFAULT_ACTIONS: dict[str, tuple[str, int, bool]] = {
    "openvpn": ("vpn", 2, True),
    "wireguard": ("vpn", 2, True),
    "ipsec": ("vpn", 2, True),
    "l2tp": ("vpn", 2, True),
    "pptp": ("vpn", 2, True),
    "ssh": ("vpn", 1, False),
    "ssh_tunnel": ("vpn", 2, True),
    "tor": ("tor", 3, True),
    "socks": ("web_proxies", 2, True),
    "http_connect": ("web_proxies", 2, True),
    "http_proxy": ("web_proxies", 2, True),
    "dot": ("doh", 2, True),
    "doh": ("doh", 2, True),
    "quic": ("uncategorised", 1, False),
    "bittorrent": ("p2p", 2, True),
    "personal_server": ("uncategorised", 2, True),
    "rogue_dhcp": ("uncategorised", 3, True),
    "nat_device": ("uncategorised", 2, True),
}
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
DEFAULT_DOH_NAMES = (
    "dns.google", "dns.google.com", "cloudflare-dns.com", "mozilla.cloudflare-dns.com", "one.one.one.one",
    "1dot1dot1dot1.cloudflare-dns.com", "security.cloudflare-dns.com", "family.cloudflare-dns.com",
    "dns.quad9.net", "dns9.quad9.net", "dns10.quad9.net", "dns11.quad9.net", "doh.opendns.com",
    "doh.familyshield.opendns.com", "dns.adguard.com", "dns.adguard-dns.com", "dns.nextdns.io",
    "doh.cleanbrowsing.org", "doh.mullvad.net", "dns.mullvad.net", "freedns.controld.com",
    "doh.dns.sb", "dns.alidns.com", "doh.pub", "dns.twnic.tw",
)
DEFAULT_DOH_IPS = (
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "1.1.1.2", "1.1.1.3", "9.9.9.9", "149.112.112.112",
    "208.67.222.222", "208.67.220.220", "94.140.14.14", "94.140.15.15", "45.90.28.0", "45.90.30.0",
    "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111", "2606:4700:4700::1001",
    "2620:fe::fe", "2620:fe::9",
)


class SensorConfigInvalid(Exception):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass(frozen=True)
class Action:
    category: str
    level: int
    incident: bool


@dataclass(frozen=True)
class SensorConfig:
    source: str = "<defaults>"
    client_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_flows: int = 200_000
    idle_timeout: float = 120.0
    inspect_packets: int = 10  # payload-carrying packets per flow looked at before giving up
    min_confidence: float = 0.6  # below this a detection is printed but raises no incident
    actions: dict[str, Action] = field(default_factory=dict)
    dot_ports: frozenset[int] = frozenset({853})
    ike_ports: frozenset[int] = frozenset({500, 4500})
    l2tp_ports: frozenset[int] = frozenset({1701})
    doh_names: frozenset[str] = frozenset()
    doh_ips: frozenset[bytes] = frozenset()
    tor_relays: frozenset[bytes] = frozenset()
    tor_sni_shape: bool = True
    allowed_proxies: frozenset[bytes] = frozenset()
    ssh_allowed: frozenset[bytes] = frozenset()
    ssh_tunnel_seconds: float = 600.0
    ssh_tunnel_bytes: int = 20_000_000
    dhcp_allowed: frozenset[bytes] = frozenset()
    personal_enabled: bool = True
    personal_from_inside: bool = False
    personal_allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    personal_ignore_ports: frozenset[int] = frozenset()
    nat_enabled: bool = True
    nat_expected_hops: int = 0
    nat_min_packets: int = 20

    def action(self, protocol: str) -> Action:
        return self.actions.get(protocol) or Action(*DEFAULT_ACTIONS.get(protocol, ("uncategorised", 1, False)))


def in_networks(ip: bytes, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in n for n in nets if n.version == addr.version)


# -- YAML with line numbers ------------------------------------------------------------------------


class _Doc:
    def __init__(self, file: str, node: yaml.Node | None, lines: dict[tuple[Any, ...], int] | None = None):
        self.file = file
        self.lines: dict[tuple[Any, ...], int] = lines if lines is not None else {}
        self.errors: list[str] = []
        self._ctor = yaml.SafeLoader("")
        self.data = self._plain(node, ()) if node is not None else {}

    def _plain(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for k, v in node.value:
                out[str(k.value)] = self._plain(v, (*path, str(k.value)))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._plain(v, (*path, i)) for i, v in enumerate(node.value)]
        return self._ctor.construct_object(node, deep=True)

    def error(self, path: tuple[Any, ...], msg: str) -> None:
        while path and path not in self.lines:
            path = path[:-1]
        self.errors.append(f"{self.file}:{self.lines.get(path, 1)}: {msg}")


def _compose(path: Path) -> yaml.Node | None:
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except OSError as exc:
        raise SensorConfigInvalid([f"{path}:1: cannot read: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SensorConfigInvalid([f"{path}:{mark.line + 1 if mark else 1}: YAML syntax: "
                                   f"{getattr(exc, 'problem', exc)}"]) from exc


def _mapping_child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v
    return None


def resolve_source(config: str | Path | None, policy_path: str | Path | None) -> tuple[Path | None, str | None]:
    """(file, key): the YAML file to read and, for an inline policy section, the key inside it."""
    if config:
        return Path(config), None
    if policy_path:
        pp = Path(policy_path)
        if pp.exists():
            sec = _mapping_child(_compose(pp), "sensor")
            if isinstance(sec, yaml.MappingNode):
                return pp, "sensor"
            if isinstance(sec, yaml.ScalarNode) and sec.value:
                return (pp.parent / sec.value), None
        beside = pp.parent / "sensor.yaml"
        if beside.exists():
            return beside, None
    return None, None


def load_sensor_config(config: str | Path | None = None, policy_path: str | Path | None = None,
                       policy: Policy | None = None) -> SensorConfig:
    """Load and validate; raises SensorConfigInvalid listing every problem as file:line: message."""
    path, key = resolve_source(config, policy_path)
    if path is None:
        return _build(_Doc("<defaults>", None), None, policy)
    node = _compose(path)
    if key:
        node = _mapping_child(node, key)
    doc = _Doc(str(path), node)
    return _build(doc, path.parent, policy)


# -- validation ------------------------------------------------------------------------------------


def _build(doc: _Doc, base: Path | None, policy: Policy | None) -> SensorConfig:  # noqa: C901 - one pass
    d = doc.data
    if not isinstance(d, dict):
        doc.error((), "the sensor section is a mapping")
        raise SensorConfigInvalid(doc.errors)

    def sect(name: str) -> dict[str, Any]:
        v = d.get(name, {})
        if v is None:
            return {}
        if not isinstance(v, dict):
            doc.error((name,), f"'{name}' must be a mapping")
            return {}
        return v

    def num(obj: dict[str, Any], path: tuple[Any, ...], key: str, default: float, lo: float, hi: float,
            integer: bool = True) -> Any:
        v = obj.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:
            doc.error((*path, key), f"'{key}' must be a {'whole ' if integer else ''}number from {lo} to {hi}")
            return default
        return v

    def flag(obj: dict[str, Any], path: tuple[Any, ...], key: str, default: bool) -> bool:
        v = obj.get(key, default)
        if not isinstance(v, bool):
            doc.error((*path, key), f"'{key}' must be true or false")
            return default
        return v

    def strings(obj: dict[str, Any], path: tuple[Any, ...], key: str, default: tuple[Any, ...] = ()) -> list[str]:
        v = obj.get(key, list(default))
        if v is None:
            return []
        if not isinstance(v, list):
            doc.error((*path, key), f"'{key}' must be a list")
            return []
        return [str(x).strip() for x in v]

    def from_file(obj: dict[str, Any], path: tuple[Any, ...], key: str) -> list[tuple[str, tuple[Any, ...]]]:
        name = obj.get(key)
        if not name:
            return []
        fp = Path(str(name)) if base is None else base / str(name)
        try:
            text = fp.read_text(encoding="utf-8")
        except OSError as exc:
            doc.error((*path, key), f"cannot read list file '{fp}': {exc.strerror}")
            return []
        out = []
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                out.append((entry, (*path, key)))
        return out

    def addresses(obj: dict[str, Any], path: tuple[Any, ...], key: str, default: tuple[str, ...] = (),
                  file_key: str | None = None) -> frozenset[bytes]:
        items = [(s, (*path, key, i)) for i, s in enumerate(strings(obj, path, key, default))]
        if file_key:
            items += from_file(obj, path, file_key)
        out = set()
        for s, p in items:
            try:
                out.add(ipaddress.ip_address(s).packed)
            except ValueError:
                doc.error(p, f"'{s}' is not an IP address")
        return frozenset(out)

    def networks(obj: dict[str, Any], path: tuple[Any, ...], key: str,
                 default: tuple[str, ...] = ()) -> tuple[Any, ...]:
        out = []
        for i, s in enumerate(strings(obj, path, key, default)):
            try:
                out.append(ipaddress.ip_network(s, strict=False))
            except ValueError:
                doc.error((*path, key, i), f"'{s}' is not an IP network (like 10.0.0.0/8)")
        return tuple(out)

    def ports(obj: dict[str, Any], path: tuple[Any, ...], key: str, default: frozenset[int]) -> frozenset[int]:
        v = obj.get(key, sorted(default))
        if not isinstance(v, list):
            doc.error((*path, key), f"'{key}' must be a list of ports")
            return default
        out = set()
        for i, p in enumerate(v):
            if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
                doc.error((*path, key, i), f"bad port '{p}'")
            else:
                out.add(p)
        return frozenset(out)

    known = {"client_networks", "flows", "min_confidence", "protocols", "ports", "doh", "tor", "proxies", "ssh",
             "dhcp", "personal_servers", "nat"}
    for k in d:
        if k not in known:
            doc.error((k,), f"unknown key '{k}' (one of {', '.join(sorted(known))})")

    flows = sect("flows")
    actions: dict[str, Action] = {}
    for proto, (cat, level, incident) in DEFAULT_ACTIONS.items():
        actions[proto] = Action(cat, level, incident)
    for proto, a in sect("protocols").items():
        p = ("protocols", proto)
        if proto not in DEFAULT_ACTIONS:
            doc.error(p, f"unknown protocol '{proto}' (one of {', '.join(DEFAULT_ACTIONS)})")
            continue
        if not isinstance(a, dict):
            doc.error(p, "a protocol entry is a mapping: {category, level, incident}")
            continue
        cur = actions[proto]
        cat = a.get("category", cur.category)
        if not isinstance(cat, str):
            doc.error((*p, "category"), "'category' must be a policy category name")
            cat = cur.category
        actions[proto] = Action(cat, num(a, p, "level", cur.level, 1, 5), flag(a, p, "incident", cur.incident))
    if policy is not None:
        for proto, a in actions.items():
            if a.category not in policy.categories:
                doc.error(("protocols", proto, "category"),
                          f"'{proto}' maps to category '{a.category}', which the policy does not define")

    pt, doh, tor, px, ssh = sect("ports"), sect("doh"), sect("tor"), sect("proxies"), sect("ssh")
    dhcp, ps, nat = sect("dhcp"), sect("personal_servers"), sect("nat")
    doh_names = {n.lower().rstrip(".") for n in strings(doh, ("doh",), "resolver_names", DEFAULT_DOH_NAMES)}
    doh_names |= {n.lower().rstrip(".") for n, _ in from_file(doh, ("doh",), "resolver_names_file")}
    cfg = SensorConfig(
        source=doc.file,
        client_networks=networks(d, (), "client_networks", PRIVATE_NETWORKS),
        max_flows=num(flows, ("flows",), "max_flows", 200_000, 16, 50_000_000),
        idle_timeout=num(flows, ("flows",), "idle_timeout", 120, 1, 86_400, integer=False),
        inspect_packets=num(flows, ("flows",), "inspect_packets", 10, 1, 100),
        min_confidence=num(d, (), "min_confidence", 0.6, 0.0, 1.0, integer=False),
        actions=actions,
        dot_ports=ports(pt, ("ports",), "dot", frozenset({853})),
        ike_ports=ports(pt, ("ports",), "ike", frozenset({500, 4500})),
        l2tp_ports=ports(pt, ("ports",), "l2tp", frozenset({1701})),
        doh_names=frozenset(doh_names),
        doh_ips=addresses(doh, ("doh",), "resolver_ips", DEFAULT_DOH_IPS, "resolver_ips_file"),
        tor_relays=addresses(tor, ("tor",), "relays", (), "relays_file"),
        tor_sni_shape=flag(tor, ("tor",), "sni_shape", True),
        allowed_proxies=addresses(px, ("proxies",), "allowed", (), None),
        ssh_allowed=addresses(ssh, ("ssh",), "allowed_servers"),
        ssh_tunnel_seconds=num(ssh, ("ssh",), "tunnel_min_seconds", 600, 1, 10**7, integer=False),
        ssh_tunnel_bytes=num(ssh, ("ssh",), "tunnel_min_bytes", 20_000_000, 1, 10**13),
        dhcp_allowed=addresses(dhcp, ("dhcp",), "allowed_servers"),
        personal_enabled=flag(ps, ("personal_servers",), "enabled", True),
        personal_from_inside=flag(ps, ("personal_servers",), "from_inside", False),
        personal_allowed=networks(ps, ("personal_servers",), "allowed_servers"),
        personal_ignore_ports=ports(ps, ("personal_servers",), "ignore_ports", frozenset()),
        nat_enabled=flag(nat, ("nat",), "enabled", True),
        nat_expected_hops=num(nat, ("nat",), "expected_hops", 0, 0, 30),
        nat_min_packets=num(nat, ("nat",), "min_packets", 20, 1, 10**6),
    )
    if doc.errors:
        raise SensorConfigInvalid(doc.errors)
    return cfg
