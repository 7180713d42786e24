"""The PM connector: Zoho Projects polled (and optionally pushed by a workflow webhook) into pm.ingest, pm.commands out."""
