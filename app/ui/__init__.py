"""The Gradio web UI: thin wiring of widgets to the explanation service."""

from app.ui.app import build_app, create_service, launch, serve

__all__ = ["build_app", "create_service", "launch", "serve"]
