"""Message sources. Today: MQTT (:mod:`gateway.sources.mqtt`)."""
