"""The schema of the last released version (commit 048d061), as its code created it: the
migration tests build a data directory in it and upgrade it. Never edit: it is history."""

# Copied verbatim from `git show 048d061:studio/storage/index.py` (SCHEMA).
INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    thumb_path TEXT,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    prompt TEXT NOT NULL,
    user_prompt TEXT NOT NULL DEFAULT '',
    negative_prompt TEXT NOT NULL DEFAULT '',
    style TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    seed INTEGER,
    category TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    cost REAL NOT NULL DEFAULT 0,
    generation_time REAL NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    day TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'completed',
    parent_id TEXT,
    request_id TEXT,
    cache_key TEXT,
    shared INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_images_owner_created ON images(owner, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_images_cache ON images(cache_key);
CREATE INDEX IF NOT EXISTS idx_images_parent ON images(parent_id);
CREATE INDEX IF NOT EXISTS idx_images_provider ON images(provider, created_at DESC);
CREATE TABLE IF NOT EXISTS image_tags (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (image_id, tag)
);
CREATE INDEX IF NOT EXISTS idx_image_tags_tag ON image_tags(tag);
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at TEXT NOT NULL,
    day TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    prompt TEXT NOT NULL,
    n INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_kind TEXT,
    error TEXT,
    cost REAL NOT NULL DEFAULT 0,
    estimated_cost REAL NOT NULL DEFAULT 0,
    duration REAL NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_generations_day ON generations(day);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    day TEXT NOT NULL,
    amount REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_writes (
    key TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_pending_request ON pending_writes(request_id);
CREATE TABLE IF NOT EXISTS boards (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS board_items (
    board_id TEXT NOT NULL REFERENCES boards(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    added_at TEXT NOT NULL,
    PRIMARY KEY (board_id, image_id)
);
"""


# Copied verbatim from `git show 048d061:studio/jobs/store.py` (SCHEMA).
JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    style TEXT,
    seed_policy TEXT NOT NULL,
    base_seed INTEGER,
    concurrency INTEGER NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    webhook_url TEXT,
    script_name TEXT NOT NULL DEFAULT '',
    script_format TEXT NOT NULL DEFAULT '',
    total INTEGER NOT NULL,
    estimated_cost REAL NOT NULL DEFAULT 0,
    error TEXT,
    runner TEXT,
    heartbeat_at REAL,
    webhook_delivered INTEGER NOT NULL DEFAULT 0,
    webhook_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_jobs_owner ON jobs(owner, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    prompt TEXT NOT NULL DEFAULT '',
    negative_prompt TEXT NOT NULL DEFAULT '',
    timestamp TEXT,
    start_s REAL,
    end_s REAL,
    line INTEGER NOT NULL DEFAULT 0,
    overrides TEXT NOT NULL DEFAULT '{}',
    seed INTEGER,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    error TEXT,
    error_kind TEXT,
    cost REAL NOT NULL DEFAULT 0,
    estimated_cost REAL NOT NULL DEFAULT 0,
    image_ids TEXT NOT NULL DEFAULT '[]',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    updated_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS idx_job_items_status ON job_items(job_id, status);
"""
