"""Simulation helpers: drawn plates and car photos for tests, benchmarks and ``run --sim``."""
