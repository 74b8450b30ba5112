-- Terminals (issue 20): a process started with `tty` runs on a pseudo-terminal whose
-- master the keeper holds. The column holds its window size as JSON text,
-- {"rows": R, "cols": C} (the latest resize), or NULL for a process on pipes.
ALTER TABLE processes ADD COLUMN tty TEXT;
-- A terminal started through Tensorlake's PTY API (/api/v1/pty) has a session token;
-- the column keeps its SHA-256 (hex), never the token, and is never shown.
ALTER TABLE processes ADD COLUMN tty_token TEXT;
