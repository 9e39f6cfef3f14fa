"""The data hwnas ships: search spaces, device profiles, predictors and reference sets.

An installed package holds them as nas._shipped.search_spaces, .latency_luts and
.predictors, mapped from the repository's top-level folders (pyproject.toml); nas.catalog
finds them and layers a user's own folders on top.
"""
