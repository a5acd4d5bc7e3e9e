-- Images and kernels are journaled (state 'building' until every file is
-- in place) and pin each of their files by SHA-256.
ALTER TABLE kernels ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE kernels ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE images ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';

CREATE TABLE kernel_artifacts (
    kernel  TEXT NOT NULL REFERENCES kernels(name) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    file    TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (kernel, role)
) STRICT;

CREATE TABLE image_artifacts (
    image   TEXT NOT NULL REFERENCES images(name) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    file    TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (image, role)
) STRICT;
