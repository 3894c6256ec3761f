"""The cloud link: the outbox delivered in order, synchronous decisions with a
deadline, the sync feed of plate list changes and commands, all signed in
the Standard Webhooks form. The wire contract is docs/upstream-api.md.

A site without ``[upstream]`` runs none of this.
"""

from gateway.upstream.decisions import CloudDecider, CloudDecision, parse_decision
from gateway.upstream.events import (
    COMMAND_OUTCOMES,
    command_result_record,
    event_json,
    events_body,
    format_time,
)
from gateway.upstream.feed import CloudCommand, SyncPage, WhitelistUpdate, parse_sync_page
from gateway.upstream.http import UpstreamClient, UpstreamTLSPolicy, load_tls_policy
from gateway.upstream.link import FailureKind, Link, LinkFailure, LinkState, LinkStatus
from gateway.upstream.outbox import OutboxDrainer
from gateway.upstream.service import UpstreamService, UpstreamStatus
from gateway.upstream.settings import ImagePolicy, UpstreamConfig, UpstreamSettingsError
from gateway.upstream.signing import secret_key, sign, signature_headers
from gateway.upstream.sync import (
    CommandRejected,
    CommandSink,
    SyncFeed,
    WhitelistSink,
)

__all__ = [
    "COMMAND_OUTCOMES",
    "CloudCommand",
    "CloudDecider",
    "CloudDecision",
    "CommandRejected",
    "CommandSink",
    "FailureKind",
    "ImagePolicy",
    "Link",
    "LinkFailure",
    "LinkState",
    "LinkStatus",
    "OutboxDrainer",
    "SyncFeed",
    "SyncPage",
    "UpstreamClient",
    "UpstreamConfig",
    "UpstreamService",
    "UpstreamSettingsError",
    "UpstreamStatus",
    "UpstreamTLSPolicy",
    "WhitelistSink",
    "WhitelistUpdate",
    "command_result_record",
    "event_json",
    "events_body",
    "format_time",
    "load_tls_policy",
    "parse_decision",
    "parse_sync_page",
    "secret_key",
    "sign",
    "signature_headers",
]
