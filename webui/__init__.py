"""The admin web UI and REST API (Flask application factory, served by waitress)."""

from .app import create_app

__all__ = ["create_app"]
