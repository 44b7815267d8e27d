"""Hydra search-path plugin of curated_loader (found by Hydra in the ``hydra_plugins`` namespace)."""
