"""SQL of the PM connector (its own schema): the tables both connectors share in shape (hub_zoho.state)."""

from __future__ import annotations

from hub_zoho.state import applied_command, cursor, record_command, reset_cursors, save_cursor, version_of

__all__ = ["applied_command", "cursor", "record_command", "reset_cursors", "save_cursor", "version_of"]
