"""curated_loader's Hydra config groups; installed as the package ``curated_loader.conf``."""
