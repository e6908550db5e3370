"""InfluxDB: the sink that writes :class:`~detectors.records.Record` s (:mod:`streams.influx.sink`)
and the database admin (:mod:`streams.influx.admin`)."""
