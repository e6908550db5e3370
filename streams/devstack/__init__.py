"""Everything for running driftwatch on one machine: the local broker and InfluxDB
(:mod:`~streams.devstack.localstack`), ``driftwatch up`` (:mod:`~streams.devstack.up`), and the
demo traffic (:mod:`~streams.devstack.demo`, :mod:`~streams.devstack.attacks`, ``examples/``)."""
