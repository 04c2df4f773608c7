-- The DDL revision 0001 ran before it had a parent revision, frozen from its
-- `alembic upgrade head --sql` output. Databases built by it exist, stamped 0001; the tests
-- load this file and check that such a database reaches the same head as any other.

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE tasks (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    user_id UUID NOT NULL,
    text_id UUID NOT NULL,
    title VARCHAR(50) DEFAULT 'Упражнение' NOT NULL,
    status VARCHAR(16) DEFAULT 'created' NOT NULL,
    result TEXT,
    accuracy FLOAT,
    mistakes JSONB,
    comment TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    completed_at TIMESTAMP WITH TIME ZONE,
    idempotency_key VARCHAR(255),
    request_fingerprint VARCHAR(64),
    lease_owner VARCHAR(64),
    lease_expires_at TIMESTAMP WITH TIME ZONE,
    run_after TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    stage_attempts INTEGER DEFAULT '0' NOT NULL,
    claim_count INTEGER DEFAULT '0' NOT NULL,
    last_event_seq INTEGER DEFAULT '0' NOT NULL,
    CONSTRAINT pk_tasks PRIMARY KEY (id),
    CONSTRAINT ck_tasks_status_known CHECK (status IN ('created', 'started', 'preprocessing', 'transcribing', 'evaluating', 'completed', 'failed')),
    CONSTRAINT ck_tasks_accuracy_range CHECK (accuracy >= 0 AND accuracy <= 100),
    CONSTRAINT ck_tasks_title_not_empty CHECK (char_length(title) > 0)
);

CREATE INDEX ix_tasks_leased_user ON tasks (user_id) WHERE lease_owner IS NOT NULL;

CREATE INDEX ix_tasks_unfinished ON tasks (created_at, id) WHERE status NOT IN ('completed', 'failed');

CREATE INDEX ix_tasks_user_created ON tasks (user_id, created_at DESC, id DESC);

CREATE UNIQUE INDEX uq_tasks_user_idempotency_key ON tasks (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_audio (
    task_id UUID NOT NULL,
    kind VARCHAR(16) NOT NULL,
    content BYTEA NOT NULL,
    filename VARCHAR(255),
    content_type VARCHAR(255),
    size INTEGER NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_task_audio PRIMARY KEY (task_id, kind),
    CONSTRAINT ck_task_audio_kind_known CHECK (kind IN ('upload', 'preprocessed')),
    CONSTRAINT ck_task_audio_not_empty CHECK (size > 0),
    CONSTRAINT fk_task_audio_task_id_tasks FOREIGN KEY(task_id) REFERENCES tasks (id) ON DELETE CASCADE
);

CREATE TABLE task_events (
    task_id UUID NOT NULL,
    seq INTEGER NOT NULL,
    kind VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL,
    stage VARCHAR(16),
    attempt INTEGER,
    detail TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_task_events PRIMARY KEY (task_id, seq),
    CONSTRAINT ck_task_events_kind_known CHECK (kind IN ('status', 'retry')),
    CONSTRAINT fk_task_events_task_id_tasks FOREIGN KEY(task_id) REFERENCES tasks (id) ON DELETE CASCADE
);

INSERT INTO alembic_version (version_num) VALUES ('0001');
