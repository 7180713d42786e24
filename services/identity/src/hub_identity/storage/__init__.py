"""Identity's SQL, on the handler's asyncpg connection (identity's own schema; search_path is set).

- `rows`: what the batch state reads (one query per table for every key or index value of a batch) and writes
  (bulk upserts), for the tables it keeps (`hub_identity.state`);
- `profiles`: permission profile history (S3, S23), appended and read directly (never cached: a revision is
  numbered under an advisory lock);
- `matching`: the client companies a matching run found ambiguous, noted page by page.
"""

from hub_identity.storage.matching import note_ambiguous, take_ambiguous
from hub_identity.storage.profiles import add_profile, latest_profiles, profile_history
from hub_identity.storage.rows import delete_rows, load_rows, query_rows, rows_of, unnormalised_names, upsert

__all__ = ["add_profile", "delete_rows", "latest_profiles", "load_rows", "note_ambiguous", "profile_history",
           "query_rows", "rows_of", "take_ambiguous", "unnormalised_names", "upsert"]
