-- Leases (issue 20): a process started with `lease` lives while its owner renews it.
-- `lease` is its length in seconds (NULL: no lease); `lease_expires_at` the time
-- (ISO-8601 UTC) it is stopped unless renewed first, re-armed from here when a daemon
-- restarts (daemon/supervisor/leases.py).
ALTER TABLE processes ADD COLUMN lease REAL;
ALTER TABLE processes ADD COLUMN lease_expires_at TEXT;
