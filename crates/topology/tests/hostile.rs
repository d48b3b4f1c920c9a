//! Hostile topology files: GraphML and node-link JSON as users import them from the Topology
//! Zoo, networkx or elsewhere. Nothing may panic, and what is accepted is a usable topology.
//! Fixed seed (see `crates/hostile`).

fn usable(t: &topology::Topology) {
    let n = t.n_nodes();
    for &(a, b) in t.edges() {
        assert!(a >= 1 && b <= n && a < b, "edge {a}-{b} of {n} nodes");
        let _ = t.length_km(a, b);
    }
}

#[test]
fn graphml_can_say_anything() {
    let inputs = hostile::mutated_text(hostile::corpus("graphml"), 6);
    hostile::check("GraphML", inputs, 3000, |text| {
        let Ok(t) = topology::from_graphml(text) else {
            return false;
        };
        usable(&t);
        true
    });
}

#[test]
fn node_link_json_can_say_anything() {
    let inputs = hostile::mutated_text(hostile::corpus("node_link"), 6);
    hostile::check("node-link JSON", inputs, 3000, |text| {
        let Ok(t) = topology::from_node_link_json(text) else {
            return false;
        };
        usable(&t);
        true
    });
}
