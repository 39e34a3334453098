"""Datasets of a marketplace's own listings: the JSON lines manifest, its photos, its splits."""
