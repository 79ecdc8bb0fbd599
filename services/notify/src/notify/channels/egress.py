"""Which hosts notify may send to: the server-side request forgery guard of every channel.

One policy, applied twice. ``check_target`` refuses a URL when a subscription is created
(scheme, credentials, host name, every address the name resolves to). ``guarded_client``
builds the delivery client whose connections resolve the host again, check every address
with the same policy and connect to a checked address, so a name that resolves to a public
address at subscription time and to an internal one later (DNS rebinding) is still refused.
TLS (SNI, certificate) is verified against the host name, never the address.

Link-local, multicast, unspecified, broadcast, reserved and cloud-metadata addresses (and
their IPv4-mapped, 6to4, NAT64 and Teredo forms) are refused whatever the settings say.
Loopback, private, CGNAT and unique-local addresses, and ``localhost`` / ``*.localhost`` /
``*.local`` / ``*.internal`` names, are refused unless ``allow_private`` (development and
tests only). Numeric IPv4 spellings (``2852039166``, ``0xA9FEA9FE``, ``0251.0376.0251.0376``)
are read the way ``inet_aton`` and the system resolver read them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpcore
import httpx

from notify.settings import NotifySettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``; OSError or TimeoutError when the name cannot be resolved."""

DNS_TIMEOUT_SECONDS = 5.0

_ALWAYS = True
_UNLESS_ALLOWED = False
_NETWORKS: tuple[tuple[str, str, bool], ...] = (
    # first match wins: specific entries come before the ranges that contain them
    ("169.254.169.254/32", "a cloud metadata address", _ALWAYS),
    ("fd00:ec2::254/128", "a cloud metadata address", _ALWAYS),
    ("100.100.100.200/32", "a cloud metadata address", _ALWAYS),
    ("192.0.0.192/32", "a cloud metadata address", _ALWAYS),
    ("::/128", "the unspecified address", _ALWAYS),
    ("::1/128", "a loopback address", _UNLESS_ALLOWED),
    ("0.0.0.0/8", "an unspecified address", _ALWAYS),
    ("127.0.0.0/8", "a loopback address", _UNLESS_ALLOWED),
    ("169.254.0.0/16", "a link-local address", _ALWAYS),
    ("fe80::/10", "a link-local address", _ALWAYS),
    ("224.0.0.0/4", "a multicast address", _ALWAYS),
    ("ff00::/8", "a multicast address", _ALWAYS),
    ("255.255.255.255/32", "the broadcast address", _ALWAYS),
    ("240.0.0.0/4", "a reserved address", _ALWAYS),
    ("192.0.2.0/24", "a reserved address", _ALWAYS),
    ("198.51.100.0/24", "a reserved address", _ALWAYS),
    ("203.0.113.0/24", "a reserved address", _ALWAYS),
    ("192.88.99.0/24", "a reserved address", _ALWAYS),
    ("::/96", "a reserved address", _ALWAYS),  # IPv4-compatible, deprecated
    ("100::/64", "a reserved address", _ALWAYS),
    ("2001:db8::/32", "a reserved address", _ALWAYS),
    ("3fff::/20", "a reserved address", _ALWAYS),
    ("10.0.0.0/8", "a private address", _UNLESS_ALLOWED),
    ("172.16.0.0/12", "a private address", _UNLESS_ALLOWED),
    ("192.168.0.0/16", "a private address", _UNLESS_ALLOWED),
    ("100.64.0.0/10", "a shared (CGNAT) address", _UNLESS_ALLOWED),
    ("192.0.0.0/24", "a special-purpose address", _UNLESS_ALLOWED),
    ("198.18.0.0/15", "a private address", _UNLESS_ALLOWED),
    ("fc00::/7", "a private address", _UNLESS_ALLOWED),
    ("fec0::/10", "a private address", _UNLESS_ALLOWED),
    ("2001::/23", "a special-purpose address", _UNLESS_ALLOWED),
    ("64:ff9b:1::/48", "a private address", _UNLESS_ALLOWED),
)
_TABLE = tuple((ipaddress.ip_network(net), label, always) for net, label, always in _NETWORKS)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
_NUMBER = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class TargetRefused(ValueError):
    """A URL or address notify must not send to; ``reason`` says why (safe to show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _embedded(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address stands for (6to4, NAT64, Teredo)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    found = [a for a in (ip.sixtofour, ip.teredo[1] if ip.teredo else None) if a is not None]
    if any(ip in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
    return found


def _classify(ip: IPAddress) -> tuple[str, bool] | None:
    for net, label, always in _TABLE:
        if ip.version == net.version and ip in net:
            return label, always
    if not ip.is_global:
        return "not a public address", _UNLESS_ALLOWED
    return None


def describe_refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """What makes ``ip`` a refused destination ("a loopback address"), or None when allowed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        inner = describe_refusal(ip.ipv4_mapped, allow_private=allow_private)
        return None if inner is None else f"an IPv6 form of {ip.ipv4_mapped}, {inner}"
    found = _classify(ip)
    if found is not None and (found[1] or not allow_private):
        return found[0]
    for inner_ip in _embedded(ip):
        inner = describe_refusal(inner_ip, allow_private=allow_private)
        if inner is not None:
            return f"an IPv6 form of {inner_ip}, {inner}"
    return None


def _ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as inet_aton reads it (1 to 4 decimal, octal or hex parts), or None."""
    parts = host.removesuffix(".").split(".")
    if not _NUMBER.match(parts[-1]):
        return None
    if len(parts) > 4 or not all(_NUMBER.match(p) for p in parts):
        raise TargetRefused(f"{host} is not a valid host")
    try:
        values = [
            int(p, 16 if p.startswith("0x") else 8 if p.startswith("0") else 10) for p in parts
        ]
    except ValueError:  # "0x" alone, or 8 and 9 in an octal part
        raise TargetRefused(f"{host} is not a valid IPv4 address") from None
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(values))):
        raise TargetRefused(f"{host} is not a valid IPv4 address")
    number = last
    for position, value in enumerate(head):
        number |= value << (24 - 8 * position)
    return ipaddress.IPv4Address(number)


def literal_address(host: str) -> IPAddress | None:
    """The address a literal host names (any IPv4 spelling, bracketed IPv6), or None for a name."""
    bare = host.strip("[]").split("%", 1)[0].lower()
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return _ipv4_number(bare)


def check_host(host: str, *, allow_private: bool) -> IPAddress | None:
    """Refuse a host by its name or literal address; the address, or None for a DNS name."""
    ip = literal_address(host)
    if ip is not None:
        why = describe_refusal(ip, allow_private=allow_private)
        if why is not None:
            shown = host.strip("[]")
            raise TargetRefused(
                f"{shown} is {why}" if shown == str(ip) else f"{shown} ({ip}) is {why}"
            )
        return ip
    name = host.removesuffix(".").lower()
    if not name:
        raise TargetRefused("url has no host")
    if name in _METADATA_NAMES:
        raise TargetRefused(f"{name} is a cloud metadata name")
    if not allow_private and (name == "localhost" or name.endswith(_LOCAL_SUFFIXES)):
        raise TargetRefused(f"{name} is a local name")
    return None


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> tuple[str, int]:
    """Refuse a URL on what it says, without DNS; its host (as sent) and port otherwise."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        # name the address behind spellings httpx rejects (0251.0376.0251.0376) when it can
        check_host(urlsplit(url).hostname or "", allow_private=allow_private)
        raise TargetRefused(f"invalid url: {exc}") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parsed.scheme not in allowed:
        raise TargetRefused("url must use " + " or ".join(allowed))
    if parsed.userinfo:
        raise TargetRefused("url must not embed credentials")
    host = parsed.raw_host.decode("ascii")
    check_host(host, allow_private=allow_private)
    return host, parsed.port or (443 if parsed.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[str]:
    """Addresses of ``host`` from getaddrinfo, within DNS_TIMEOUT_SECONDS."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DNS_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = resolve
) -> list[IPAddress]:
    """Every address ``host`` stands for, all allowed; TargetRefused if any is not.

    Resolution errors propagate (OSError, TimeoutError).
    """
    literal = check_host(host, allow_private=allow_private)
    if literal is not None:
        return [literal]
    answers = await resolver(host, port)
    if not answers:
        raise OSError(f"{host} has no addresses")
    addresses = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer.split("%", 1)[0])
        except ValueError:
            raise TargetRefused(f"{host} resolves to {answer!r}, not an address") from None
        why = describe_refusal(ip, allow_private=allow_private)
        if why is not None:
            raise TargetRefused(f"{host} resolves to {ip}, {why}")
        addresses.append(ip)
    return addresses


async def check_target(
    url: str, *, allow_http: bool, allow_private: bool, resolver: Resolver = resolve
) -> None:
    """Refuse (TargetRefused) a URL a subscription must not point to.

    A name that cannot be resolved now is accepted: every connection checks it again.
    """
    host, port = check_url(url, allow_http=allow_http, allow_private=allow_private)
    try:
        await checked_addresses(host, port, allow_private=allow_private, resolver=resolver)
    except (OSError, TimeoutError):
        return


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself, checks every address and connects only to a checked one."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = resolve,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to the first reachable checked address; TargetRefused when refused."""
        try:
            addresses = await checked_addresses(
                host, port, allow_private=self._allow_private, resolver=self._resolver
            )
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc!r}") from exc
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for ip in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def sleep(self, seconds: float) -> None:
        """Delegates to the wrapped backend."""
        await self._backend.sleep(seconds)


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    # most specific first: the first httpcore class an error is an instance of decides
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)
_CORE_ERRORS = tuple(core for core, _ in _ERRORS)


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except _CORE_ERRORS as exc:
        mapped = next(ours for core, ours in _ERRORS if isinstance(exc, core))
        raise mapped(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """httpx transport over an httpcore pool that connects through a GuardedBackend."""

    def __init__(self, backend: GuardedBackend, *, limits: httpx.Limits) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the pool; TargetRefused from the backend propagates unchanged."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()


def guarded_client(settings: NotifySettings, *, resolver: Resolver = resolve) -> httpx.AsyncClient:
    """The delivery client: no redirects, no environment proxies, guarded connections.

    With ``webhook_proxy_url`` set, the proxy is the egress control: connections go to the
    proxy, so they are not checked here (subscription-time and per-attempt URL checks stay).
    """
    timeout = httpx.Timeout(settings.delivery_timeout_seconds)
    limits = httpx.Limits(max_connections=settings.max_in_flight)
    if settings.webhook_proxy_url:
        return httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            follow_redirects=False,
            trust_env=False,
            proxy=settings.webhook_proxy_url,
        )
    backend = GuardedBackend(allow_private=settings.webhook_allow_private, resolver=resolver)
    return httpx.AsyncClient(
        timeout=timeout,
        transport=GuardedTransport(backend, limits=limits),
        follow_redirects=False,
        trust_env=False,
    )
