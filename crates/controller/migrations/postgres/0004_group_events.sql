-- Multicast groups over a run: every creation, join, leave, change of trees, rebuild after the
-- routes changed, and deletion, with the nodes it names and the group after it (members, and
-- each tree as built: tree_id, weight, edges pruned to members, unreached members).
CREATE TABLE IF NOT EXISTS group_events (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL,
    time_ns BIGINT NOT NULL,
    group_addr TEXT NOT NULL,
    source_node_id BIGINT NOT NULL,
    event TEXT NOT NULL,
    nodes JSONB NOT NULL,
    members JSONB NOT NULL,
    trees JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS group_events_run ON group_events (run_id, group_addr);
