"""Shipped latency_luts, installed as the package nas._shipped.latency_luts (see nas/catalog.py)."""
