"""Outbound URLs chosen by clients: URL imports and webhooks, under one address policy.

A client-supplied URL is never trusted as a string. URL imports must fall under an operator prefix
(``url_import_prefixes``) *after* canonicalisation: ``file:`` paths are percent-decoded and resolved (symlinks,
``..``) and must stay inside the prefix's resolved folder; HTTP paths are percent-decoded and any ``.``/``..``
segment is refused (a server would normalise it away from the checked prefix). Every HTTP hop (the first request
and each redirect, followed here by hand) is checked again: the prefix, then the host's DNS answers, which must be
public addresses unless the operator lists the network (``private_networks``); the request then connects to the
address that was checked, so a DNS answer that changes between check and connect (rebinding) cannot redirect it.
Webhooks take the same address policy (without prefixes), checked at submit and again at delivery.

Every refusal answers the same :class:`UrlRefused` whether the path exists or not, so a tenant learns nothing
about the server's files or network; the log keeps the decision with a redacted host.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from faceweave.errors import MediaTooLarge
from faceweave.serve.errors import BadRequest, UrlFetchFailed

log = logging.getLogger("faceweave.serve.urls")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REFUSED = "this URL is not in an allowed location"
MAX_REDIRECTS = 5


class UrlRefused(BadRequest):
    """One answer for every refused URL (not allowed, unreachable address, or missing): nothing leaks."""

    code = "url_not_allowed"

    def __init__(self, hint: str = "upload the file instead, or use a URL under an allowed prefix") -> None:
        super().__init__(REFUSED, hint=hint)


def redacted_host(url: str) -> str:
    """The URL's scheme and a masked host for logs (``https://ex…com``): enough to debug, not to identify."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    masked = host if len(host) <= 4 else f"{host[:2]}…{host[-3:]}"
    return f"{parts.scheme}://{masked}"


def log_decision(kind: str, url: str, decision: str) -> None:
    """A log trace of an outbound URL and what was decided (``kind``: import or webhook)."""
    log.info("%s URL %s: %s", kind, decision, redacted_host(url), extra={"url_host": redacted_host(url)})


# --- address policy --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses are allowed; private, loopback, link-local, reserved and multicast ones only inside a
    network the operator listed."""

    allowed_private: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[str]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def allows(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in net for net in self.allowed_private):
            return True
        return ip.is_global and not (ip.is_multicast or ip.is_unspecified or ip.is_reserved)

    def resolve(self, host: str, port: int) -> str:
        """The first address of ``host`` — after checking *every* address it resolves to (:class:`UrlRefused`)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise UrlRefused() from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses or not all(self.allows(a) for a in addresses):
            raise UrlRefused()
        return str(addresses[0])


# --- canonical URLs --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpTarget:
    scheme: str
    host: str
    port: int
    path: str  # as sent (still percent-encoded), query included

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def parse_http(url: str) -> HttpTarget:
    """A canonical http(s) URL: no user info, no ``.``/``..`` segments even percent-encoded (:class:`UrlRefused`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused() from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise UrlRefused()
    if any(c in url for c in "\\\r\n\t ") or _has_dot_segments(parts.path):
        raise UrlRefused()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HttpTarget(scheme, parts.hostname.lower().rstrip("."), port or (443 if scheme == "https" else 80), path)


def _has_dot_segments(path: str) -> bool:
    decoded = path
    for _ in range(3):  # double encoding (%252e) decodes on a second pass somewhere: refuse it too
        decoded = unquote(decoded)
    return any(seg in (".", "..") for seg in decoded.replace("\\", "/").split("/"))


def _under_http_prefix(target: HttpTarget, prefix: str) -> bool:
    try:
        p = parse_http(prefix)
    except UrlRefused:
        return False
    if p.origin != target.origin:
        return False
    want, have = unquote(p.path), unquote(target.path)
    return have.startswith(want) if want.endswith("/") else (have == want or have.startswith(want + "/"))


def _file_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        return None
    path = unquote(parts.path)
    if "\x00" in path or not path.startswith("/"):
        return None
    return Path(os.path.realpath(path))


def allowed_import(url: str, prefixes: Iterable[str]) -> str:
    """``url`` canonicalised (file: the resolved path) if it lies under one of ``prefixes``, else :class:`UrlRefused`.

    http(s) URLs get their address check when fetched (:func:`fetch_http`), on every hop."""
    prefixes = tuple(prefixes)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        real = _file_path(url)
        for prefix in prefixes:
            root = _file_path(prefix)
            if real is not None and root is not None and (real == root or root in real.parents):
                return real.as_uri()
        raise UrlRefused()
    if scheme in ("http", "https"):
        target = parse_http(url)
        if any(_under_http_prefix(target, p) for p in prefixes):
            return url
        raise UrlRefused()
    # Other fsspec stores (s3://, gs://…): the operator's own buckets; compare decoded, without dot segments.
    if _has_dot_segments(urlsplit(url).path) or any(c in url for c in "\r\n\t"):
        raise UrlRefused()
    if any(p.split("://", 1)[0].lower() == scheme and unquote(url).startswith(unquote(p)) for p in prefixes):
        return url
    raise UrlRefused()


# --- fetching --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 60.0


def fetch_import(url: str, dest: Path, prefixes: Iterable[str], policy: AddressPolicy, limits: FetchLimits) -> Path:
    """Copy an allowed import URL to ``dest`` under the byte and time limits (:class:`UrlRefused`,
    :class:`MediaTooLarge` or :class:`UrlFetchFailed`)."""
    prefixes = tuple(prefixes)
    try:
        canonical = allowed_import(url, prefixes)
    except UrlRefused:
        log_decision("import", url, "refused")
        raise
    scheme = urlsplit(canonical).scheme.lower()
    if scheme in ("http", "https"):
        fetch_http(canonical, dest, limits, policy, hop_allowed=lambda u: _allowed_or_none(u, prefixes))
    else:
        _fetch_fsspec(canonical, dest, limits)
    log_decision("import", url, "fetched")
    return dest


def _allowed_or_none(url: str, prefixes: tuple[str, ...]) -> bool:
    try:
        allowed_import(url, prefixes)
    except UrlRefused:
        return False
    return True


def _fetch_fsspec(url: str, dest: Path, limits: FetchLimits) -> None:
    import fsspec

    size, deadline = 0, time.monotonic() + limits.total_timeout_s
    try:
        with fsspec.open(url, "rb") as fin, dest.open("wb") as fout:
            while chunk := fin.read(1 << 20):
                size += len(chunk)
                _check_progress(size, deadline, limits)
                fout.write(chunk)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        raise UrlRefused() from None  # the same answer as "not allowed": no probing of which paths exist


def _check_progress(size: int, deadline: float, limits: FetchLimits) -> None:
    if size > limits.max_bytes:
        raise MediaTooLarge(f"the file at the URL exceeds {limits.max_bytes} bytes", hint="use a smaller file")
    if time.monotonic() > deadline:
        raise UrlFetchFailed(f"the URL took longer than {limits.total_timeout_s:.0f} s", hint="use a faster host")


def fetch_http(
    url: str,
    dest: Path,
    limits: FetchLimits,
    policy: AddressPolicy,
    *,
    hop_allowed: Callable[[str], bool] = lambda _: True,
) -> None:
    """GET ``url`` into ``dest``: redirects followed by hand (each hop through ``hop_allowed`` and the address
    policy), each connection made to the address that was checked, under connect/read/total timeouts."""
    import httpx

    deadline = time.monotonic() + limits.total_timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        with _pinned_stream("GET", url, policy, limits, deadline) as response:
            if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                url = str(httpx.URL(url).join(response.headers["location"]))
                if not hop_allowed(url):
                    log_decision("import", url, "redirect refused")
                    raise UrlRefused()
                continue
            if response.status_code != 200:
                raise UrlRefused()  # 404 and 403 answer like "not allowed": no probing
            size = 0
            with dest.open("wb") as fout:
                for chunk in response.iter_bytes(1 << 20):
                    size += len(chunk)
                    _check_progress(size, deadline, limits)
                    fout.write(chunk)
            return
    raise UrlRefused(hint=f"more than {MAX_REDIRECTS} redirects")


class _pinned_stream:  # noqa: N801 (used like a function: ``with _pinned_stream(...) as r``)
    """A streamed request to ``url`` connected to the checked address of its host (Host header and TLS SNI keep
    the name, so virtual hosts and certificate checks work as usual)."""

    def __init__(self, method: str, url: str, policy: AddressPolicy, limits: FetchLimits, deadline: float,
                 content: bytes | None = None, headers: dict[str, str] | None = None) -> None:  # fmt: skip
        target = parse_http(url)
        address = policy.resolve(target.host, target.port)
        netloc = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((target.scheme, f"{netloc}:{target.port}", *target.path.partition("?")[::2], ""))
        remaining = max(0.1, deadline - time.monotonic())
        timeout = httpx.Timeout(
            connect=min(limits.connect_timeout_s, remaining), read=min(limits.read_timeout_s, remaining),
            write=min(limits.read_timeout_s, remaining), pool=min(limits.connect_timeout_s, remaining),
        )  # fmt: skip
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        self.client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
        self.request = self.client.build_request(
            method, pinned, content=content, headers={**(headers or {}), "host": host_header},
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )  # fmt: skip
        self.response: httpx.Response | None = None

    def __enter__(self) -> httpx.Response:
        try:
            self.response = self.client.send(self.request, stream=True)
        except httpx.TimeoutException:
            self.client.close()
            raise UrlFetchFailed("the URL did not answer in time", hint="use a faster host") from None
        except httpx.HTTPError:
            self.client.close()
            raise UrlRefused() from None
        return self.response

    def __exit__(self, *exc: object) -> None:
        if self.response is not None:
            self.response.close()
        self.client.close()


def check_webhook(url: str, policy: AddressPolicy) -> None:
    """At submit: an http(s) URL of at most 2048 characters whose host resolves to addresses the policy allows."""
    if len(url) > 2048:
        raise UrlRefused(hint="webhook_url must be an http(s) URL of at most 2048 characters")
    try:
        target = parse_http(url)
        policy.resolve(target.host, target.port)
    except UrlRefused:
        log_decision("webhook", url, "refused")
        raise UrlRefused(hint="webhook_url must be a public http(s) URL, e.g. https://example.com/hook") from None
    log_decision("webhook", url, "accepted")


def post_webhook(url: str, body: bytes, headers: dict[str, str], policy: AddressPolicy, timeout_s: float) -> int:
    """POST ``body`` once, re-checking the address at delivery (DNS may have changed); the status code."""
    limits = FetchLimits(max_bytes=0, connect_timeout_s=timeout_s, read_timeout_s=timeout_s, total_timeout_s=timeout_s)
    with _pinned_stream("POST", url, policy, limits, time.monotonic() + timeout_s, body, headers) as response:
        return response.status_code
