"""Where the web process may connect to fetch an image: public addresses only, checked at connect time.

A URL's host is resolved here, every address it resolves to is checked, and the socket connects
to one of those checked addresses, never to the name again: a DNS answer that changes between
the check and the connection (DNS rebinding) cannot slip a private address in. Every connection
of a fetch, redirects included, goes through `GuardedBackend.connect_tcp`.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable, Optional

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedAddress(Exception):
    """A destination the policy does not allow (the message says which and why)."""


class AddressPolicy:
    """Public addresses are allowed; others only inside `allowed_networks`. With `allowed_hosts`,
    only those host names ("example.com", or ".example.com" for it and its subdomains)."""

    def __init__(self, allowed_networks: Iterable[str] = (), allowed_hosts: Iterable[str] = ()):
        self.allowed_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self.allowed_hosts = tuple(h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip())

    def check_host(self, host: str) -> None:
        """Refuse a host name outside the allow-list (when there is one)."""
        if not self.allowed_hosts:
            return
        name = host.lower().rstrip(".")
        for allowed in self.allowed_hosts:
            if name == allowed.lstrip(".") or (allowed.startswith(".") and name.endswith(allowed)):
                return
        raise RefusedAddress(f"the host {host!r} is not among the hosts this server fetches images from")

    def check_address(self, address: IPAddress) -> None:
        """Refuse an address that is not public, unless an allowed network holds it."""
        reason = self.refusal(address)
        if reason:
            raise RefusedAddress(f"the address {address} is {reason}")

    def refusal(self, address: IPAddress) -> Optional[str]:
        if any(address in network for network in self.allowed_networks if network.version == address.version):
            return None
        reason = _non_public(address)
        if reason:
            return reason
        # IPv6 forms that carry an IPv4 address, which a relay or gateway may deliver to.
        for embedded in _embedded_ipv4(address):
            reason = self.refusal(embedded)
            if reason:
                return f"{reason} (inside the IPv6 address)"
        return None


def _non_public(address: IPAddress) -> Optional[str]:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 6 and address.is_site_local:
        return "a site-local address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if address.version != 6:
        return []
    found = []
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found.extend(address.teredo)
    if address in NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself), in the resolver's order.

    Under gevent, getaddrinfo is cooperative (gevent's resolver), so a slow DNS server blocks only
    this request."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedAddress(f"the host {host!r} could not be resolved ({exc})") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedAddress(f"the host {host!r} has no addresses")
    return addresses


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses the policy allows.

    A host is refused if any of its addresses is refused: a name that resolves to both a public
    and a private address is a rebinding attempt, not a public host."""

    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None,
                    local_address: Optional[str] = None, socket_options=None) -> httpcore.NetworkStream:
        addresses = resolve(host, port)
        for address in addresses:
            self.policy.check_address(address)
        failure: Optional[Exception] = None
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout=timeout, local_address=local_address,
                                           socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure
