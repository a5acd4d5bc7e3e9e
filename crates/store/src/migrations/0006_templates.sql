-- Snapshot templates (issue 17): one per VM shape, journaled like images.
CREATE TABLE templates (
    id          TEXT PRIMARY KEY NOT NULL,
    image       TEXT NOT NULL,
    kernel      TEXT NOT NULL,
    vcpu        INTEGER NOT NULL,
    memory_mib  INTEGER NOT NULL,
    backend     TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    system_uuid TEXT NOT NULL,
    work_uuid   TEXT NOT NULL,
    mac         TEXT NOT NULL,
    work_bytes  INTEGER NOT NULL,
    files       TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
-- How a VM last started (resumed or cold, and why), and the hidden VMs
-- that boot to make a template.
ALTER TABLE vms ADD COLUMN boot_path TEXT;
ALTER TABLE vms ADD COLUMN template_build TEXT;
