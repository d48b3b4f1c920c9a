-- One schema for SQLite and PostgreSQL: only types and syntax both understand.
CREATE TABLE IF NOT EXISTS runs (
    id BIGINT PRIMARY KEY,
    started_at TEXT NOT NULL,
    topology TEXT NOT NULL,
    nodes BIGINT NOT NULL,
    links BIGINT NOT NULL,
    state TEXT NOT NULL,
    plumb_seconds DOUBLE PRECISION,
    wiring_seconds DOUBLE PRECISION,
    mem_per_node_bytes BIGINT,
    failed_nodes BIGINT NOT NULL DEFAULT 0
);

-- The current (or last) run's nodes and links: `SELECT COUNT(*) FROM nodes` counts the nodes
-- that have registered with the controller.
CREATE TABLE IF NOT EXISTS nodes (
    id BIGINT PRIMARY KEY,
    run_id BIGINT NOT NULL,
    underlay_addr TEXT,
    overlay_addr TEXT NOT NULL,
    state TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS links (
    a BIGINT NOT NULL,
    b BIGINT NOT NULL,
    run_id BIGINT NOT NULL,
    up BOOLEAN NOT NULL,
    PRIMARY KEY (a, b)
);
