"""Where outbound requests may go (SSRF guard), shared by webhooks and `fetch_url`.

A URL is vetted after DNS resolution: every address its host resolves to must be public.
Loopback, private, link-local, reserved, multicast, unspecified and cloud-metadata
addresses are refused unless the caller allows private targets. The resolver is a
parameter, so tests check the guard without resolving or connecting anywhere."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})


def resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def numeric_host(host: str) -> IPAddress | None:
    """The address a host spelled as a number names, in any spelling the C library accepts
    (`127.1`, `0x7f000001`, `2130706433`, `::1`); None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def non_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # design: `not is_global` also catches what the named checks miss, such as the shared
    # address space 100.64.0.0/10 (carrier NAT, some clouds' internal networks).
    return (str(ip) in METADATA_ADDRESSES or ip.is_loopback or ip.is_private or ip.is_link_local
            or ip.is_reserved or ip.is_multicast or ip.is_unspecified or not ip.is_global)


def vet(url: str, allow_private: bool, resolver: Resolver = resolve,
        hint: str = "") -> tuple[str | None, list[str]]:
    """(why `url` is refused or None, the vetted addresses to connect to). With
    `allow_private` nothing is resolved and the address list is empty."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http and https URLs with a host are accepted", []
    if allow_private:
        return None, []
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "invalid port", []
    number = numeric_host(host)
    if number is not None:
        addresses = [str(number)]
    else:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            return f"cannot resolve {host}: {exc}", []
        if not addresses:
            return f"cannot resolve {host}", []
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if non_public(ip):
            shown = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
            return f"{host} resolves to {shown}, a non-public address{hint}", []
    return None, addresses


def refusal(url: str, allow_private: bool, resolver: Resolver = resolve, hint: str = "") -> str | None:
    """Why `url` may not be requested, or None."""
    return vet(url, allow_private, resolver, hint)[0]
