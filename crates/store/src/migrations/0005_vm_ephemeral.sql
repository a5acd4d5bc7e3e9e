-- `vm run --rm`: the VM lives only as long as its client's lease (and
-- never across a bangerd restart), so reconcile must know it from the row.
ALTER TABLE vms ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
