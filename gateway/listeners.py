"""The gateway's listeners: endpoint strings checked before anything starts, and a
port that cannot be bound reported in one line.

An endpoint string is Twisted's (``tcp:8080``, ``ssl:443:privateKey=...``,
``unix:/run/...``, ``systemd:domain=INET:index=0``). :func:`parse_endpoint`
parses it as the gateway will listen on it, without listening, and names the
configuration key of any problem; :func:`endpoint_warnings` says what may be
fine elsewhere but is not on this machine (an interface it does not have, a
certificate that is about to expire). :class:`Listener` binds when started
and, if it cannot, :class:`CannotListen` carries the one line to print.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactor

from gateway.schema import ConfigError

__all__ = [
    "CannotListen",
    "LISTEN_ERROR_EXIT",
    "Listener",
    "check_endpoint",
    "endpoint_warnings",
    "parse_endpoint",
]

#: The exit status when a listener cannot bind: a port still held by a process
#: that is going away is transient, so systemd restarts the gateway (a few
#: times, then gives up: see systemd/anpr-gateway.service). EX_TEMPFAIL.
LISTEN_ERROR_EXIT = 75

#: A certificate closer to its end than this is warned about.
CERTIFICATE_WARNING = timedelta(days=30)


class CannotListen(Exception):
    """A listener could not bind: ``str()`` is the one line that says so."""


def parse_endpoint(reactor: object, description: str, key: str) -> IStreamServerEndpoint:
    """The endpoint ``description`` as the gateway listens on it, or a
    :class:`ConfigError` naming ``key`` (``camera_server.listen[1]``)."""
    try:
        endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
    except FileNotFoundError as error:
        raise ConfigError(key, f"{description}: no such file: {error.filename}") from None
    except PermissionError as error:
        raise ConfigError(key, f"{description}: cannot read {error.filename}") from None
    except Exception as error:  # endpoint parsers raise many kinds
        if "do not match" in str(error):
            raise ConfigError(key, f"{description}: the key does not match the certificate") from None
        raise ConfigError(key, f"not a usable endpoint {description} ({error})") from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ConfigError(key, f"{description}: port {port} is not between 0 and 65535")
    context = getattr(endpoint, "_sslContextFactory", None)
    if context is not None:
        try:
            # Loads the certificate and key and checks that they match.
            context.getContext()
        except Exception as error:  # pyOpenSSL raises its own kinds
            raise ConfigError(
                key, f"{description}: the key does not match the certificate ({error})"
            ) from None
    return endpoint


def check_endpoint(description: str, key: str) -> None:
    """Parse ``description`` without listening (for the configuration checker).

    ``systemd:`` endpoints name sockets systemd passes at start; they are
    checked for shape only."""
    if description.startswith("systemd:"):
        return
    parse_endpoint(MemoryReactor(), description, key)


def _interface(description: str) -> str | None:
    for part in description.split(":")[1:]:
        if part.startswith("interface="):
            return part.removeprefix("interface=").replace("\\:", ":")
    return None


def endpoint_warnings(description: str, key: str) -> Iterator[str]:
    """What may stop ``description`` from working on this machine, as lines
    naming ``key``; nothing when all looks well."""
    interface = _interface(description)
    if interface:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.bind((interface, 0))
        except OSError as error:
            if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
                yield f"{key}: {description}: this machine has no interface {interface} (yet)"
        finally:
            probe.close()
    if description.startswith("ssl:"):
        yield from _certificate_warnings(description, key)


def _certificate_warnings(description: str, key: str) -> Iterator[str]:
    from cryptography import x509

    for part in description.split(":")[1:]:
        if not part.startswith(("certKey=", "privateKey=")):
            continue
        path = part.split("=", 1)[1].replace("\\:", ":")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if b"CERTIFICATE" not in data:
            continue
        try:
            certificate = x509.load_pem_x509_certificate(data)
        except ValueError:
            continue
        ends = certificate.not_valid_after_utc
        now = datetime.now(timezone.utc)
        if ends <= now:
            yield f"{key}: {description}: the certificate expired on {ends:%Y-%m-%d}"
        elif ends - now < CERTIFICATE_WARNING:
            yield f"{key}: {description}: the certificate expires on {ends:%Y-%m-%d}"
        return


class Listener(StreamServerEndpointService):
    """A listener of the gateway, known by its configuration key."""

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory, key: str, description: str
    ) -> None:
        super().__init__(endpoint, factory)
        self.key = key
        self.description = description
        # Bind at start, or fail the start (rather than logging it later).
        self._raiseSynchronously = True

    @property
    def bound(self) -> bool:
        return self._waitingForPort is not None

    def bind(self) -> None:
        """Bind the port now (once); raises :class:`CannotListen`."""
        if not self.bound:
            with self._one_line():
                super().privilegedStartService()

    def privilegedStartService(self) -> None:
        # twistd binds here, before it drops privileges.
        self.bind()

    def startService(self) -> None:
        self.bind()
        super().startService()  # bound already: it only starts serving

    @contextmanager
    def _one_line(self) -> Iterator[None]:
        try:
            yield
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
            raise CannotListen(f"{self.key}: {self.description}: {reason.lower()}") from None
        except OSError as error:
            reason = error.strerror or str(error)
            raise CannotListen(f"{self.key}: {self.description}: {reason.lower()}") from None
