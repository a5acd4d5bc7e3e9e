-- Images built from a recipe keep their facts (sizes, package count,
-- docker's and mise's versions, where pinned binaries came from), as one
-- JSON document; NULL for other images.
ALTER TABLE images ADD COLUMN facts TEXT;
