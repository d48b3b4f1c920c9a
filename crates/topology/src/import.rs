//! Importing real topologies: GraphML as the Internet Topology Zoo writes it (node attributes
//! `label`, `Latitude`, `Longitude`), and networkx node-link JSON (`nodes`, and `links` or
//! `edges`; coordinates as `pos = [lon, lat]` or latitude/longitude keys; an edge's `dist` in km
//! wins over coordinates).
//!
//! Nodes are numbered 1.. in the order the file lists them; names and coordinates are kept.
//! Parallel edges and self-loops (both occur in the Zoo) are dropped: a link joins two nodes.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde_json::Value;

use crate::{GeoPoint, Topology, TopologyError};

fn parse_error(what: &'static str, message: impl ToString) -> TopologyError {
    TopologyError::Parse {
        what,
        message: message.to_string(),
    }
}

/// Node id strings in file order, edges by id string, attributes per node.
#[derive(Default)]
struct Collected {
    order: Vec<String>,
    index: HashMap<String, u32>,
    names: Vec<Option<String>>,
    coords: Vec<Option<GeoPoint>>,
    edges: Vec<(String, String, Option<f64>)>,
}

impl Collected {
    fn add_node(&mut self, id: String) -> Result<usize, TopologyError> {
        if self.index.contains_key(&id) {
            return Err(parse_error(
                "topology file",
                format!("node `{id}` is listed twice"),
            ));
        }
        let i = self.order.len();
        self.index.insert(id.clone(), i as u32 + 1);
        self.order.push(id);
        self.names.push(None);
        self.coords.push(None);
        Ok(i)
    }

    fn finish(self, what: &'static str) -> Result<Topology, TopologyError> {
        let n = self.order.len() as u32;
        if n == 0 {
            return Err(parse_error(what, "no nodes"));
        }
        let mut pairs = Vec::new();
        let mut lengths = HashMap::new();
        for (s, t, dist) in &self.edges {
            let a = *self
                .index
                .get(s)
                .ok_or_else(|| parse_error(what, format!("an edge names unknown node `{s}`")))?;
            let b = *self
                .index
                .get(t)
                .ok_or_else(|| parse_error(what, format!("an edge names unknown node `{t}`")))?;
            if a == b {
                continue;
            }
            pairs.push((a, b));
            if let Some(d) = dist {
                lengths.insert((a.min(b), a.max(b)), *d);
            }
        }
        let mut t = Topology::new(what, n, pairs)?;
        t.lengths_km = t.edges().iter().map(|e| lengths.get(e).copied()).collect();
        t.names = self.names;
        t.coords = self.coords;
        Ok(t)
    }
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, TopologyError> {
    for a in e.attributes() {
        let a = a.map_err(|x| parse_error("GraphML", x))?;
        if a.key.as_ref() == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|x| parse_error("GraphML", x))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn entity(name: &str) -> &'static str {
    match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => "",
    }
}

/// Parses GraphML.
pub fn from_graphml(text: &str) -> Result<Topology, TopologyError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    // key id → attribute name, for node and edge keys.
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut c = Collected::default();
    let mut current_node: Option<usize> = None;
    let mut current_edge: Option<usize> = None;
    let mut data_key: Option<String> = None;
    let mut data_text = String::new();
    let mut lat: HashMap<usize, f64> = HashMap::new();
    let mut lon: HashMap<usize, f64> = HashMap::new();

    loop {
        let event = reader.read_event().map_err(|e| {
            parse_error(
                "GraphML",
                format!("at byte {}: {e}", reader.buffer_position()),
            )
        })?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                // `<node id="3"/>` has no end tag: it opens and closes at once.
                let empty = matches!(event, Event::Empty(_));
                match e.local_name().as_ref() {
                    "key" => {
                        if let (Some(id), Some(name)) = (attr(e, "id")?, attr(e, "attr.name")?) {
                            keys.insert(id, name);
                        }
                    }
                    "node" => {
                        let id = attr(e, "id")?
                            .ok_or_else(|| parse_error("GraphML", "a node without an id"))?;
                        let i = c.add_node(id)?;
                        current_node = (!empty).then_some(i);
                    }
                    "edge" => {
                        let s = attr(e, "source")?
                            .ok_or_else(|| parse_error("GraphML", "an edge without a source"))?;
                        let t = attr(e, "target")?
                            .ok_or_else(|| parse_error("GraphML", "an edge without a target"))?;
                        c.edges.push((s, t, None));
                        current_edge = (!empty).then_some(c.edges.len() - 1);
                    }
                    "data" if !empty => {
                        data_key = attr(e, "key")?;
                        data_text.clear();
                    }
                    _ => {}
                }
            }
            Event::Text(t) if data_key.is_some() => data_text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if data_key.is_some() => data_text.push_str(entity(r.as_ref())),
            Event::End(e) => match e.local_name().as_ref() {
                "data" => {
                    let key = data_key.take().unwrap_or_default();
                    let name = keys.get(&key).map_or(key.as_str(), String::as_str);
                    let value = data_text.trim();
                    if let Some(i) = current_edge {
                        if name.eq_ignore_ascii_case("dist")
                            || name.eq_ignore_ascii_case("distance")
                        {
                            c.edges[i].2 = value.parse().ok();
                        }
                    } else if let Some(i) = current_node {
                        match name {
                            "label" | "name" => c.names[i] = Some(value.to_owned()),
                            "Latitude" | "latitude" | "lat" => {
                                if let Ok(v) = value.parse() {
                                    lat.insert(i, v);
                                }
                            }
                            "Longitude" | "longitude" | "lon" => {
                                if let Ok(v) = value.parse() {
                                    lon.insert(i, v);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                "node" => current_node = None,
                "edge" => current_edge = None,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    for (i, la) in &lat {
        if let Some(lo) = lon.get(i) {
            c.coords[*i] = Some(GeoPoint { lat: *la, lon: *lo });
        }
    }
    c.finish("GraphML")
}

/// Parses networkx node-link JSON.
pub fn from_node_link_json(text: &str) -> Result<Topology, TopologyError> {
    let root: Value = serde_json::from_str(text).map_err(|e| parse_error("node-link JSON", e))?;
    let nodes = root
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_error("node-link JSON", "no `nodes` array"))?;
    let links = root
        .get("links")
        .or_else(|| root.get("edges"))
        .and_then(Value::as_array)
        .ok_or_else(|| parse_error("node-link JSON", "no `links` or `edges` array"))?;
    let id_of = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let number = |v: Option<&Value>| -> Option<f64> {
        match v? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    let mut c = Collected::default();
    for node in nodes {
        let id = node
            .get("id")
            .and_then(id_of)
            .ok_or_else(|| parse_error("node-link JSON", "a node without an `id`"))?;
        let i = c.add_node(id)?;
        c.names[i] = ["label", "name"]
            .iter()
            .find_map(|k| node.get(*k).and_then(Value::as_str).map(str::to_owned));
        let from_pos = node.get("pos").and_then(Value::as_array).and_then(|p| {
            Some(GeoPoint {
                lon: number(p.first())?,
                lat: number(p.get(1))?,
            })
        });
        let from_keys = || {
            let lat = ["Latitude", "latitude", "lat"]
                .iter()
                .find_map(|k| number(node.get(*k)))?;
            let lon = ["Longitude", "longitude", "lon", "lng"]
                .iter()
                .find_map(|k| number(node.get(*k)))?;
            Some(GeoPoint { lat, lon })
        };
        c.coords[i] = from_pos.or_else(from_keys);
    }
    for link in links {
        let end = |k: &str| {
            link.get(k)
                .and_then(id_of)
                .ok_or_else(|| parse_error("node-link JSON", format!("a link without `{k}`")))
        };
        c.edges
            .push((end("source")?, end("target")?, number(link.get("dist"))));
    }
    c.finish("node-link JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZOO: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key attr.name="Latitude" attr.type="double" for="node" id="d29" />
  <key attr.name="Longitude" attr.type="double" for="node" id="d32" />
  <key attr.name="label" attr.type="string" for="node" id="d33" />
  <graph edgedefault="undirected">
    <node id="0"><data key="d29">40.71427</data><data key="d32">-74.00597</data><data key="d33">New York</data></node>
    <node id="1"><data key="d29">41.85003</data><data key="d32">-87.65005</data><data key="d33">Chicago</data></node>
    <node id="2"><data key="d33">AT&amp;T Lab</data></node>
    <edge source="0" target="1" />
    <edge source="1" target="0" />
    <edge source="1" target="2" />
    <edge source="2" target="2" />
  </graph>
</graphml>"#;

    #[test]
    fn graphml_from_the_topology_zoo() {
        let t = from_graphml(ZOO).unwrap();
        assert_eq!(t.n_nodes(), 3);
        assert_eq!(t.edges(), &[(1, 2), (2, 3)]);
        assert_eq!(t.names[0].as_deref(), Some("New York"));
        assert_eq!(t.names[2].as_deref(), Some("AT&T Lab"));
        let km = t.length_km(1, 2).unwrap();
        assert!((km - 1145.0).abs() < 10.0, "New York to Chicago: {km}");
        assert_eq!(t.length_km(2, 3), None, "no coordinates for node 3");
    }

    #[test]
    fn node_link_json_with_pos_keys_and_dist() {
        let text = r#"{"directed": false, "multigraph": false, "graph": {},
          "nodes": [{"id": "a", "pos": [-74.00597, 40.71427]},
                    {"id": "b", "Latitude": 41.85003, "Longitude": -87.65005, "label": "Chicago"},
                    {"id": "c", "lat": 0.0, "lon": 0.0}],
          "links": [{"source": "a", "target": "b"}, {"source": "b", "target": "c", "dist": 12.5}]}"#;
        let t = from_node_link_json(text).unwrap();
        assert_eq!(t.edges(), &[(1, 2), (2, 3)]);
        assert_eq!(t.names[1].as_deref(), Some("Chicago"));
        assert!((t.length_km(1, 2).unwrap() - 1145.0).abs() < 10.0);
        assert_eq!(t.length_km(2, 3), Some(12.5), "dist wins over coordinates");
        // `edges` instead of `links`, numeric ids.
        let t = from_node_link_json(
            r#"{"nodes": [{"id": 0}, {"id": 1}], "edges": [{"source": 0, "target": 1}]}"#,
        )
        .unwrap();
        assert_eq!(t.edges(), &[(1, 2)]);
    }

    #[test]
    fn broken_files_are_errors() {
        assert!(from_graphml("<graphml><graph><node id=\"0\"/><edge source=\"0\" target=\"9\"/></graph></graphml>").is_err());
        assert!(from_graphml("<graphml><graph></graph></graphml>").is_err());
        assert!(from_node_link_json("{\"nodes\": []}").is_err());
        assert!(from_node_link_json("not json").is_err());
    }
}
