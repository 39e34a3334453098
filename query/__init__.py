"""The query service: an aiohttp app that searches the live collection by photo."""
