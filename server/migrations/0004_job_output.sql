-- How a job's result is encoded (JSON: {"format": "png"|"jpeg"|"webp", "quality"?}).
ALTER TABLE jobs ADD COLUMN output TEXT NOT NULL DEFAULT '{"format":"png"}';
