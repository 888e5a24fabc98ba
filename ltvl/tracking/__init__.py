"""Adapters that record lineage outside the science core (MLflow)."""
