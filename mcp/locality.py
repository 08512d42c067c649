"""Who the client is: its address and whether the request is local (DESIGN §10).

One place decides both, for keyless mode, the /metrics exemption, the rate limiter's key
and the logs. Behind a reverse proxy on the same host every socket peer is loopback, so the
peer alone never proves a request local: a local request comes from loopback straight to
the service, carries no forwarding header and names a loopback host."""

from __future__ import annotations

import functools
import ipaddress

from flask import request

from .settings import Settings

FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host", "X-Forwarded-Prefix")
# The WSGI environ keys of those headers: looked up in the environ directly, which is what
# request.headers does for each name, without building a Headers view per lookup.
FORWARDING_ENVIRON = tuple("HTTP_" + name.upper().replace("-", "_") for name in FORWARDING_HEADERS)
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
# design: the addresses and Host values one service sees are few (its peers, its names), and
# parsing them cost more than the rest of a keyless request's checks: the answers are kept.
CACHED_NAMES = 1024


def ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((address or "").strip().strip("[]"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=CACHED_NAMES)
def is_loopback(address: str | None) -> bool:
    parsed = ip(address)
    return parsed is not None and parsed.is_loopback


def host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:5060` -> `::1`, `localhost:80` -> `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


@functools.lru_cache(maxsize=CACHED_NAMES)
def is_loopback_host(host: str) -> bool:
    name = host_name(host)
    return name in LOOPBACK_NAMES or is_loopback(name)


def is_forwarded() -> bool:
    """The request carries a header a proxy adds."""
    environ = request.environ
    return any(key in environ for key in FORWARDING_ENVIRON)


def forwarded_hops() -> list[str]:
    """The X-Forwarded-For addresses, client first, the nearest proxy's report last."""
    values = request.headers.getlist("X-Forwarded-For")
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


def client_address(settings: Settings) -> str:
    """The client's address: the socket peer, or with TRUSTED_PROXIES=n the address the
    n-th proxy from us reports (hops added before it are the client's word and ignored; a
    report that is not an IP address is not used)."""
    peer = request.environ.get("REMOTE_ADDR") or "unknown"
    n = settings.trusted_proxies
    hops = forwarded_hops() if n > 0 else []
    reported = ip(hops[-n]) if n > 0 and len(hops) >= n else None
    return str(reported) if reported is not None else peer


def is_local() -> bool:
    """True only for a request from loopback straight to the service: socket peer loopback,
    no forwarding header, a loopback Host.

    design: with TRUSTED_PROXIES a proxy may report a loopback client too (a process on the
    proxy's host, or a tunnel such as cloudflared that reaches the proxy from loopback for
    every internet client). Such a request is treated as remote: a local client can always
    reach the service directly, so nothing is lost, and no proxy topology opens it."""
    if not is_loopback(request.environ.get("REMOTE_ADDR")):
        return False
    return not is_forwarded() and is_loopback_host(request.host)
