"""Zoho CRM and Zoho Projects as the connectors see them.

- `orgs`: one org's credentials and data centre (from the environment or a secrets file, never logged);
- `auth.TokenCache`: one access token per org, refreshed by one caller at a time (Zoho allows 10 access
  tokens per refresh token per 10 minutes, so never a token per request);
- `api.ZohoApi`: authorised requests with a per-org concurrency cap, 401 -> one refresh, 429/`Retry-After`
  -> wait and try again (never dropped), 207 -> per-item results;
- `crm.CrmClient` (REST v7 shapes) and `projects.ProjectsClient` (REST v3 shapes).
"""
