"""The vector store: one point per listing (a MaxSim multivector), on Qdrant Edge or a server."""
