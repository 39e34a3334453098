"""Typed keys under which the app keeps its settings and resources."""

from __future__ import annotations

from aiohttp import web

from models.embedder import AsyncEmbedder
from models.fetch import ImageFetcher
from models.microbatch import MicroBatcher
from models.photos import PhotoPipeline
from models.store.types import VectorStore
from query.admission import Admission
from query.metrics import ApiMetrics
from query.settings import ApiSettings

SETTINGS = web.AppKey("settings", ApiSettings)
METRICS = web.AppKey("metrics", ApiMetrics)
EMBEDDER = web.AppKey("embedder", AsyncEmbedder)
STORE = web.AppKey("store", VectorStore)
FETCHER = web.AppKey("fetcher", ImageFetcher)
PHOTOS = web.AppKey("photos", PhotoPipeline)
BATCHER = web.AppKey("batcher", MicroBatcher)
ADMISSION = web.AppKey("admission", Admission)
