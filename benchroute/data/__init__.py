"""Loaders into the canonical store, one module per source."""
