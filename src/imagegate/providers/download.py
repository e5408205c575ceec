"""Fetching images that a provider answered with as URLs, without becoming an SSRF proxy.

A provider URL is attacker-influenced data (a compromised or misconfigured endpoint can
answer with any URL). So: http(s) only; the host is resolved once and every address is
checked (no loopback, private, link-local, metadata, multicast or reserved ranges); the
connection goes to the checked address (so DNS cannot be re-pointed between check and
use); redirects are not followed; the body is cut off past a size limit and a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from imagegate.providers.base import ProviderError

BLOCKED_NETWORKS = [
    ipaddress.ip_network(n)
    for n in ("100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "64:ff9b::/96", "fd00:ec2::/32")
]


# IPv6 prefixes whose last 32 bits carry an IPv4 address: IPv4-compatible (::/96),
# IPv4-translated (::ffff:0:0:0/96, SIIT) and NAT64's well-known and local-use prefixes.
_IPV4_IN_LAST_32 = [
    ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
]


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries, by each transition scheme that embeds
    one: mapped (::ffff:a.b.c.d), 6to4 (2002::/16), Teredo (2001::/32, server and
    client), NAT64, IPv4-compatible and -translated forms."""
    found = []
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found.extend(address.teredo)
    if any(address in net for net in _IPV4_IN_LAST_32):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # Each embedded IPv4 address is checked as itself: 2002:7f00:1:: is 127.0.0.1.
        if any(_forbidden(v4) for v4 in embedded_ipv4(address)):
            return True
        if address.ipv4_mapped:
            return False  # exactly its IPv4 address, which passed
    return (
        not address.is_global
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or any(address in net for net in BLOCKED_NETWORKS)
    )


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProviderError(f"image URL host {host!r} does not resolve") from exc
    return sorted({info[4][0] for info in infos})


async def fetch_image(
    url: str, *, max_bytes: int, timeout_s: float, trusted_hosts: frozenset[str] = frozenset()
) -> bytes:
    """The bytes at a provider's image URL, or ProviderError saying why not.

    `trusted_hosts` ("host:port") are exempt from the address check: an operator's own
    OpenAI-compatible server on a private network serves its images from there.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(f"refusing image URL with scheme {parts.scheme!r}: only http(s)")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await _resolve(host, port)
    if f"{host}:{port}" not in trusted_hosts:
        bad = [a for a in addresses if _forbidden(ipaddress.ip_address(a.split("%")[0]))]
        if bad or not addresses:
            raise ProviderError(
                f"refusing image URL: {host} resolves to a non-public address ({', '.join(bad)})"
            )
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    target = parts._replace(netloc=f"{literal}:{port}").geturl()
    try:
        async with asyncio.timeout(timeout_s):
            return await _stream(target, host, parts.netloc, max_bytes, parts.scheme == "https")
    except TimeoutError as exc:
        raise ProviderError(
            f"downloading the image took longer than {timeout_s:g}s", error_type="timeout"
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderError(f"downloading the image failed: {type(exc).__name__}") from exc


async def _stream(target: str, host: str, netloc: str, max_bytes: int, tls: bool) -> bytes:
    extensions = {"sni_hostname": host} if tls else {}
    async with (
        httpx.AsyncClient(follow_redirects=False, trust_env=False) as client,
        client.stream("GET", target, headers={"Host": netloc}, extensions=extensions) as res,
    ):
        if res.status_code != 200:
            raise ProviderError(f"image URL answered HTTP {res.status_code}")
        declared = res.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise ProviderError(f"image at URL is larger than the limit of {max_bytes} bytes")
        chunks, size = [], 0
        async for chunk in res.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise ProviderError(f"image at URL is larger than the limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
