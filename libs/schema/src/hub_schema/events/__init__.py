"""Payload models, one module per area. Every module here is imported by the registry."""
