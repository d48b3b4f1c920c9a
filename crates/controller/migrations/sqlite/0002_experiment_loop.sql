-- Flows, metrics, applications' flows, routes and link time series, in the seeds' tables and
-- columns where they have them (times as Unix nanoseconds, with the seeds' time columns
-- derived from them).
CREATE TABLE IF NOT EXISTS flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BIGINT,
    src_node_id BIGINT NOT NULL,
    dst_node_id BIGINT NOT NULL,
    flow_len_type TEXT NOT NULL DEFAULT 'bytes',
    flow_len_bytes BIGINT,
    flow_len_duration DOUBLE PRECISION,
    flow_rate BIGINT,
    flow_weight BIGINT,
    transport TEXT NOT NULL DEFAULT 'tcp',
    cc TEXT,
    start_offset DOUBLE PRECISION NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    is_finished BOOLEAN NOT NULL DEFAULT FALSE,
    local_port BIGINT,
    start_ns BIGINT,
    finish_ns BIGINT,
    fct_seconds DOUBLE PRECISION,
    bytes BIGINT,
    throughput_bps DOUBLE PRECISION,
    retransmits BIGINT,
    srtt_us BIGINT,
    cwnd BIGINT,
    failure TEXT,
    start_time TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', start_ns / 1e9, 'unixepoch')) VIRTUAL,
    finish_time TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', finish_ns / 1e9, 'unixepoch')) VIRTUAL
);

-- Bytes of a flow over one link direction in one interval (the seeds' rows).
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BIGINT NOT NULL,
    flow_id BLOB NOT NULL,
    flow BIGINT,
    local_node_id BIGINT NOT NULL,
    remote_node_id BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    packets BIGINT NOT NULL,
    time_ns BIGINT NOT NULL,
    time_read TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', time_ns / 1e9, 'unixepoch')) VIRTUAL
);
CREATE INDEX IF NOT EXISTS metrics_run_time ON metrics (run_id, time_ns);

-- Every TCP or UDP conversation seen leaving a node (applications' and generated flows).
CREATE TABLE IF NOT EXISTS app_flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BIGINT NOT NULL,
    flow_id BLOB NOT NULL,
    src BIGINT NOT NULL,
    dst BIGINT NOT NULL,
    protocol BIGINT NOT NULL,
    src_port BIGINT NOT NULL,
    dst_port BIGINT NOT NULL,
    route TEXT,
    route_id BIGINT,
    bytes BIGINT NOT NULL DEFAULT 0,
    is_finished BOOLEAN NOT NULL DEFAULT FALSE,
    start_ns BIGINT NOT NULL,
    finish_ns BIGINT,
    start_time TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', start_ns / 1e9, 'unixepoch')) VIRTUAL,
    finish_time TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', finish_ns / 1e9, 'unixepoch')) VIRTUAL
);

-- Routes pinned while running: a path or DAG from src to dst, as JSON edges [[a, b], …].
CREATE TABLE IF NOT EXISTS routes (
    route_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BIGINT,
    src_node_id BIGINT NOT NULL,
    dst_node_id BIGINT NOT NULL,
    edges TEXT NOT NULL,
    flow BIGINT,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    updated_ns BIGINT
);

-- Each link direction, every interval.
CREATE TABLE IF NOT EXISTS link_metrics (
    run_id BIGINT NOT NULL,
    time_ns BIGINT NOT NULL,
    src BIGINT NOT NULL,
    dst BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    packets BIGINT NOT NULL,
    dropped_down BIGINT NOT NULL,
    dropped_loss BIGINT NOT NULL,
    dropped_queue BIGINT NOT NULL,
    dropped_red BIGINT NOT NULL,
    queue_packets BIGINT NOT NULL,
    utilization DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS link_metrics_run_time ON link_metrics (run_id, time_ns);
