-- Uploaded photos and videos, stored content-addressed on disk (INTAKE_MEDIA_DIR) by their
-- SHA-256; the same bytes uploaded twice are one row and one file.
CREATE TABLE media (
    sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type text NOT NULL,
    size bigint NOT NULL CHECK (size > 0),
    thumbnail_sha256 text CHECK (thumbnail_sha256 ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE report_media (
    report_id uuid NOT NULL REFERENCES reports (id),
    sha256 text NOT NULL REFERENCES media (sha256),
    position int NOT NULL,
    PRIMARY KEY (report_id, sha256)
);
