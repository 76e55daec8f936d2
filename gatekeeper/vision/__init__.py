"""Plate reading: camera sources, plate detection and recognition, plate grammars, model files."""
