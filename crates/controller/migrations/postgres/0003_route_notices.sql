-- Routes are announced when a script inserts one (no run yet) or changes what a route is
-- (its ends, edges, flow or whether it is active), not when a run claims a row or records
-- its own: those would echo back to the run.
DROP TRIGGER IF EXISTS routes_auto_sync ON routes;
CREATE TRIGGER routes_auto_sync AFTER INSERT ON routes
    FOR EACH ROW WHEN (NEW.run_id IS NULL) EXECUTE FUNCTION nextmini_notify_route();
DROP TRIGGER IF EXISTS routes_auto_sync_update ON routes;
CREATE TRIGGER routes_auto_sync_update AFTER UPDATE ON routes
    FOR EACH ROW WHEN (
        OLD.edges IS DISTINCT FROM NEW.edges
        OR OLD.active IS DISTINCT FROM NEW.active
        OR OLD.src_node_id IS DISTINCT FROM NEW.src_node_id
        OR OLD.dst_node_id IS DISTINCT FROM NEW.dst_node_id
        OR OLD.flow IS DISTINCT FROM NEW.flow
    ) EXECUTE FUNCTION nextmini_notify_route();
