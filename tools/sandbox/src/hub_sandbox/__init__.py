"""A sandbox CRM and PM tool that play the hub's upstream systems for real (demos, end-to-end tests).

It is not one of the hub's services: it sits where the CRM/PM connectors would,
publishing change events on crm.ingest / pm.ingest and applying crm.commands /
pm.commands. `hub_sandbox.client.SandboxClient` is "a user acting in the UI".
"""
