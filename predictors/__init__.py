"""Shipped predictors, installed as the package nas._shipped.predictors (see nas/catalog.py)."""
