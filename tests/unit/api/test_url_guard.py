"""The address policy of image fetching: public addresses only, checked on what a name resolves to,
and the connection made to the very address that was checked."""

from __future__ import annotations

import ipaddress
import socket

import httpcore
import pytest

from api.url_guard import AddressPolicy, GuardedBackend, RefusedAddress, resolve

NOT_PUBLIC = [
    "127.0.0.1", "127.255.0.9", "::1",  # loopback
    "10.1.2.3", "172.16.0.1", "192.168.1.1", "fd00::1", "fc12:3456::1",  # private, unique local
    "169.254.169.254", "fe80::1",  # link-local (cloud metadata lives here)
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "0.0.0.0", "::",  # unspecified
    "100.64.0.1",  # carrier-grade NAT: not private, not public either
    "192.0.2.1", "2001:db8::1",  # documentation
    "fec0::1",  # site-local
    "::ffff:127.0.0.1", "::ffff:10.0.0.1",  # IPv4-mapped
    "64:ff9b::a00:1", "64:ff9b::7f00:1",  # NAT64 of 10.0.0.1 and 127.0.0.1
    "2002:7f00:1::1", "2002:a00:1::1",  # 6to4 of 127.0.0.1 and 10.0.0.1
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:81b::200e"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_addresses_that_are_not_public_are_refused(address):
    with pytest.raises(RefusedAddress) as caught:
        AddressPolicy().check_address(ipaddress.ip_address(address))
    assert str(ipaddress.ip_address(address)) in str(caught.value)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    AddressPolicy().check_address(ipaddress.ip_address(address))


def test_an_allowed_network_lets_its_addresses_in_and_no_others():
    policy = AddressPolicy(allowed_networks=["127.0.0.1/32", "10.0.0.0/8"])
    for allowed in ("127.0.0.1", "10.200.0.1"):
        policy.check_address(ipaddress.ip_address(allowed))
    for refused in ("127.0.0.2", "192.168.0.1", "::1"):
        with pytest.raises(RefusedAddress):
            policy.check_address(ipaddress.ip_address(refused))


def test_the_host_allow_list_takes_exact_names_and_dotted_domains():
    policy = AddressPolicy(allowed_hosts=["images.example.com", ".cdn.example.org"])
    for allowed in ("images.example.com", "IMAGES.example.com.", "cdn.example.org", "a.b.cdn.example.org"):
        policy.check_host(allowed)
    for refused in ("example.com", "evil-images.example.com", "xcdn.example.org", "cdn.example.org.evil.net"):
        with pytest.raises(RefusedAddress):
            policy.check_host(refused)
    AddressPolicy().check_host("anything.example")  # no list: any name (its addresses are still checked)


@pytest.mark.parametrize("host", ["localhost", "127.1", "2130706433", "0x7f000001", "0177.0.0.1"])
def test_names_and_odd_spellings_of_loopback_resolve_to_it_and_are_refused(host):
    addresses = resolve(host, 80)
    with pytest.raises(RefusedAddress):
        for address in addresses:
            AddressPolicy().check_address(address)


def test_an_unresolvable_host_is_refused():
    with pytest.raises(RefusedAddress, match="could not be resolved"):
        resolve("no-such-host.invalid", 80)


@pytest.fixture
def connections(monkeypatch):
    """Where the backend really connects (the TCP connect is replaced: no network here)."""
    made: list[tuple[str, int]] = []

    def connect(self, host, port, timeout=None, local_address=None, socket_options=None):
        made.append((host, port))
        return "stream"

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    return made


def fake_dns(monkeypatch, *answers: list[str]) -> list[str]:
    """getaddrinfo answering each lookup with the next list of addresses; returns the names asked."""
    asked: list[str] = []
    pending = list(answers)

    def getaddrinfo(host, port, *args, **kwargs):
        asked.append(host)
        addresses = pending.pop(0) if len(pending) > 1 else pending[0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(monkeypatch, connections):
    fake_dns(monkeypatch, ["10.0.0.5"])
    with pytest.raises(RefusedAddress, match="10.0.0.5 is a private address"):
        GuardedBackend(AddressPolicy()).connect_tcp("images.example.com", 443)
    assert connections == []


def test_a_name_with_one_private_address_among_public_ones_is_refused(monkeypatch, connections):
    fake_dns(monkeypatch, ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(RefusedAddress, match="127.0.0.1"):
        GuardedBackend(AddressPolicy()).connect_tcp("rebind.example.com", 80)
    assert connections == []


def test_the_connection_goes_to_the_checked_address_not_to_the_name(monkeypatch, connections):
    # A rebinding DNS server answers public first, private on every later lookup: the backend
    # must look up once and connect to what it checked.
    asked = fake_dns(monkeypatch, ["93.184.216.34"], ["127.0.0.1"])
    assert GuardedBackend(AddressPolicy()).connect_tcp("rebind.example.com", 8080) == "stream"
    assert asked == ["rebind.example.com"]
    assert connections == [("93.184.216.34", 8080)]


def test_the_next_checked_address_is_tried_when_one_does_not_answer(monkeypatch):
    fake_dns(monkeypatch, ["93.184.216.34", "93.184.216.35"])
    tried = []

    def connect(self, host, port, timeout=None, local_address=None, socket_options=None):
        tried.append(host)
        if host.endswith(".34"):
            raise httpcore.ConnectError("refused")
        return "stream"

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    assert GuardedBackend(AddressPolicy()).connect_tcp("two.example.com", 80) == "stream"
    assert tried == ["93.184.216.34", "93.184.216.35"]
