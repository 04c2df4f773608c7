-- The schema revision 0001 created before the takeover revision became its parent,
-- frozen from `pg_dump --schema-only` of a database migrated by that revision (PostgreSQL 15).
-- Databases built this way exist; the tests load this file, stamped 0001, and upgrade it.

CREATE TABLE public.alembic_version (
    version_num character varying(32) NOT NULL
);

CREATE TABLE public.task_audio (
    task_id uuid NOT NULL,
    kind character varying(16) NOT NULL,
    content bytea NOT NULL,
    filename character varying(255),
    content_type character varying(255),
    size integer NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ck_task_audio_kind_known CHECK (((kind)::text = ANY ((ARRAY['upload'::character varying, 'preprocessed'::character varying])::text[]))),
    CONSTRAINT ck_task_audio_not_empty CHECK ((size > 0))
);

CREATE TABLE public.task_events (
    task_id uuid NOT NULL,
    seq integer NOT NULL,
    kind character varying(16) NOT NULL,
    status character varying(16) NOT NULL,
    stage character varying(16),
    attempt integer,
    detail text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ck_task_events_kind_known CHECK (((kind)::text = ANY ((ARRAY['status'::character varying, 'retry'::character varying])::text[])))
);

CREATE TABLE public.tasks (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    text_id uuid NOT NULL,
    title character varying(50) DEFAULT 'Упражнение'::character varying NOT NULL,
    status character varying(16) DEFAULT 'created'::character varying NOT NULL,
    result text,
    accuracy double precision,
    mistakes jsonb,
    comment text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    completed_at timestamp with time zone,
    idempotency_key character varying(255),
    request_fingerprint character varying(64),
    lease_owner character varying(64),
    lease_expires_at timestamp with time zone,
    run_after timestamp with time zone DEFAULT now() NOT NULL,
    stage_attempts integer DEFAULT 0 NOT NULL,
    claim_count integer DEFAULT 0 NOT NULL,
    last_event_seq integer DEFAULT 0 NOT NULL,
    CONSTRAINT ck_tasks_accuracy_range CHECK (((accuracy >= (0)::double precision) AND (accuracy <= (100)::double precision))),
    CONSTRAINT ck_tasks_status_known CHECK (((status)::text = ANY ((ARRAY['created'::character varying, 'started'::character varying, 'preprocessing'::character varying, 'transcribing'::character varying, 'evaluating'::character varying, 'completed'::character varying, 'failed'::character varying])::text[]))),
    CONSTRAINT ck_tasks_title_not_empty CHECK ((char_length((title)::text) > 0))
);

ALTER TABLE ONLY public.alembic_version
    ADD CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num);

ALTER TABLE ONLY public.task_audio
    ADD CONSTRAINT pk_task_audio PRIMARY KEY (task_id, kind);

ALTER TABLE ONLY public.task_events
    ADD CONSTRAINT pk_task_events PRIMARY KEY (task_id, seq);

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT pk_tasks PRIMARY KEY (id);

CREATE INDEX ix_tasks_leased_user ON public.tasks USING btree (user_id) WHERE (lease_owner IS NOT NULL);

CREATE INDEX ix_tasks_unfinished ON public.tasks USING btree (created_at, id) WHERE ((status)::text <> ALL ((ARRAY['completed'::character varying, 'failed'::character varying])::text[]));

CREATE INDEX ix_tasks_user_created ON public.tasks USING btree (user_id, created_at DESC, id DESC);

CREATE UNIQUE INDEX uq_tasks_user_idempotency_key ON public.tasks USING btree (user_id, idempotency_key) WHERE (idempotency_key IS NOT NULL);

ALTER TABLE ONLY public.task_audio
    ADD CONSTRAINT fk_task_audio_task_id_tasks FOREIGN KEY (task_id) REFERENCES public.tasks(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.task_events
    ADD CONSTRAINT fk_task_events_task_id_tasks FOREIGN KEY (task_id) REFERENCES public.tasks(id) ON DELETE CASCADE;

INSERT INTO public.alembic_version (version_num) VALUES ('0001');
