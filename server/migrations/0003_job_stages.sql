-- Where a finished job's time went (JSON: decode, dispatch, process, encode).
ALTER TABLE jobs ADD COLUMN stages TEXT;
