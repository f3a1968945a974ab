"""Firewatch: IoT fire monitoring for elderly-care and child-welfare institutions."""

__version__ = "0.1.0"
