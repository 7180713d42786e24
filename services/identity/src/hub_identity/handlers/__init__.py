"""Identity's event handlers, one module per aggregate: users, integration (state, matching, profiles), accounts,
contacts, imports. They run on the batch state (`hub_identity.state`), registered by payload class.

Decisions a reader needs to know (deliberate, tested where they matter):

- Tenancy: the envelope's `org_id` is the CRM org for every event, PM ingest included
  (the connector knows which org a portal is integrated with). PM records of a portal
  other than the org's current one are stored but not paired.
- Unknown org / integration not enabled: CRM users are still kept and their
  `identity.user_access.changed` published (linking needs "is this user an admin"
  before anything is enabled); nothing is sent to the PM side and customers are only
  stored until `linking.integration.changed` says enabled with a portal. Disabling
  keeps the last mapping (S7: users keep access); enabling (or switching portal)
  re-matches every CRM user against that portal's users by e-mail.
- Stale / repeated upstream events: each record keeps the upstream `version` it was
  applied at; an event whose version is not newer changes nothing and emits nothing.
- Deletes: a deleted account / contact (CRM) or client company / client user (PM)
  turns its mapping to `unlinked` and deletes nothing on the other side (projects may
  hang off the client company; there is no delete command). An unlinked pair is not
  re-created on its own: someone removed it on purpose.
- CRM → PM: a new account becomes a client company (`pm.client_company.create`)
  unless an unpaired client company of the same name (`hub_schema.names.normalise_company_name`,
  the normaliser linking matches with) exists, which is paired instead; account renames go as `pm.client_company.update`.
  A contact becomes a client user of its account's company once that company is
  paired; contact changes go as `pm.client_user.update`.
  PM → CRM: the contract has no CRM command for accounts / contacts, so a client
  company / client user created in the PM tool is paired with an unpaired account of
  the same name / a contact of the paired account with the same e-mail, when there is one.
- A mapping created by a command is `pending` until the PM echo carrying that
  `command_id` arrives (then `linked`), or `unlinked` if the PM side rejects it.
- S19 in automatic sync (no acting user to tell): an account's contacts are created as
  client users all together or not at all when e-mails collide; the collision is logged.
- The initial profile comes with the set-up (S3), but identity never acts on the raw
  `hub.integration.enable`: linking decides it (admin, plan S17, field mapping), and only the
  `linking.integration.changed` that accepts it (`profile_request_id` set) applies its
  permissions. A refused enable therefore changes no profile and no one's access.
- Accounts that existed before the enable (S13 with S21/S22): linking owns client <-> account
  matching (normalised names, its own customer_pairs) and reports it as
  `linking.matching.page` events (rows cut to fit a message) and then `linking.matching.completed`
  (counts). Identity adopts that result instead of matching again:
  (1) every matched pair becomes a `linked` account mapping (identity.customer_mapping.changed;
  no company is created for it) and the account's contacts become client users of the matched
  company (S19: an e-mail collision creates none of them, as in every automatic sync);
  (2) every live account with no mapping row in the portal then goes the way of a new account
  (pair with the unique unpaired client company of the same name, else `pm.client_company.create`),
  except that a client linking reported `ambiguous` is not paired by name: an account named
  like it waits (the admin has the report; editing the account or a resync settles it).
  No duplicate company while matching runs: linking sets `matching_pending` on the
  `linking.integration.changed` that starts matching (enable of a portal never matched,
  switch) and sends the result on the same key, so identity sees them in order. While the
  org's matching is pending, a new account is only stored and PM-side name pairing waits;
  the matching result then adopts or creates it. An enable without matching (re-enable)
  syncs the unmapped accounts at once. If a create was already in flight when a matching
  result pairs its account (a resync racing a new account), the matched pair wins and the
  created company's echo is not paired (logged), so the account keeps one company.
- S18: the admin who asked for an import gets the optional `import_outcome` e-mail (what was
  imported, who was not and why); a refused import (S19 duplicates) gets
  `duplicate_client_emails` with `cause: "user_import"` instead.
"""

from __future__ import annotations

from hub_identity.handlers import accounts, contacts, imports, integration, users
from hub_identity.state import IdentityState
from hub_platform.consumer import Router

router = Router(state=IdentityState.load)
for module in (users, integration, accounts, contacts, imports):
    router.include(module.router)
