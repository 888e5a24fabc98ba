"""Tickets people can use outside ltvl: a compact sparse file, export in the backbone's own layout,
verification and the MLflow Model Registry. An adapter at the edge: the science core never imports it."""
