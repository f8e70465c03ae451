"""HTTP for the OCI distribution API: scheme choice, authentication, retries.

Authentication follows what the registry asks for: requests go out anonymously
until a 401 names a scheme; ``Basic`` then gets the credentials, ``Bearer``
gets a token from the realm (with the credentials, if any), cached per scope.
No message built here contains a secret: errors name the user, never the password.
"""

from __future__ import annotations

import base64
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from polyarch.errors import RegistryAuthError, RegistryError
from polyarch.http import new_client
from polyarch.reference import Reference, is_loopback
from polyarch.registry.credentials import Credentials
from polyarch.registry.responses import Challenge, parse_challenge, registry_message
from polyarch.retry import REGISTRY_POLICY, RetryPolicy, is_transient, retry_after, summarise

T = TypeVar("T")


REQUEST_TIMEOUT = 30.0
"""Seconds a registry may stay silent (connecting, or between bytes) before a try fails."""


class RetryableError(RegistryError):
    """A failure worth trying again (connection lost, no answer, 408, 429, 5xx).

    ``seen`` is what happened, short (``HTTP 429``, ``no answer within 30 s``),
    for the summary of a request that gave up.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, seen: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.seen = seen or message


class GaveUp(RegistryError):
    """Every try of one request failed: what was asked, and everything that was seen."""

    def __init__(self, what: str, seen: list[str], elapsed: float, *, hint: str) -> None:
        self.what, self.seen, self.elapsed = what, seen, elapsed
        super().__init__(
            f"{what}: {summarise(seen)} (gave up after {len(seen)} attempts over {elapsed:.1f} s)",
            hint=hint,
        )


class RegistryClient:
    """A connection to one registry (``host[:port]``), shared by parallel uploads.

    ``plain_http`` asks for HTTP without TLS; like ``insecure`` (TLS without
    verification, then HTTP) it is refused except to a loopback address.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        plain_http: bool = False,
        ca_bundle: Path | None = None,
        policy: RetryPolicy = REGISTRY_POLICY,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.insecure = insecure
        self.policy = policy
        self._loopback = is_loopback(registry)
        if plain_http and not (insecure or self._loopback):
            raise RegistryError(
                f"refusing plain HTTP to {registry}: credentials and images would travel unencrypted",
                hint="use https, or pass --insecure if this registry really has no TLS",
            )
        self._scheme: str | None = "http" if plain_http else None
        verify: ssl.SSLContext | bool
        if ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(ca_bundle))
        else:
            verify = not insecure
        self.timeout = timeout
        self._http = new_client(timeout, verify=verify, transport=transport, follow_redirects=False)
        self._lock = threading.RLock()
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], str] = {}
        self.requests = 0
        self.retried = 0

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- URLs and scheme ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._scheme is None:
            self.ping()
        return f"{self._scheme}://{self.registry}"

    def url(self, path_or_url: str) -> httpx.URL:
        """Resolve a path or a (possibly relative) ``Location`` against the registry."""
        url = httpx.URL(self.base_url).join(path_or_url)
        if url.scheme == "http" and not (self.insecure or is_loopback(url.netloc.decode())):
            raise RegistryError(
                f"refusing plain HTTP to {url.host} (sent there by {self.registry})",
                hint="pass --insecure if this is intended",
            )
        return url

    def ping(self) -> None:
        """Find the scheme (HTTPS first; HTTP only to loopback or when insecure) and the challenge."""
        if self._scheme is not None:
            response = self._retrying(
                lambda: self._send_raw("GET", f"{self._scheme}://{self.registry}/v2/")
            )
            self._note_challenge(response)
            return
        schemes = ["https"] + (["http"] if self._loopback or self.insecure else [])
        failures: list[tuple[str, GaveUp]] = []
        for scheme in schemes:
            try:
                response = self._retrying(
                    lambda s=scheme: self._send_raw("GET", f"{s}://{self.registry}/v2/"),  # type: ignore[misc]
                    attempts=1 if scheme != schemes[-1] else None,
                )
            except GaveUp as exc:
                if _is_certificate_error(exc):
                    raise RegistryError(
                        f"the TLS certificate of {self.registry} is not trusted",
                        hint="pass --ca-bundle with its CA, or --insecure to skip verification",
                    ) from None
                failures.append((scheme, exc))
                continue
            self._scheme = scheme
            self._note_challenge(response)
            return
        raise _unreachable(self.registry, failures)

    # -- authentication -------------------------------------------------------------

    def _note_challenge(self, response: httpx.Response) -> None:
        header = response.headers.get("www-authenticate")
        if response.status_code == 401 and header:
            with self._lock:
                self._challenge = parse_challenge(header)

    def _authorization(self, scopes: tuple[str, ...], *, refresh: bool = False) -> str | None:
        with self._lock:
            challenge = self._challenge
            if challenge is None:
                return None
            if challenge.scheme == "basic":
                return _basic(self.credentials) if self.credentials else None
            if challenge.scheme != "bearer":
                raise RegistryAuthError(
                    f"{self.registry} asks for {challenge.scheme!r} authentication, which polyarch does not speak",
                    hint="use a registry with Basic or Bearer token authentication",
                )
            key = tuple(sorted(set(scopes)))
            if refresh or key not in self._tokens:
                self._tokens[key] = self._fetch_token(challenge, key)
            return f"Bearer {self._tokens[key]}"

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryAuthError(f"{self.registry} sent a Bearer challenge without a realm")
        url = httpx.URL(realm)
        if url.scheme == "http" and not (self.insecure or is_loopback(url.netloc.decode())):
            raise RegistryAuthError(
                f"refusing to fetch a token over plain HTTP from {url.host}",
                hint="pass --insecure if this is intended",
            )
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params += [("scope", s) for s in scopes]
        headers = {"Authorization": _basic(self.credentials)} if self.credentials else {}
        response = self._retrying(
            lambda: self._send_raw("GET", url.copy_merge_params(params), headers=headers)
        )
        if response.status_code in (401, 403):
            raise self._auth_error(response)
        if response.status_code != 200:
            raise RegistryAuthError(
                f"the token service of {self.registry} failed: {registry_message(response)}"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"the token service of {self.registry} returned no token")
        return token

    def _auth_error(self, response: httpx.Response) -> RegistryAuthError:
        detail = registry_message(response)
        if self.credentials is None:
            return RegistryAuthError(
                f"{self.registry} requires credentials ({detail})",
                hint="run docker login, set username/password for this registry, or use --password-stdin",
            )
        return RegistryAuthError(
            f"{self.registry} refused the credentials of user {self.credentials.username!r} ({detail})",
            hint="check the password or token and that it may push to this repository",
        )

    # -- requests -------------------------------------------------------------------

    def _send_raw(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
    ) -> httpx.Response:
        """One HTTP exchange; transport failures and retryable statuses become RetryableError."""
        with self._lock:
            self.requests += 1
        try:
            response = self._http.request(method, url, headers=headers, content=content)
        except httpx.TimeoutException as exc:
            silent = f"no answer within {self.timeout:g} s"
            raise RetryableError(f"{method} {_short(url)}: {silent}", seen=silent) from exc
        except httpx.TransportError as exc:
            reason = _transport_reason(exc)
            raise RetryableError(f"{method} {_short(url)}: {reason}", seen=reason) from exc
        if is_transient(response.status_code):
            raise RetryableError(
                f"{method} {_short(url)}: {registry_message(response)}",
                retry_after=retry_after(response.headers),
                seen=f"HTTP {response.status_code}",
            )
        return response

    def request(
        self,
        method: str,
        path_or_url: str | httpx.URL,
        *,
        scopes: tuple[str, ...],
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """Send with authentication (anonymous → Basic/Bearer on 401), retrying if ``retry``.

        A 401/403 that credentials cannot fix is a RegistryAuthError; other
        statuses are returned for the caller to judge.
        """
        url = self.url(str(path_or_url))

        def attempt() -> httpx.Response:
            auth = self._authorization(scopes)
            response = self._send_raw(
                method, url, headers=_with_auth(headers, auth), content=content
            )
            if response.status_code == 401:
                self._note_challenge(response)
                again = self._authorization(_challenge_scopes(response, scopes), refresh=True)
                if again is None or (again == auth and not again.startswith("Bearer")):
                    raise self._auth_error(response)
                response = self._send_raw(
                    method, url, headers=_with_auth(headers, again), content=content
                )
            if response.status_code in (401, 403):
                raise self._auth_error(response)
            return response

        return self._retrying(attempt) if retry else attempt()

    def _retrying(self, fn: Callable[[], T], *, attempts: int | None = None) -> T:
        """Run ``fn``, again with exponential backoff while it raises RetryableError.

        Bounded twice: at most ``attempts`` tries (the policy's), and no try
        starts after ``policy.max_elapsed`` seconds. Giving up is a ``GaveUp``
        that says what each try saw.
        """
        tries = max(attempts or self.policy.attempts, 1)
        seen: list[str] = []
        started = time.monotonic()
        for n in range(tries):
            try:
                return fn()
            except RetryableError as exc:
                seen.append(exc.seen)
                elapsed = time.monotonic() - started
                delay = self.policy.delay(n, exc.retry_after)
                if n == tries - 1 or elapsed + delay > self.policy.max_elapsed:
                    raise GaveUp(
                        exc.message.split(": ")[0] if ": " in exc.message else exc.message,
                        seen,
                        elapsed,
                        hint="check the registry and the network, then try again",
                    ) from exc
                with self._lock:
                    self.retried += 1
                time.sleep(delay)
        raise AssertionError("unreachable")

    def retrying(self, fn: Callable[[], T]) -> T:
        """Public form of the retry loop, for multi-request operations (an upload session)."""
        return self._retrying(fn)


def _unreachable(registry: str, failures: list[tuple[str, GaveUp]]) -> RegistryError:
    """One error for a registry no scheme could talk to, with what each scheme saw."""
    if len(failures) == 1:
        return failures[0][1]
    attempts = sum(len(f.seen) for _s, f in failures)
    elapsed = sum(f.elapsed for _s, f in failures)
    seen = "; ".join(f"{scheme}: {summarise(f.seen)}" for scheme, f in failures)
    return RegistryError(
        f"{registry}: no usable answer to GET /v2/ ({seen}; gave up after {attempts} attempts "
        f"over {elapsed:.1f} s)",
        hint="check the registry and the network, then try again",
    )


def _basic(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _with_auth(headers: Mapping[str, str] | None, auth: str | None) -> dict[str, str]:
    merged = dict(headers or {})
    if auth:
        merged["Authorization"] = auth
    return merged


def _challenge_scopes(response: httpx.Response, scopes: tuple[str, ...]) -> tuple[str, ...]:
    header = response.headers.get("www-authenticate", "")
    extra = parse_challenge(header).params.get("scope") if header else None
    return (*scopes, *extra.split(" ")) if extra else scopes


def _short(url: httpx.URL | str) -> str:
    # Upload URLs carry long opaque state; the path is what a user can read.
    u = httpx.URL(str(url))
    return f"{u.scheme}://{u.netloc.decode()}{u.path}"


def _transport_reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _is_certificate_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            current
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass(frozen=True, slots=True)
class RegistryAccess:
    """How to reach registries: credentials and TLS choices, shared by every push and pull.

    ``transport`` replaces the network (tests talk to an in-process registry with it).
    """

    credentials: Credentials | None = field(default=None, repr=False)
    insecure: bool = False
    ca_bundle: Path | None = None
    policy: RetryPolicy = REGISTRY_POLICY
    transport: httpx.BaseTransport | None = None

    def client(self, reference: Reference) -> RegistryClient:
        """A client for ``reference``'s registry (plain HTTP if the reference asks for it)."""
        return RegistryClient(
            reference.api_host,
            credentials=self.credentials,
            insecure=self.insecure,
            plain_http=reference.plain_http,
            ca_bundle=self.ca_bundle,
            policy=self.policy,
            transport=self.transport,
        )


ANONYMOUS = RegistryAccess()
"""No credentials, TLS verified against the system's CAs."""
