"""A deterministic evaluation set: marketplace items, sellers' product shots and buyer photos."""
