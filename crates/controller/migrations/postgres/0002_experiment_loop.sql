-- Flows, metrics, applications' flows, routes and link time series, in the seeds' tables and
-- columns where they have them (times as Unix nanoseconds, with the seeds' timestamptz
-- columns derived from them). Rows inserted into flows without a run, and rows inserted or
-- updated in routes, are announced with pg_notify, as the seeds' triggers do, so that a
-- control script's INSERT starts a flow or moves a route.
CREATE TABLE IF NOT EXISTS flows (
    id SERIAL PRIMARY KEY,
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
    start_time TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(start_ns / 1e9)) STORED,
    finish_time TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(finish_ns / 1e9)) STORED
);

CREATE TABLE IF NOT EXISTS metrics (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL,
    flow_id BYTEA NOT NULL,
    flow BIGINT,
    local_node_id BIGINT NOT NULL,
    remote_node_id BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    packets BIGINT NOT NULL,
    time_ns BIGINT NOT NULL,
    time_read TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(time_ns / 1e9)) STORED
);
CREATE INDEX IF NOT EXISTS metrics_run_time ON metrics (run_id, time_ns);

CREATE TABLE IF NOT EXISTS app_flows (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL,
    flow_id BYTEA NOT NULL,
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
    start_time TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(start_ns / 1e9)) STORED,
    finish_time TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(finish_ns / 1e9)) STORED
);

CREATE TABLE IF NOT EXISTS routes (
    route_id SERIAL PRIMARY KEY,
    run_id BIGINT,
    src_node_id BIGINT NOT NULL,
    dst_node_id BIGINT NOT NULL,
    edges JSONB NOT NULL,
    flow BIGINT,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    updated_ns BIGINT
);

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

CREATE OR REPLACE FUNCTION nextmini_notify_flow() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('auto_sync_flows', json_build_object(
        'newly_inserted_id', NEW.id, 'src', NEW.src_node_id, 'dst', NEW.dst_node_id)::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS flows_auto_sync ON flows;
CREATE TRIGGER flows_auto_sync AFTER INSERT ON flows
    FOR EACH ROW WHEN (NEW.run_id IS NULL) EXECUTE FUNCTION nextmini_notify_flow();

CREATE OR REPLACE FUNCTION nextmini_notify_route() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('auto_sync_routes', json_build_object(
        'op', TG_OP, 'route_id', NEW.route_id)::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS routes_auto_sync ON routes;
CREATE TRIGGER routes_auto_sync AFTER INSERT OR UPDATE ON routes
    FOR EACH ROW EXECUTE FUNCTION nextmini_notify_route();
