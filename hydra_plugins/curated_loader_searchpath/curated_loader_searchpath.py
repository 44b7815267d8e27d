"""Makes curated_loader's config groups (``curation/``, ``augment/``, ...) and their schemas
available to every Hydra app in the environment: ``curation=noise_filter`` just works.

The groups are appended after the app's own config path, so an app's own file of the same
name wins. curated_loader (and torch) is imported only when Hydra builds its search path.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class CuratedLoaderSearchPathPlugin(SearchPathPlugin):
    """Appends ``pkg://curated_loader.conf`` and registers the structured schemas."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from curated_loader.config import conf_search_path, register_configs

        register_configs()
        search_path.append(provider="curated-loader", path=conf_search_path())
