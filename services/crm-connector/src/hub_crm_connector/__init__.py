"""The CRM connector: Zoho CRM change notifications and a reconciliation poll in (crm.ingest), crm.commands out."""
