"""driftwatch detectors: the science, pure and I/O free.

Everything in this package works on numpy arrays and plain data. It never
imports Kafka, Faust, InfluxDB or Streamlit, so every detector can be used
and tested from a Python prompt.
"""
