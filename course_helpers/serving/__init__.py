"""Lesson 01's simple system: a model server with a cache, a prediction log and metrics."""

from .server import ServerHandle, serve

__all__ = ["ServerHandle", "serve"]
