-- Managed processes (issue 19): a record may carry a name, and a managed spec (restart
-- policy, health check, ready condition) with its live status, each stored as JSON text
-- (daemon/managed.py: spec_to_text, state_to_text). Its children are runs, one row each.
ALTER TABLE processes ADD COLUMN name TEXT;
ALTER TABLE processes ADD COLUMN managed TEXT;
ALTER TABLE processes ADD COLUMN managed_state TEXT;
CREATE INDEX processes_name ON processes (name, id) WHERE name IS NOT NULL;

CREATE TABLE runs (
    process_id INTEGER NOT NULL,
    run INTEGER NOT NULL,
    pid INTEGER,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    exit_code INTEGER,
    exit_signal TEXT,
    reason TEXT,          -- exited | unhealthy | restarted | stopped | lost
    PRIMARY KEY (process_id, run)
) WITHOUT ROWID;
-- An old run's pid still addresses its record (Tensorlake's routes address by pid).
CREATE INDEX runs_pid ON runs (pid);
