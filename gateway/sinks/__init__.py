"""Sinks: where committed readings go. See :class:`gateway.sinks.base.Sink`."""
