"""Finding 11: IPv6 forms that embed an IPv4 address are checked as that IPv4 address."""

from __future__ import annotations

import ipaddress

import pytest

from imagegate.providers.base import ProviderError
from imagegate.providers.download import _forbidden, fetch_image

EMBEDDED_PRIVATE = [
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
    "2002:0a00:0001::",  # 6to4 of 10.0.0.1
    "2001:0:7f00:1::",  # Teredo, server 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (obfuscated)
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 of 169.254.169.254
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::ffff:a9fe:a9fe",  # IPv4-mapped 169.254.169.254
    "::ffff:0:a00:1",  # IPv4-translated 10.0.0.1
]


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_embedded_private_ipv4_is_refused(address: str) -> None:
    assert _forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["2002:0808:0808::1", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_public_addresses_stay_allowed(address: str) -> None:
    assert not _forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE[:3])
async def test_download_refuses_6to4_url_before_connecting(address: str) -> None:
    with pytest.raises(ProviderError, match="non-public"):
        await fetch_image(f"http://[{address}]:8080/image.png", max_bytes=1000, timeout_s=2)
