"""The shared core: settings, event contract, image decoding, model, embedder, vector store."""
