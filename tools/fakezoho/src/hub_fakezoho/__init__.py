"""A fake Zoho: OAuth refresh, CRM v7 records and watch channels, Projects v3, with Zoho's limits (see app.py)."""
