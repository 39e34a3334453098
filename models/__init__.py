"""The shared core of lookalike: settings, event contract, image decoding, model, embedder, store."""
