"""Where the device may send footage (protocol.md §4 rule 9).

This module owns two pure checks:

- `upload_url_problem(url, ...)`: is an RFA's `upload_url` acceptable at all, judged from
  its text alone (the RFA check applies it before a request is accepted);
- `address_allowed(ip, ...)`: may the uploader connect to this address, which it asks for
  every address it actually connects to after DNS resolution (a host name that looks
  public can resolve to a private address, so the text check alone is not enough).

Choices made where docs/protocol.md is silent, each on the side of refusing:

- Scheme `https` only; `http` only when the host is a loopback address (`127.0.0.0/8`,
  `::1` or the exact name `localhost`) *and* the config allows it for testing. `https`
  to a loopback host is refused even then: the testing switch is about plain http and
  nothing else needs loopback.
- An address is public only when it is outside every special-purpose range of the IANA
  registries (loopback, private, link-local, unique-local, site-local, CGNAT
  `100.64.0.0/10`, unspecified, multicast, broadcast, reserved `240.0.0.0/4`,
  documentation and benchmarking ranges, `192.0.0.0/24`, the 6to4 relay anycast
  `192.88.99.0/24`). For IPv6 it must be global unicast (`2000::/3`), outside
  `2001::/23` (IETF protocol assignments, which include Teredo, whose client address is
  obfuscated), `2001:db8::/32` and `3fff::/20` (documentation). Python's own
  `is_global` is not used: it has varied between Python releases and, in 3.11, calls
  `::ffff:8.8.8.8` reserved and `64:ff9b::7f00:1` global.
- Addresses that embed an IPv4 address are judged by the embedded address:
  IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, 6to4 `2002::/16` and the
  well-known NAT64 prefix `64:ff9b::/96`. The local-use NAT64 prefix `64:ff9b:1::/48`
  is refused outright.
- Userinfo (`user:pass@`) is refused: it hides the real host from a reader
  (`https://trusted.example@10.0.0.1/`).
- Every character of the URL must be printable ASCII without spaces or backslashes.
  Python's `urlsplit` silently drops tabs and newlines and some HTTP stacks read `\\` as
  `/`, so such URLs could mean different hosts to different parsers. International
  host names must therefore arrive in their ASCII (`xn--`) form.
- A host name must be letters, digits and hyphens in dot-separated labels of 1-63
  characters, at most 253 in all, with no trailing dot. A name whose last label is
  numeric (`2130706433`, `127.1`, `0x7f.1`) is refused unless it is a plain
  dotted-quad IPv4 address: C resolvers read such names as IPv4 in shorthand, octal or
  hex, so they could reach an address the text check never saw. Names ending in
  `.localhost` (RFC 6761) are refused as loopback.
- IPv6 zone ids (`[fe80::1%25eth0]`) are refused; only link-local addresses carry them.
- Any port from 1 to 65535 is allowed (tus servers commonly listen on 1080 or 8080);
  port 0, an empty port (`host:`) and non-numeric ports are refused.
- A fragment (`#...`) is refused: it has no meaning to an upload and is most likely a
  mistake or an attempt to confuse a parser. A query string is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_BLOCKED = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)

_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_BLOCKED = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_V6_COMPAT = ipaddress.IPv6Network("::/96")
_V6_6TO4 = ipaddress.IPv6Network("2002::/16")
_V6_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_V4_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_V6_LOOPBACK = ipaddress.IPv6Address("::1")

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
MAX_URL_LENGTH = 2048


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, for the forms that embed one."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _V6_COMPAT or addr in _V6_NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    return None


def is_public(addr: IPAddress) -> bool:
    """True when `addr` is an ordinary public unicast address (see the module docstring)."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return False
        embedded = _embedded_v4(addr)
        if embedded is not None:
            return is_public(embedded)
        if addr not in _V6_GLOBAL_UNICAST:
            return False
        return not any(addr in net for net in _V6_BLOCKED)
    return not any(addr in net for net in _V4_BLOCKED)


def is_loopback(addr: IPAddress) -> bool:
    """Loopback in its plain forms only: `127.0.0.0/8` and `::1` (not `::ffff:127.0.0.1`)."""
    if isinstance(addr, ipaddress.IPv6Address):
        return addr == _V6_LOOPBACK and not addr.scope_id
    return addr in _V4_LOOPBACK


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_allowed(ip: str, *, allow_loopback: bool) -> bool:
    """May the uploader connect to `ip` (a textual address as DNS resolution returned it)?

    Pass `allow_loopback=True` only when the upload URL itself was an accepted plain-http
    loopback URL (testing); otherwise only public addresses pass. Anything that does not
    parse as an address is refused.
    """
    if not isinstance(ip, str):
        return False
    addr = _parse_ip(ip)
    if addr is None:
        return False
    if allow_loopback and is_loopback(addr):
        return True
    return is_public(addr)


def _host_problem(host: str) -> str | None:
    """Problem with a DNS host name (already lower-cased, not an IP literal), or None."""
    if len(host) > 253:
        return "host name too long"
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "host is not a valid DNS name"
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        return "numeric host is not a dotted-quad IPv4 address"
    if labels[-1] == "localhost":
        return "host is loopback"
    return None


def upload_url_problem(url: str, *, allow_plain_http_loopback: bool) -> str | None:
    """None when `url` may receive an upload; otherwise a short reason safe to log."""
    if not isinstance(url, str) or not url:
        return "not a URL"
    if len(url) > MAX_URL_LENGTH:
        return "URL too long"
    if not _URL_CHARS.fullmatch(url) or "\\" in url:
        return "URL has characters outside printable ASCII, spaces or backslashes"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "URL does not parse or has a bad port"
    if parts.scheme not in ("https", "http"):
        return "scheme is not https"
    netloc = parts.netloc
    if not netloc:
        return "URL has no host"
    if "@" in netloc:
        return "URL carries userinfo"
    if parts.fragment or url.endswith("#"):
        return "URL carries a fragment"
    if netloc.endswith(":"):
        return "URL has an empty port"
    if port == 0:
        return "port 0"
    host = parts.hostname or ""
    if not host:
        return "URL has no host"
    if netloc.startswith("["):
        # urlsplit accepts IPv6 brackets around anything; the content must be an IPv6 address
        if "%" in host:
            return "IPv6 zone ids are not allowed"
        addr = _parse_ip(host)
        if not isinstance(addr, ipaddress.IPv6Address):
            return "bracketed host is not an IPv6 address"
    else:
        addr = _parse_ip(host)
        if isinstance(addr, ipaddress.IPv6Address):
            return "IPv6 address without brackets"
    loopback_name = addr is None and host == "localhost"
    if addr is None and not loopback_name:
        problem = _host_problem(host)
        if problem is not None:
            return problem
    loopback = loopback_name or (addr is not None and is_loopback(addr))
    if parts.scheme == "http":
        if not loopback:
            return "plain http is allowed only to a loopback address"
        if not allow_plain_http_loopback:
            return "plain http to loopback is not enabled"
        return None
    if loopback:
        return "host is loopback"
    if addr is not None and not is_public(addr):
        return "host is not a public address"
    return None
