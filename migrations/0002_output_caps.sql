-- Output capture is bounded (max_output_bytes per stream). When a stream grows past
-- its cap the daemon frees the oldest bytes (punching a hole at the head of the file,
-- so offsets stay the same) and records here how many bytes are gone.
ALTER TABLE processes ADD COLUMN stdout_dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE processes ADD COLUMN stderr_dropped INTEGER NOT NULL DEFAULT 0;

-- Tensorlake's stdout_mode / stderr_mode: 'capture' (the default) or 'discard'
-- (the stream goes to /dev/null).
ALTER TABLE processes ADD COLUMN stdout_mode TEXT NOT NULL DEFAULT 'capture';
ALTER TABLE processes ADD COLUMN stderr_mode TEXT NOT NULL DEFAULT 'capture';
