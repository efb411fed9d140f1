"""Device discovery: Home Assistant MQTT discovery configs and Zigbee2MQTT's device list
turned into named sensors with units, without executing anything a device sends.

* :mod:`gateway.discovery.template` — the safe value_template evaluator;
* :mod:`gateway.discovery.homeassistant` — discovery configs → entities;
* :mod:`gateway.discovery.zigbee2mqtt` — ``bridge/devices`` exposes → units;
* :mod:`gateway.discovery.registry` — the entities in force, their names and state topics;
* :mod:`gateway.discovery.store` — the registry on disk, so a restart keeps it;
* :mod:`gateway.discovery.service` — subscriptions and saving while the gateway runs.
"""
