"""Worked examples for the teams around a lot (the cloud side); not part of the shipped ``gatekeeper`` package."""
