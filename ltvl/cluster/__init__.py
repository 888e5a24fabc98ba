"""Clusters: the local two-node cluster (``ltvl cluster``), process bookkeeping, cloud-config checks."""
