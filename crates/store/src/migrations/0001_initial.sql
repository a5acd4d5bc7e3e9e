-- Kernels, images and VMs. Artifacts live on disk beside the database,
-- in per-object folders; these rows are the index and the journal.
CREATE TABLE kernels (
    name        TEXT PRIMARY KEY NOT NULL,
    version     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE images (
    name        TEXT PRIMARY KEY NOT NULL,
    kernel      TEXT NOT NULL REFERENCES kernels(name) ON DELETE RESTRICT,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE vms (
    name            TEXT PRIMARY KEY NOT NULL,
    image           TEXT NOT NULL,
    state           TEXT NOT NULL,
    vcpu            INTEGER NOT NULL,
    memory_mib      INTEGER NOT NULL,
    disk_size_bytes INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
) STRICT;
