//! The agent's one connection to the controller, shared by the agent and all of its nodes.
//!
//! Every node session travels inside it (`FromNode`/`ToNode`): a host's nodes cost the
//! controller and the agent one socket in all rather than one each, which is what lets a
//! host's node count be bounded by its TUN devices and not by twice its descriptors. A writer
//! task sends what the agent and its nodes queue, a burst in one flush; a reader task hands
//! each node its messages and the agent the rest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use proto::{AgentToController, ControllerToAgent, ControllerToNode};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tls::Stream>;

/// The sending half, and where the reader finds each node's session.
pub(crate) struct Line {
    out: mpsc::UnboundedSender<AgentToController>,
    /// Boxed: a channel allocates its slots in blocks of 32, each the message's size, and
    /// there is one channel per node.
    nodes: Mutex<HashMap<u32, mpsc::UnboundedSender<Box<ControllerToNode>>>>,
    /// Set at teardown: node tasks stopped then don't announce that their sessions closed.
    closing: AtomicBool,
}

impl Line {
    /// Starts the writer and the reader over an accepted session. Messages for the agent
    /// itself come out of the returned receiver, which closes when the controller goes away.
    pub(crate) fn start(
        sink: SplitSink<Ws, Message>,
        incoming: SplitStream<Ws>,
    ) -> (
        std::sync::Arc<Line>,
        mpsc::UnboundedReceiver<ControllerToAgent>,
        tokio::task::JoinHandle<()>,
    ) {
        let (out, out_rx) = mpsc::unbounded_channel();
        let line = std::sync::Arc::new(Line {
            out,
            nodes: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        });
        let writer = tokio::spawn(write(sink, out_rx));
        let (agent_tx, agent_rx) = mpsc::unbounded_channel();
        tokio::spawn(read(incoming, std::sync::Arc::downgrade(&line), agent_tx));
        (line, agent_rx, writer)
    }

    /// Queues a message; false when the connection is gone.
    pub(crate) fn send(&self, msg: AgentToController) -> bool {
        self.out.send(msg).is_ok()
    }

    /// Opens a node's session on the line, until the returned session is dropped (also when
    /// its task is aborted).
    pub(crate) fn open(self: &std::sync::Arc<Self>, node: u32) -> NodeLine {
        let (tx, rx) = mpsc::unbounded_channel();
        self.nodes
            .lock()
            .expect("no panics hold it")
            .insert(node, tx);
        NodeLine {
            node,
            line: self.clone(),
            incoming: rx,
        }
    }

    pub(crate) fn tearing_down(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// One node's session on the line.
pub(crate) struct NodeLine {
    node: u32,
    line: std::sync::Arc<Line>,
    incoming: mpsc::UnboundedReceiver<Box<ControllerToNode>>,
}

impl NodeLine {
    /// The controller's next message to the node; None once the controller is gone.
    pub(crate) async fn recv(&mut self) -> Option<Box<ControllerToNode>> {
        self.incoming.recv().await
    }

    /// Sends a message of the node's; false when the connection is gone.
    pub(crate) fn send(&self, msg: proto::NodeToController) -> bool {
        self.line.send(AgentToController::FromNode {
            node: self.node,
            msg,
        })
    }
}

impl Drop for NodeLine {
    /// The session ended: the controller hears of it unless the agent is tearing down.
    fn drop(&mut self) {
        let line = &self.line;
        line.nodes
            .lock()
            .expect("no panics hold it")
            .remove(&self.node);
        if !line.closing.load(Ordering::Relaxed) {
            let _ = line
                .out
                .send(AgentToController::NodeClosed { node: self.node });
        }
    }
}

async fn write(
    mut sink: SplitSink<Ws, Message>,
    mut out: mpsc::UnboundedReceiver<AgentToController>,
) {
    while let Some(mut msg) = out.recv().await {
        loop {
            let bytes = proto::encode(&msg).expect("control messages encode");
            if sink.feed(Message::Binary(bytes.into())).await.is_err() {
                return;
            }
            match out.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.close()).await;
}

async fn read(
    mut incoming: SplitStream<Ws>,
    line: std::sync::Weak<Line>,
    agent: mpsc::UnboundedSender<ControllerToAgent>,
) {
    while let Some(frame) = incoming.next().await {
        let bytes = match frame {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        match proto::decode::<ControllerToAgent>(&bytes) {
            Ok(ControllerToAgent::ToNode { node, msg }) => {
                let Some(line) = line.upgrade() else { break };
                let nodes = line.nodes.lock().expect("no panics hold it");
                if let Some(tx) = nodes.get(&node) {
                    let _ = tx.send(Box::new(msg));
                }
            }
            Ok(msg) => {
                if agent.send(msg).is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("the controller sent what this agent can't read: {e}");
                break;
            }
        }
    }
    // The controller is gone: every node session hears it (their receivers close).
    if let Some(line) = line.upgrade() {
        line.nodes.lock().expect("no panics hold it").clear();
    }
}

/// Why a WebSocket session could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The server wants a token this side does not have (HTTP 401).
    NoToken,
    Other(String),
}

/// Opens a WebSocket session to `path` at `addr` over `stream`: over TLS when `trust` is
/// given, carrying `token` as `Authorization: Bearer`.
pub(crate) async fn open_session(
    addr: std::net::SocketAddr,
    path: &str,
    stream: tokio::net::TcpStream,
    trust: Option<&tls::Trust>,
    token: Option<&str>,
) -> Result<Ws, OpenError> {
    use tokio_tungstenite::tungstenite;
    let stream = tls::Stream::open(trust, &addr.ip().to_string(), stream)
        .await
        .map_err(|e| OpenError::Other(format!("TLS: {e}")))?;
    let scheme = if trust.is_some() { "wss" } else { "ws" };
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "{scheme}://{addr}{path}"
    ))
    .map_err(|e| OpenError::Other(e.to_string()))?;
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| OpenError::Other("the token is not a header value".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(r)) if r.status() == 401 => Err(OpenError::NoToken),
        Err(e) => Err(OpenError::Other(e.to_string())),
    }
}
