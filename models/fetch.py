"""Fetch image bytes over HTTP(S): SSRF guard on every hop, size cap, timeouts, retries."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import socket
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import ResolveResult
from yarl import URL

from models.settings import FetchSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCHEMES = frozenset({"http", "https"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_MAX_URL_CHARS = 4096
_SHOWN_URL_CHARS = 200
# RFC 1035 limits, which the resolver enforces by raising UnicodeError rather than failing cleanly.
_MAX_HOST_CHARS = 253
_MAX_LABEL_CHARS = 63
# What a name may hold once IDNA has made it ASCII; underscores occur in real DNS names.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]+")
_HEADERS = {
    hdrs.USER_AGENT: "lookalike-image-fetcher/0.1",
    hdrs.ACCEPT: "image/*",
    # Images gain nothing from transfer compression; asking for none keeps the byte cap honest.
    hdrs.ACCEPT_ENCODING: "identity",
}

# Never reachable from a fetch unless explicitly allowed: everything that is not the public
# internet (RFC 6890 special-purpose registries), spelled out rather than trusting the
# `is_private`/`is_global` tables, which changed between Python patch releases.
_BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", incl. 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast
        "::/127",  # unspecified and loopback
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class FetchError(Exception):
    """Base of every fetch failure; `reason` is a short machine code, `retryable` says whether
    trying again later could succeed, `attempts` counts the HTTP attempts ImageFetcher.fetch
    made (0 when the URL was refused before any). The message names the URL, never the body."""

    default_reason: ClassVar[str] = "fetch_failed"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        url: str | URL | None = None,
        *,
        reason: str | None = None,
        retryable: bool | None = None,
        attempts: int = 0,
    ) -> None:
        self.message = message
        self.url = None if url is None else _shown(url)
        self.reason: str = reason if reason is not None else self.default_reason
        self.retryable: bool = retryable if retryable is not None else self.default_retryable
        self.attempts = attempts
        super().__init__(message if self.url is None else f"{message}: {self.url}")


class BadURL(FetchError):  # noqa: N818 - names fixed by the module contract
    default_reason = "bad_url"


class HostNotAllowed(FetchError):  # noqa: N818 - names fixed by the module contract
    default_reason = "host_not_allowed"


class ResponseTooLarge(FetchError):  # noqa: N818 - names fixed by the module contract
    default_reason = "too_large"


class HTTPStatusError(FetchError):
    default_reason = "http_status"

    def __init__(self, status: int, url: str | URL | None = None, message: str = "") -> None:
        self.status = status
        super().__init__(
            message or f"HTTP {status}",
            url,
            retryable=status >= 500 or status == 429,
        )


class FetchTimeout(FetchError):  # noqa: N818 - names fixed by the module contract
    default_reason = "timeout"
    default_retryable = True


class TooManyRedirects(FetchError):  # noqa: N818 - names fixed by the module contract
    default_reason = "too_many_redirects"


class ConnectionFailed(FetchError):  # noqa: N818 - names fixed by the module contract
    default_reason = "connection_error"
    default_retryable = True


def _shown(url: str | URL) -> str:
    """The URL as safe to print: no credentials, bounded length."""
    text = str(url)
    try:
        parsed = URL(text)
        if parsed.user is not None or parsed.password is not None:
            text = str(parsed.with_user(None))
    except (ValueError, TypeError):
        pass
    if len(text) > _SHOWN_URL_CHARS:
        text = text[:_SHOWN_URL_CHARS] + "..."
    return text


def is_public_address(address: IPAddress) -> bool:
    """True when `address` is on the public internet, checking IPv4 forms embedded in IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    if any(address in network for network in _BLOCKED_NETWORKS):
        return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses a fetch may connect to."""

    allow_private: bool = False
    # Non-public networks trusted anyway (an internal CDN, a test server); public ones always are.
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, s: FetchSettings) -> AddressPolicy:
        return cls(allow_private=s.allow_private_image_hosts)

    def allows(self, address: IPAddress) -> bool:
        if self.allow_private:
            return True
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        for candidate in (address, mapped):
            if candidate is not None and any(candidate in n for n in self.allowed_networks):
                return True
        return is_public_address(address)


class GuardedResolver(aiohttp.ThreadedResolver):
    """Resolves like aiohttp's threaded resolver, then drops addresses the policy refuses.

    It is the resolver the connector connects with, so a name cannot resolve to a public
    address when checked and a private one when connected (DNS rebinding).
    """

    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__()
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        allowed = [r for r in results if self.policy.allows(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise HostNotAllowed(f"host {host!r} does not resolve to a public address")
        return allowed


# Sessions built by create_session, with the policy their resolver enforces.
_GUARDED: weakref.WeakKeyDictionary[aiohttp.ClientSession, AddressPolicy] = (
    weakref.WeakKeyDictionary()
)


def _timeout(settings: FetchSettings) -> aiohttp.ClientTimeout:
    # sock_read bounds each silent gap; total bounds a server that drips bytes forever.
    return aiohttp.ClientTimeout(
        total=settings.fetch_connect_timeout_s + settings.fetch_read_timeout_s,
        connect=settings.fetch_connect_timeout_s,
        sock_read=settings.fetch_read_timeout_s,
    )


def create_session(
    settings: FetchSettings, policy: AddressPolicy | None = None
) -> aiohttp.ClientSession:
    """A ClientSession whose connector only reaches addresses `policy` allows.

    Call it inside a running event loop. Share it with ImageFetcher(session=...).
    """
    policy = policy if policy is not None else AddressPolicy.from_settings(settings)
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        limit_per_host=settings.fetch_per_host_limit,
    )
    # trust_env stays off: a proxy from the environment would resolve hosts out of our sight.
    session = aiohttp.ClientSession(
        connector=connector, timeout=_timeout(settings), trust_env=False
    )
    _GUARDED[session] = policy
    return session


@dataclass
class _HostSlot:
    semaphore: asyncio.Semaphore
    users: int = 0


@dataclass
class _HostLimiter:
    """One semaphore per host, dropped when no request for that host is waiting or running."""

    limit: int
    slots: dict[str, _HostSlot] = field(default_factory=dict)

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        entry = self.slots.get(host)
        if entry is None:
            entry = self.slots[host] = _HostSlot(asyncio.Semaphore(self.limit))
        entry.users += 1
        try:
            async with entry.semaphore:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self.slots[host]


def _looks_like_ip(host: str) -> bool:
    # The same test aiohttp uses to skip DNS: such a host never reaches the resolver.
    return ":" in host or host.replace(".", "").isdigit()


def _parse(text: str) -> URL:
    """`text` as a URL, refusing what yarl parses into something other than what was written."""
    try:
        parsed = URL(text)
        netloc = urlsplit(text).netloc
    except (ValueError, TypeError) as e:
        raise BadURL(f"not a valid URL ({e})", text) from None
    # yarl drops the brackets of an IP literal it cannot read ("[v1.fe]") and keeps the rest
    # as a host name, which would then be looked up in DNS.
    if "[" in netloc and ":" not in (parsed.raw_host or ""):
        raise BadURL("bracketed host is not an IPv6 address", text)
    return parsed


def _check_host_name(host: str, url: URL) -> None:
    """Refuse a DNS name the resolver cannot look up, rather than let it raise UnicodeError
    (an empty or overlong label) or send a name that could never resolve to DNS and retry it."""
    name = host[:-1] if host.endswith(".") else host
    if len(name) > _MAX_HOST_CHARS:
        raise BadURL(f"host name is longer than {_MAX_HOST_CHARS} characters", url)
    for label in name.split("."):
        if not label or len(label) > _MAX_LABEL_CHARS:
            raise BadURL(f"host name has an empty label or one over {_MAX_LABEL_CHARS}", url)
        if not _HOST_LABEL.fullmatch(label):
            raise BadURL("host name holds characters a DNS name cannot", url)
    try:
        # What socket.getaddrinfo does to the name; the checks above should leave nothing here.
        host.encode("idna")
    except UnicodeError:
        raise BadURL("host name cannot be IDNA-encoded", url) from None


class ImageFetcher:
    """Fetches one URL's bytes; shared by the stream worker and the query API's image_url."""

    def __init__(
        self,
        settings: FetchSettings,
        max_bytes: int,
        session: aiohttp.ClientSession | None = None,
        *,
        policy: AddressPolicy | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if session is not None:
            if policy is not None:
                raise ValueError("pass the policy to create_session, not with a session")
            guarded = _GUARDED.get(session)
            if guarded is None and not settings.allow_private_image_hosts:
                raise ValueError(
                    "a session passed to ImageFetcher must come from create_session(), "
                    "whose resolver refuses non-public addresses"
                )
            policy = guarded if guarded is not None else AddressPolicy(allow_private=True)
        self._settings = settings
        self._max_bytes = max_bytes
        self._policy = policy if policy is not None else AddressPolicy.from_settings(settings)
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._timeout = _timeout(settings)
        self._limiter = _HostLimiter(settings.fetch_per_host_limit)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session, but only if this fetcher created it."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be born inside the running loop.
        if self._closed:
            raise RuntimeError("ImageFetcher is closed")
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the session passed to ImageFetcher is closed")
            self._session = create_session(self._settings, self._policy)
        return self._session

    async def fetch(self, url: str) -> bytes:
        """The body of `url`, following redirects; raises a FetchError subclass on failure."""
        target = self._checked(url)
        attempts = self._settings.fetch_retries + 1
        for attempt in range(attempts):
            try:
                return await self._follow(target)
            except FetchError as e:
                e.attempts = attempt + 1
                if not e.retryable or attempt == attempts - 1:
                    raise
            # Exponential backoff with jitter, so that many workers do not retry in step.
            delay = self._settings.fetch_backoff_s * (2**attempt)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")

    def _checked(self, url: str | URL) -> URL:
        """Parse and vet one URL (the first or a redirect target) before any connection."""
        if len(str(url)) > _MAX_URL_CHARS:
            raise BadURL(f"URL is longer than {_MAX_URL_CHARS} characters", url)
        parsed = url if isinstance(url, URL) else _parse(url)
        if parsed.scheme not in _SCHEMES:
            raise BadURL(f"scheme {parsed.scheme!r} is not allowed; use http or https", parsed)
        if parsed.user is not None or parsed.password is not None:
            raise BadURL("credentials in the URL are not allowed", parsed)
        try:
            # `host` decodes punycode, which raises on a bad "xn--" label.
            host = parsed.host
        except UnicodeError:
            raise BadURL("host name is not valid IDNA", parsed) from None
        raw_host = parsed.raw_host
        if not host or not raw_host:
            raise BadURL("URL has no host", parsed)
        if parsed.explicit_port == 0:
            raise BadURL("port 0 cannot be connected to", parsed)
        if _looks_like_ip(host):
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                raise BadURL(f"host {host!r} is not a canonical IP address", parsed) from None
            if not self._policy.allows(address):
                raise HostNotAllowed(f"address {host} is not a public address", parsed)
        else:
            # raw_host is the ASCII form that aiohttp hands the resolver.
            _check_host_name(raw_host, parsed)
        return parsed.with_fragment(None)

    async def _follow(self, url: URL) -> bytes:
        """One attempt: request `url`, following redirects, each hop vetted again."""
        current = url
        for _hop in range(self._settings.fetch_max_redirects + 1):
            async with self._limiter.slot(current.host or ""):
                outcome = await self._get(current)
            if isinstance(outcome, bytes):
                return outcome
            current = self._checked(outcome)
        raise TooManyRedirects(f"more than {self._settings.fetch_max_redirects} redirects", url)

    async def _get(self, url: URL) -> bytes | URL:
        """The body of one response, or where it redirects to."""
        session = self._get_session()
        try:
            async with session.get(
                url,
                allow_redirects=False,
                timeout=self._timeout,
                headers=_HEADERS,
                proxy=None,
            ) as resp:
                if resp.status in _REDIRECT_STATUSES:
                    location = resp.headers.get(hdrs.LOCATION)
                    if not location:
                        raise HTTPStatusError(resp.status, url, "redirect without a Location")
                    try:
                        return url.join(_parse(location))
                    except BadURL as e:
                        raise BadURL(f"invalid redirect target ({e.message})", url) from None
                    except (ValueError, TypeError) as e:
                        raise BadURL(f"invalid redirect target ({e})", url) from None
                if not 200 <= resp.status < 300:
                    raise HTTPStatusError(resp.status, url)
                if resp.content_length is not None and resp.content_length > self._max_bytes:
                    raise ResponseTooLarge(
                        f"response is {resp.content_length} bytes, over the "
                        f"{self._max_bytes}-byte limit",
                        url,
                    )
                return await self._read_capped(resp, url)
        except HostNotAllowed as e:
            # Raised by GuardedResolver, which knows only the host name.
            raise HostNotAllowed(e.message, url) from None
        except FetchError:
            raise
        except TimeoutError as e:
            raise FetchTimeout("timed out", url) from e
        except UnicodeError as e:
            # The resolver IDNA-encodes the host; _checked should have refused any it cannot.
            raise BadURL("host name cannot be IDNA-encoded", url) from e
        except aiohttp.InvalidURL as e:
            raise BadURL(f"invalid URL ({e})", url) from e
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
            raise ConnectionFailed(f"connection failed ({type(e).__name__})", url) from e
        except aiohttp.ClientError as e:
            raise FetchError(
                f"bad response ({type(e).__name__})", url, reason="bad_response"
            ) from e

    async def _read_capped(self, resp: aiohttp.ClientResponse, url: URL) -> bytes:
        """The body, abandoned as soon as it passes max_bytes (Content-Length may be absent)."""
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            total += len(chunk)
            if total > self._max_bytes:
                raise ResponseTooLarge(f"response is over the {self._max_bytes}-byte limit", url)
            chunks.append(chunk)
        return b"".join(chunks)
