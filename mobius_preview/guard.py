"""The server-side request forgery guard, shared by webhooks and assets by URL.

A URL given in a job names a host the service will call from inside its network, so
before any request the host is resolved and every address it resolves to must be
public (``is_global``), unless an allow-list setting (``PREVIEW_WEBHOOK_ALLOW``,
``PREVIEW_ASSET_ALLOW``) names the host, the address or a network holding it. The
request then goes to an address that was checked (the name kept for the Host header,
TLS SNI and certificate checks), so a second DNS answer cannot swap in another
address between the check and the connection; callers never follow redirects
themselves but check each ``Location`` here again.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import UrlRefused

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A URL whose host was resolved and whose every address passed the guard."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    allowed: bool  # the host or an address is on the allow list (not only public)

    def pinned(self, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The URL aimed at ``address`` (one of ours), the Host header and httpx's
        extensions (SNI) that keep the name for the server and its certificate."""
        parts = urlsplit(self.url)
        netloc = f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"
        url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = {"host": parts.netloc.rsplit("@", 1)[-1]}
        extensions: dict[str, Any] = {"sni_hostname": self.host} if self.scheme == "https" else {}
        return url, headers, extensions


def allowed(host: str, address: Address, allow: tuple[str, ...]) -> bool:
    """Whether the allow list names ``host``, ``address`` or a network holding it."""
    for entry in allow:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name that is not this one
    return False


def kind(address: Address) -> str:
    """What sort of non-public address it is, in words for the error message."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives here)"
    if address.is_private:
        return "private"
    return "non-public"


def check(url: str, allow: tuple[str, ...], *, what: str, setting: str) -> Target:
    """Resolve ``url``'s host and check every address; ``what`` names the URL in errors
    (``webhook``, ``$.previewRequest.assets[2].url``), ``setting`` the allow list.

    Raises ``UrlRefused`` (not http(s), or a non-public address not allowed) and lets
    ``socket.gaierror`` through (the caller knows whether that is worth a retry).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"{what}: {url!r} is not an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefused(f"{what}: {url!r} has a bad port") from None
    host = parts.hostname
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    on_list = False
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        listed = allowed(host, address, allow)
        on_list = on_list or listed
        if not address.is_global and not listed:
            raise UrlRefused(
                f"{what}: host {host!r} resolves to {address}, a {kind(address)} address: refused "
                f"(server-side request forgery guard; {setting} can allow it)")
        if str(address) not in addresses:
            addresses.append(str(address))
    return Target(url, parts.scheme, host, port, tuple(addresses), on_list)
