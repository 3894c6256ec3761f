"""The cloud link: the outbox delivered in order, synchronous decisions with a
deadline, the sync feed of plate list changes and commands, all signed in
the Standard Webhooks form. The wire contract is docs/upstream-api.md.

A site without ``[upstream]`` runs none of this.
"""

# Imported on first use (PEP 562): the pure parts, such as the settings,
# can be imported without Twisted (the configuration does).
_WHERE = {
    "COMMAND_OUTCOMES": "gateway.upstream.events",
    "CloudCommand": "gateway.upstream.feed",
    "CloudDecider": "gateway.upstream.decisions",
    "CloudDecision": "gateway.upstream.decisions",
    "CommandRejected": "gateway.upstream.sync",
    "CommandSink": "gateway.upstream.sync",
    "FailureKind": "gateway.upstream.link",
    "ImagePolicy": "gateway.upstream.settings",
    "Link": "gateway.upstream.link",
    "LinkFailure": "gateway.upstream.link",
    "LinkState": "gateway.upstream.link",
    "LinkStatus": "gateway.upstream.link",
    "OutboxDrainer": "gateway.upstream.outbox",
    "SyncFeed": "gateway.upstream.sync",
    "SyncPage": "gateway.upstream.feed",
    "UpstreamClient": "gateway.upstream.http",
    "UpstreamConfig": "gateway.upstream.settings",
    "UpstreamService": "gateway.upstream.service",
    "UpstreamSettingsError": "gateway.upstream.settings",
    "UpstreamStatus": "gateway.upstream.service",
    "UpstreamTLSPolicy": "gateway.upstream.http",
    "WhitelistSink": "gateway.upstream.sync",
    "WhitelistUpdate": "gateway.upstream.feed",
    "command_result_record": "gateway.upstream.events",
    "event_json": "gateway.upstream.events",
    "events_body": "gateway.upstream.events",
    "format_time": "gateway.upstream.events",
    "load_tls_policy": "gateway.upstream.http",
    "parse_decision": "gateway.upstream.decisions",
    "parse_sync_page": "gateway.upstream.feed",
    "secret_key": "gateway.upstream.signing",
    "sign": "gateway.upstream.signing",
    "signature_headers": "gateway.upstream.signing",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
