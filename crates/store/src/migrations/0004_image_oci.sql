-- Images pulled from an OCI registry keep what they were (reference,
-- manifest digest, layers) and how they run (entrypoint, cmd, env,
-- workdir, user), as one JSON document; NULL for other images.
ALTER TABLE images ADD COLUMN oci TEXT;
