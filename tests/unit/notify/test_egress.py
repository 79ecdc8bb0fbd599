"""The outbound target policy (SSRF guard): URLs, hosts, addresses and guarded connections."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from notify.channels.egress import (
    GuardedBackend,
    GuardedTransport,
    TargetRefused,
    check_host,
    check_target,
    check_url,
    describe_refusal,
    guarded_client,
    literal_address,
)
from notify.settings import NotifySettings
from paht_devenv.environment import Environment, Ports

METADATA = "169.254.169.254"
OK_RESPONSE = [b"HTTP/1.1 204 No Content\r\n\r\n"]


def answering(*addresses: str) -> Any:
    """A resolver that answers ``addresses`` for every name."""

    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


async def unresolvable(host: str, port: int) -> list[str]:
    raise OSError(f"{host}: Name or service not known")


def refusal(url: str, *, allow_http: bool = True, allow_private: bool = False) -> str:
    with pytest.raises(TargetRefused) as caught:
        check_url(url, allow_http=allow_http, allow_private=allow_private)
    return caught.value.reason


# -- refused whatever the settings say ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://224.0.0.251/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://0.1.2.3/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://192.0.2.10/", "reserved"),
        ("http://[2001:db8::1]/", "reserved"),
        ("http://[::a9fe:a9fe]/", "reserved"),
    ],
)
def test_dangerous_addresses_are_refused_even_when_private_targets_are_allowed(
    url: str, what: str
) -> None:
    assert what in refusal(url, allow_private=False)
    assert what in refusal(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://2852039166/latest/meta-data/",  # decimal
        "http://0xA9FEA9FE/",  # hex
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0251.0376.0251.0376/",  # octal (httpx itself rejects it)
        "http://169.254.43518/",  # a.b.c with a 16-bit last part
        "http://169.16689662/",  # a.b with a 24-bit last part
        "http://169.254.169.254./",  # trailing dot
    ],
)
def test_odd_ipv4_spellings_are_read_as_the_address_they_are(url: str) -> None:
    reason = refusal(url, allow_private=True)

    assert f"({METADATA}) is a cloud metadata address" in reason


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",  # 6to4
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
        "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64
    ],
)
def test_ipv6_forms_of_the_metadata_address_are_refused(url: str) -> None:
    reason = refusal(url, allow_private=True)

    assert f"an IPv6 form of {METADATA}, a cloud metadata address" in reason


@pytest.mark.parametrize(
    "url",
    ["http://metadata/", "http://metadata.google.internal/", "http://METADATA.Google.Internal./"],
)
def test_metadata_names_are_refused_even_when_private_targets_are_allowed(url: str) -> None:
    assert "cloud metadata name" in refusal(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["http://1.2.3.4.5/", "http://08.1.2.3/", "http://4294967296/", "http://1.2.3.256./"]
)
def test_malformed_numeric_hosts_are_refused(url: str) -> None:
    refusal(url, allow_private=True)


# -- refused unless private targets are allowed -------------------------------------------


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://10.0.0.5/", "private"),
        ("http://172.16.0.9/", "private"),
        ("http://172.31.255.255/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://[fd12:3456::1]/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://localhost:8080/", "local name"),
        ("http://api.localhost/", "local name"),
        ("http://printer.local/", "local name"),
        ("http://db.corp.internal/", "local name"),
        ("http://LOCALHOST./", "local name"),
    ],
)
def test_private_targets_are_refused_unless_allowed(url: str, what: str) -> None:
    assert what in refusal(url, allow_private=False)

    check_url(url, allow_http=True, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.vn/paht?tenant=bn",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
        "https://[::ffff:8.8.8.8]/hook",
        "https://172.32.0.1/",  # just outside 172.16/12
        "https://100.128.0.1/",  # just outside 100.64/10
    ],
)
def test_public_targets_pass(url: str) -> None:
    assert check_url(url, allow_http=False, allow_private=False)[1] == 443


# -- scheme and credentials -----------------------------------------------------------------


def test_only_https_unless_http_is_allowed() -> None:
    assert refusal("http://hooks.example.vn/", allow_http=False) == "url must use https"
    assert check_url("http://hooks.example.vn/", allow_http=True, allow_private=False) == (
        "hooks.example.vn",
        80,
    )


@pytest.mark.parametrize("url", ["ftp://hooks.example.vn/", "file:///etc/passwd", "gopher://x/"])
def test_other_schemes_are_refused(url: str) -> None:
    assert refusal(url, allow_http=True).startswith("url must use https or http")


@pytest.mark.parametrize(
    "url", ["https://user:pw@hooks.example.vn/", "https://token@hooks.example.vn/"]
)
def test_credentials_in_the_url_are_refused(url: str) -> None:
    assert refusal(url) == "url must not embed credentials"


# -- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2852039166", METADATA),
        ("0xA9FEA9FE", METADATA),
        ("0251.0376.0251.0376", METADATA),
        ("127.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("hooks.example.vn", None),
        ("1password.example", None),
    ],
)
def test_literal_addresses_follow_inet_aton(host: str, address: str | None) -> None:
    found = literal_address(host)

    assert (None if found is None else str(found)) == address


def test_check_host_returns_a_literal_address_and_none_for_a_name() -> None:
    assert check_host("8.8.8.8", allow_private=False) == ipaddress.ip_address("8.8.8.8")
    assert check_host("hooks.example.vn", allow_private=False) is None


def test_describe_refusal_allows_public_addresses() -> None:
    assert describe_refusal(ipaddress.ip_address("1.1.1.1"), allow_private=False) is None
    assert describe_refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    assert describe_refusal(ipaddress.ip_address(METADATA), allow_private=True) == (
        "a cloud metadata address"
    )


# -- subscription time: every resolved address must pass --------------------------------


async def test_a_name_resolving_to_a_public_address_passes() -> None:
    await check_target(
        "https://hooks.example.vn/x",
        allow_http=False,
        allow_private=False,
        resolver=answering("93.184.216.34", "2606:2800:220:1::1"),
    )


@pytest.mark.parametrize(
    ("answers", "refused"),
    [
        (("93.184.216.34", "127.0.0.1"), "127.0.0.1, a loopback address"),
        (("10.1.2.3",), "10.1.2.3, a private address"),
        ((METADATA,), f"{METADATA}, a cloud metadata address"),
        (("::ffff:169.254.169.254",), f"an IPv6 form of {METADATA}"),
        (("fe80::1%2",), "fe80::1, a link-local address"),
    ],
)
async def test_a_name_with_any_internal_address_is_refused(
    answers: tuple[str, ...], refused: str
) -> None:
    with pytest.raises(TargetRefused, match="hooks.example.vn resolves to") as caught:
        await check_target(
            "https://hooks.example.vn/x",
            allow_http=False,
            allow_private=False,
            resolver=answering(*answers),
        )

    assert refused in caught.value.reason


async def test_allowing_private_targets_never_allows_metadata_behind_a_name() -> None:
    await check_target(
        "http://receiver.test/x",
        allow_http=True,
        allow_private=True,
        resolver=answering("127.0.0.1"),
    )
    with pytest.raises(TargetRefused, match="cloud metadata"):
        await check_target(
            "http://receiver.test/x",
            allow_http=True,
            allow_private=True,
            resolver=answering(METADATA),
        )


async def test_a_name_that_does_not_resolve_now_is_left_to_the_connect_time_check() -> None:
    await check_target(
        "https://not-yet.example.vn/x", allow_http=False, allow_private=False, resolver=unresolvable
    )


async def test_a_literal_address_is_not_resolved() -> None:
    await check_target(
        "https://8.8.8.8/x", allow_http=False, allow_private=False, resolver=unresolvable
    )


# -- connect time: the guarded backend ----------------------------------------------------


class RecordingStream(httpcore.AsyncMockStream):
    def __init__(self, buffer: list[bytes], log: list[tuple[str, Any]]) -> None:
        super().__init__(buffer)
        self._log = log

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        self._log.append(("tls", server_hostname))
        return self


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Stands in for the network: records where it was asked to connect, answers a script."""

    def __init__(self, *, refuse: Iterable[str] = ()) -> None:
        self.log: list[tuple[str, Any]] = []
        self._refuse = set(refuse)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.log.append(("connect", (host, port)))
        if host in self._refuse:
            raise httpcore.ConnectError(f"connection to {host} refused")
        return RecordingStream(list(OK_RESPONSE), self.log)

    async def sleep(self, seconds: float) -> None:
        pass


def client_over(backend: GuardedBackend) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=GuardedTransport(backend, limits=httpx.Limits()), follow_redirects=False
    )


async def test_connects_to_the_checked_address_and_verifies_tls_against_the_name() -> None:
    network = RecordingBackend()
    backend = GuardedBackend(
        allow_private=False, resolver=answering("93.184.216.34"), backend=network
    )

    async with client_over(backend) as client:
        response = await client.post("https://hooks.example.vn/x", content=b"{}")

    assert response.status_code == 204
    assert network.log == [("connect", ("93.184.216.34", 443)), ("tls", "hooks.example.vn")]


async def test_a_rebound_name_is_refused_before_any_connection() -> None:
    network = RecordingBackend()
    backend = GuardedBackend(allow_private=False, resolver=answering("127.0.0.1"), backend=network)

    async with client_over(backend) as client:
        with pytest.raises(TargetRefused, match="127.0.0.1, a loopback address"):
            await client.post("https://hooks.example.vn/x", content=b"{}")

    assert network.log == []


async def test_odd_spellings_are_refused_at_connect_time_too() -> None:
    network = RecordingBackend()
    backend = GuardedBackend(allow_private=True, resolver=unresolvable, backend=network)

    async with client_over(backend) as client:
        with pytest.raises(TargetRefused, match="cloud metadata"):
            await client.get("http://2852039166/latest/meta-data/")

    assert network.log == []


async def test_the_next_checked_address_is_tried_when_one_does_not_answer() -> None:
    network = RecordingBackend(refuse={"2606:2800:220:1::1"})
    backend = GuardedBackend(
        allow_private=False,
        resolver=answering("2606:2800:220:1::1", "93.184.216.34"),
        backend=network,
    )

    async with client_over(backend) as client:
        response = await client.get("http://hooks.example.vn/")

    assert response.status_code == 204
    assert [entry for kind, entry in network.log if kind == "connect"] == [
        ("2606:2800:220:1::1", 80),
        ("93.184.216.34", 80),
    ]


async def test_resolution_and_connection_failures_are_httpx_connect_errors() -> None:
    unreachable = GuardedBackend(
        allow_private=False,
        resolver=answering("93.184.216.34"),
        backend=RecordingBackend(refuse={"93.184.216.34"}),
    )
    unknown = GuardedBackend(allow_private=False, resolver=unresolvable)

    for backend in (unreachable, unknown):
        async with client_over(backend) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://hooks.example.vn/")


# -- the delivery client ------------------------------------------------------------------


async def test_the_delivery_client_guards_connections_and_ignores_environment_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")

    async with guarded_client(NotifySettings(), resolver=answering("127.0.0.1")) as client:
        with pytest.raises(TargetRefused, match="loopback"):
            await client.get("http://hooks.example.vn/")

    assert client.follow_redirects is False
    assert client.trust_env is False
    assert client.timeout.connect == NotifySettings().delivery_timeout_seconds


# -- settings ------------------------------------------------------------------------------


def test_private_targets_are_off_by_default() -> None:
    settings = NotifySettings()

    assert settings.webhook_allow_private is False
    assert settings.webhook_allow_http is False
    assert settings.push_allow_http is False


def production(monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> NotifySettings:
    monkeypatch.setenv("PAHT_ENV", "production")
    return NotifySettings(
        admin_token="a-real-admin-token-from-the-vault",
        jwks_url="https://id.example.vn/.well-known/jwks.json",
        vapid_private_key="-----BEGIN PRIVATE KEY-----\nreal\n-----END PRIVATE KEY-----",
        **overrides,
    )


def test_production_refuses_to_start_with_private_targets_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert production(monkeypatch).env == "production"
    with pytest.raises(ValueError, match="NOTIFY_WEBHOOK_ALLOW_PRIVATE"):
        production(monkeypatch, webhook_allow_private=True)


def test_local_runs_allow_local_receivers_unless_the_caller_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "PAHT_ENV",
        "NOTIFY_WEBHOOK_ALLOW_PRIVATE",
        "NOTIFY_WEBHOOK_ALLOW_HTTP",
        "NOTIFY_PUSH_ALLOW_HTTP",
    ):
        monkeypatch.delenv(name, raising=False)
    env = Environment(state_dir=tmp_path, ports=Ports(), extra_env={"PAHT_ENV": "test"})

    notify = env.service_env("notify")
    monkeypatch.setenv("NOTIFY_WEBHOOK_ALLOW_HTTP", "false")
    overridden = env.service_env("notify")
    production_env = Environment(
        state_dir=tmp_path, ports=Ports(), extra_env={"PAHT_ENV": "production"}
    ).service_env("notify")

    assert notify["NOTIFY_WEBHOOK_ALLOW_PRIVATE"] == "true"
    assert notify["NOTIFY_WEBHOOK_ALLOW_HTTP"] == "true"
    assert notify["NOTIFY_PUSH_ALLOW_HTTP"] == "true"
    assert overridden["NOTIFY_WEBHOOK_ALLOW_HTTP"] == "false"
    assert "NOTIFY_WEBHOOK_ALLOW_PRIVATE" not in production_env
    assert "NOTIFY_WEBHOOK_ALLOW_PRIVATE" not in env.service_env("intake")
