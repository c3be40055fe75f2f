"""The web client: `GET /` (one HTML page) and its assets under `/static/`."""

from app.web.routes import web_routes

__all__ = ["web_routes"]
