"""Packaging beyond pyproject.toml: the top-level ``conf/`` ships as the package
``curated_loader.conf`` (reachable as ``pkg://curated_loader.conf``, YAML as package data),
and the Hydra search-path plugin in the ``hydra_plugins`` namespace ships beside it."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["curated_loader", "curated_loader.*"], exclude=["*.__pycache__"]),
        "curated_loader.conf",
        *(f"curated_loader.conf.{group}" for group in find_namespace_packages(where="conf")),
        *find_namespace_packages(include=["hydra_plugins.*"]),
    ],
    package_dir={"curated_loader.conf": "conf"},
)
