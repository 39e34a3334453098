"""Retrieval evaluation: metrics, and the harness that scores a model through the real store."""
