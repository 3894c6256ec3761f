"""The cloud link: the outbox delivered in order, synchronous decisions with a
deadline, the sync feed of plate list changes and commands, all signed in
the Standard Webhooks form. The wire contract is docs/upstream-api.md.

A site without ``[upstream]`` runs none of this.
"""
