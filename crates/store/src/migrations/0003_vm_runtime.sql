-- What a VM needs to boot again and to be found after a daemon restart.
-- The guest address is unique across VMs: a lease held for the VM's
-- lifetime and released with its row.
ALTER TABLE vms ADD COLUMN kernel TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vms ADD COLUMN ip TEXT;
ALTER TABLE vms ADD COLUMN mac TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN tap TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN system_uuid TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN work_uuid TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN runtime TEXT;
ALTER TABLE vms ADD COLUMN last_error TEXT;
CREATE UNIQUE INDEX vms_ip ON vms(ip);
