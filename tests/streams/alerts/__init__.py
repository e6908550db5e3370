"""Tests of streams.alerts."""
