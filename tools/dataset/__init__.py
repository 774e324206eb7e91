"""Dataset tools: inspect_dataset, audit_dataset, clean_dataset, split_dataset (see README "## Datasets")."""

from tools.dataset import audit, clean, split  # noqa: F401 - importing registers the tools
