"""Test doubles of external services (model servers) that the unit tests and dev benchmarks run on loopback."""
