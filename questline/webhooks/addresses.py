"""Which receivers a webhook may reach: http(s) URLs whose host resolves only to global
addresses (no loopback, private, link-local, metadata, unspecified, multicast or
reserved ones), unless private receivers are allowed.

Checked at registration and again at every attempt after resolving the name; the
attempt then connects to the address that was checked, so a name that resolves
elsewhere a moment later (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from questline.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses the name resolves to (socket.getaddrinfo's shape is hidden).
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL_LENGTH = 2048


class AddressRefused(Invalid):
    """The URL is not one a webhook may reach (422 at registration)."""


@dataclass(frozen=True)
class Target:
    """Where an attempt goes: the URL as registered, its host and port."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent

    def pinned_url(self, address: str) -> str:
        """The URL with its host replaced by one checked address."""
        shown = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{shown}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = {"http": 80, "https": 443}[self.scheme]
        return shown if self.port == default else f"{shown}:{self.port}"


def parse(url: str) -> Target:
    """A receiver URL's parts; AddressRefused for anything but an absolute http(s) URL
    with a host and no credentials."""
    if len(url) > MAX_URL_LENGTH:
        raise AddressRefused(f"url: at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise AddressRefused("url: no spaces or control characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"url: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AddressRefused("url: only http and https URLs are allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise AddressRefused("url: a host is required")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("url: credentials in the URL are not supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        path=path,
    )


def literal(host: str) -> IPAddress | None:
    """The address a host names literally, or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def refused_because(address: IPAddress) -> str | None:
    """Why a webhook may not reach this address (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return refused_because(embedded)
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved or non-global address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolves the name to (IPv4 and IPv6), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 scope id
        if address not in seen:
            seen.append(address)
    return seen


def check_addresses(target: Target, addresses: Sequence[str], *, allow_private: bool) -> None:
    """AddressRefused unless every address is one a webhook may reach."""
    if allow_private:
        return
    for text in addresses:
        address = ipaddress.ip_address(text)
        why = refused_because(address)
        if why is not None:
            shown = text if text == target.host else f"{target.host} ({text})"
            raise AddressRefused(
                f"url: {shown} is {why}; set QUESTLINE_WEBHOOK_ALLOW_PRIVATE=true to allow it"
            )


def check_registration(
    url: str, *, allow_private: bool, resolve: Resolver = system_resolver
) -> Target:
    """The registration check: a literal address must be allowed; a name that resolves
    must resolve only to allowed addresses (one that does not resolve yet is accepted,
    since every attempt checks again)."""
    target = parse(url)
    address = literal(target.host)
    if address is not None:
        check_addresses(target, [str(address)], allow_private=allow_private)
        return target
    if allow_private:
        return target
    try:
        addresses = resolve(target.host, target.port)
    except (OSError, UnicodeError):
        return target
    check_addresses(target, addresses, allow_private=allow_private)
    return target
