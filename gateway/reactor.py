"""The reactor the gateway runs on, as one type.

Parts take the narrowest interface they need (``IReactorTime`` for a clock,
``IReactorThreads`` for a thread pool); the few that need several (the
composition root, the plate list, the cloud link) take :class:`IGatewayReactor`.
Twisted's own ``twisted.internet.reactor`` provides all of it; the composition
root says so once (``as_gateway_reactor``).
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorPluggableNameResolver,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUNIX,
)

__all__ = ["IGatewayReactor", "as_gateway_reactor"]


class IGatewayReactor(
    IReactorCore,
    IReactorTime,
    IReactorThreads,
    IReactorTCP,
    IReactorSSL,
    IReactorUNIX,
    IReactorFDSet,
    IReactorPluggableNameResolver,
):
    """What the gateway asks of its reactor: time, threads, TCP, TLS and UNIX
    listeners and connections, file descriptors (serial ports), name resolution."""


def as_gateway_reactor(reactor: object) -> IGatewayReactor:
    """``reactor`` (Twisted's global one, or a test's) as the gateway's type.

    Twisted's reactors declare their interfaces one by one; none declares this
    union, so this is a cast, made in one place.
    """
    return cast(IGatewayReactor, reactor)
