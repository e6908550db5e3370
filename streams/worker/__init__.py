"""The worker: the Faust app and agents, and the pipeline they drive.

Decode (:mod:`~streams.worker.decode`) → windows (:mod:`~streams.worker.windows`) →
detectors (in :mod:`~streams.worker.detector_process`) → the InfluxDB sink, with the
commit bookkeeping in :mod:`~streams.worker.pipeline`; the monitor config
(:mod:`~streams.worker.monitors`), stored references (:mod:`~streams.worker.references`),
delayed labels (:mod:`~streams.worker.labels`), dead letters and topics around them.
"""
