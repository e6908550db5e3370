"""Where results go: :mod:`streams.sinks.influx` writes :class:`~detectors.records.Record` s to InfluxDB."""
