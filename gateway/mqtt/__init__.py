"""The MQTT link: the store's events published to a broker from an outbox
cursor of their own, the lanes' retained state, Home Assistant discovery and,
when enabled, commands from the broker. See docs/mqtt.md."""
