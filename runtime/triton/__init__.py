"""Triton Inference Server: `cfnet serve` (server.py), the Python-backend models (models/) and what the
repository writer and the client both read (config.py)."""
