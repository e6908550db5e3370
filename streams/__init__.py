"""driftwatch streams: everything that moves data (Kafka, Faust, InfluxDB, webhooks)."""
