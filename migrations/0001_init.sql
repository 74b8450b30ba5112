-- The process registry. One row per process ever created; ids are never reused
-- (AUTOINCREMENT keeps the high-water mark in sqlite_sequence even after deletes).
CREATE TABLE processes (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    ref               TEXT,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'running', 'idle', 'terminating')),
    exit_state        TEXT CHECK (exit_state IN ('success', 'failed', 'timeout', 'canceled')),
    error             TEXT,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    completed_at      TEXT,
    argv              TEXT NOT NULL,          -- JSON array
    command           TEXT,                   -- set when started with {"command": ...}
    env               TEXT NOT NULL,          -- JSON object: the caller's overrides only
    cwd               TEXT,
    timeout           REAL,
    grace             REAL,
    stdin             TEXT NOT NULL DEFAULT 'null',
    pid               INTEGER,
    pid_start_time    REAL,                   -- start time in clock ticks after boot (/proc/<pid>/stat
                                              -- field 22) at spawn: with boot_id, proves identity
    boot_id           TEXT,                   -- /proc/sys/kernel/random/boot_id at spawn
    exit_code         INTEGER,
    exit_signal       TEXT,
    stop_reason       TEXT,
    stop_requested_at TEXT,
    stop_grace        REAL,
    stop_signal       TEXT,
    idempotency_key   TEXT UNIQUE,
    request_hash      TEXT
);

CREATE INDEX processes_by_state ON processes (state, id);
CREATE INDEX processes_by_ref ON processes (ref, id);
CREATE INDEX processes_by_pid ON processes (pid, id);

-- Small key/value facts about this registry, e.g. its instance id, which every
-- child carries as STABLEHAND_INSTANCE so a restarted daemon can tell its own
-- children from those of another Stablehand on the same machine.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
