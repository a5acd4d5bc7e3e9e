-- The workspace disk of `vm run PATH` (issue 22): its folder under /root,
-- filesystem UUID and what it held, as JSON; NULL for a VM without one.
ALTER TABLE vms ADD COLUMN workspace TEXT;
