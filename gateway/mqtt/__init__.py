"""The MQTT link: the store's events published to a broker from an outbox
cursor of their own, the lanes' retained state and Home Assistant discovery.
See docs/mqtt.md."""
