"""The streaming indexer: Faust agents that keep the vector index in step with listing events."""
