"""tidegate: an IoT sensor ingestion gateway (MQTT in, validated readings out to SQLite).

The PUBACK for a QoS 1 message goes out only after its readings (or its dead letter)
are committed, so a crash at any moment loses nothing and duplicates nothing.
"""

__version__ = "0.1.0"
