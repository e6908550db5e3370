"""The Kafka broker's clients: topic admin (:mod:`streams.broker.admin`) and transport
security in each client library's spelling (:mod:`streams.broker.security`)."""
