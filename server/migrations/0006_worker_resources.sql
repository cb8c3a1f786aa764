-- What a worker's latest heartbeat says about its resources (optional on
-- the wire: older and foreign workers leave them NULL).
ALTER TABLE workers ADD COLUMN cpu_percent REAL;
ALTER TABLE workers ADD COLUMN rss_bytes INTEGER;
ALTER TABLE workers ADD COLUMN runtime TEXT;
