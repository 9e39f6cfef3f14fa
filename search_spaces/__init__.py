"""Shipped search_spaces, installed as the package nas._shipped.search_spaces (see nas/catalog.py)."""
