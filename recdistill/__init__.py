"""Rec-Distill shared core: feature schema and encoder, datasets, metrics, settings, CLI."""

__version__ = "0.1.0"
