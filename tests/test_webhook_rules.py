"""The pure parts of webhooks: signatures (checked by the Standard Webhooks reference
library), the retry schedule, and which receiver addresses are refused."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from questline.webhooks import addresses, schedule, signing
from questline.webhooks.addresses import AddressRefused


def test_signatures_verify_with_the_standard_library() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    body = b'{"id":"msg_7","type":"reward.earned","created_at":"x","data":{"qty":10}}'
    headers = signing.headers(secret, "msg_7", int(time.time()), body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Verifier(secret).verify(body, headers)["id"] == "msg_7"
    # Negative controls: another secret, another body, another id are all refused.
    with pytest.raises(WebhookVerificationError):
        Verifier(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body.replace(b"10", b"11"), headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body, {**headers, "webhook-id": "msg_8"})


@pytest.mark.parametrize("attempts", range(1, 16))
def test_retry_n_waits_base_times_two_to_the_n_minus_one_within_jitter(attempts: int) -> None:
    nominal = min(5 * 2 ** (attempts - 1), 21_600)
    low = schedule.retry_delay(attempts, base_seconds=5, max_seconds=21_600, draw=lambda a, b: a)
    high = schedule.retry_delay(attempts, base_seconds=5, max_seconds=21_600, draw=lambda a, b: b)
    assert low == pytest.approx(min(0.8 * 5 * 2 ** (attempts - 1), 21_600))
    assert high == pytest.approx(min(1.2 * 5 * 2 ** (attempts - 1), 21_600))
    assert high <= 21_600
    for _ in range(50):
        drawn = schedule.retry_delay(attempts, base_seconds=5, max_seconds=21_600)
        assert 0.8 * nominal <= drawn <= min(1.2 * nominal, 21_600)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",  # shared address space (a metadata address of some clouds)
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
    ],
)
def test_non_global_addresses_are_refused(address: str) -> None:
    import ipaddress

    assert addresses.refused_because(ipaddress.ip_address(address)) is not None
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(AddressRefused):
        addresses.check_registration(f"http://{host}/hook", allow_private=False)
    addresses.check_registration(f"http://{host}/hook", allow_private=True)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_global_addresses_are_allowed(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    target = addresses.check_registration(f"https://{host}:8443/h?x=1", allow_private=False)
    assert (target.scheme, target.port, target.path) == ("https", 8443, "/h?x=1")


def fixed(answer: Sequence[str]) -> addresses.Resolver:
    return lambda _host, _port: list(answer)


def test_a_name_is_checked_by_every_address_it_resolves_to() -> None:
    url = "https://hooks.example.com/in"
    addresses.check_registration(url, allow_private=False, resolve=fixed(["93.184.215.14"]))
    for answer in (["127.0.0.1"], ["93.184.215.14", "10.1.2.3"], ["::1"]):
        with pytest.raises(AddressRefused, match="hooks.example.com"):
            addresses.check_registration(url, allow_private=False, resolve=fixed(answer))
    # With private receivers allowed nothing is looked up.
    addresses.check_registration(url, allow_private=True, resolve=fixed(["127.0.0.1"]))


def test_the_real_resolver_sees_localhost_and_numeric_hosts_as_loopback() -> None:
    for url in ("http://localhost:9/", "http://2130706433/", "http://0x7f.1/"):
        with pytest.raises(AddressRefused):
            addresses.check_registration(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/",
        "file:///etc/passwd",
        "gopher://93.184.215.14/",
        "93.184.215.14/hook",
        "http:///nohost",
        "http://user:pw@93.184.215.14/",
        "http://93.184.215.14:99999/",
        "http://93.184.215.14/a b",
        "http://93.184.215.14/" + "a" * 2100,
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(AddressRefused):
        addresses.check_registration(url, allow_private=True)


def test_pinned_url_keeps_the_host_header_and_path() -> None:
    target = addresses.parse("http://Hooks.Example.com:8080/in?a=1")
    assert target.pinned_url("93.184.215.14") == "http://93.184.215.14:8080/in?a=1"
    assert target.host_header == "hooks.example.com:8080"
    v6 = addresses.parse("https://[2606:4700::1111]/")
    assert v6.pinned_url("2606:4700::1111") == "https://[2606:4700::1111]:443/"
    assert v6.host_header == "[2606:4700::1111]"
