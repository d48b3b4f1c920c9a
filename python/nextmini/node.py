"""The seeds' node-side API, for a Python program that runs inside a node
(`nextmini exec 3 -- python3 app.py`): messages to and from other nodes over ordinary TCP on
the nodes' overlay addresses, so they cross the emulated links like any traffic, and a wait
for the topology to be ready.

    from nextmini import node
    node.wait_for_topology_ready()
    inbox = node.register_receiver_from_node(1)
    node.send_to_node(1, b"hello")
    print(inbox.recv(timeout_ms=5000))

Multicast groups (created with `nextmini group create`, `Experiment.group()` or `[[groups]]`)
are joined with ordinary sockets; `join_group` and `group_sender` set them up:

    rx = node.join_group("239.255.0.1", 5000)   # this node is a member while rx is open
    tx = node.group_sender()                    # in the group's source node
    tx.sendto(b"to all", ("239.255.0.1", 5000))

`nextmini exec` tells the program its node ($NEXTMINI_NODE_ID), the overlay
($NEXTMINI_OVERLAY_BASE) and the controller ($NEXTMINI_API).
"""

import os
import queue
import socket
import struct
import threading
import time
from typing import Dict, Optional, Tuple

from ._http import Api
from .errors import NextminiError

#: Where nodes take messages, on their overlay address.
MESSAGE_PORT = 47100
_HEADER = struct.Struct("!4sIQ")  # magic, source node, length
_MAGIC = b"NMSG"


def node_id() -> int:
    """This node's id."""
    value = os.environ.get("NEXTMINI_NODE_ID")
    if not value:
        raise NextminiError("not inside a node: run this with `nextmini exec <node> -- python3 …`")
    return int(value)


def address(node: int) -> str:
    """A node's overlay address."""
    base = os.environ.get("NEXTMINI_OVERLAY_BASE", "10.0.0.0")
    value = struct.unpack("!I", socket.inet_aton(base))[0] + node
    return socket.inet_ntoa(struct.pack("!I", value))


def send_to_node(dst: int, data: bytes, port: int = MESSAGE_PORT, timeout: float = 30.0) -> None:
    """Sends one message to node `dst` (which registered a receiver for this node)."""
    payload = bytes(data)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address(dst), port), timeout=timeout) as s:
                s.sendall(_HEADER.pack(_MAGIC, node_id(), len(payload)) + payload)
                s.shutdown(socket.SHUT_WR)
                s.recv(1)  # the receiver closes once it has the whole message
                return
        except ConnectionRefusedError:
            # The receiver may not listen yet.
            if time.monotonic() > deadline:
                raise NextminiError(f"node {dst} takes no messages on port {port}") from None
            time.sleep(0.05)


class Receiver:
    """Messages from one node, in order of arrival."""

    def __init__(self, src: int, inbox: "queue.Queue[bytes]"):
        self.src = src
        self._inbox = inbox

    def recv(self, timeout_ms: Optional[int] = None) -> Optional[bytes]:
        """The next message, or None after `timeout_ms` (wait forever without one)."""
        try:
            return self._inbox.get(timeout=None if timeout_ms is None else timeout_ms / 1000)
        except queue.Empty:
            return None


class _Listener:
    """One listening socket per port; messages sorted by their sender."""

    def __init__(self, port: int):
        self.inboxes: Dict[int, "queue.Queue[bytes]"] = {}
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address(node_id()), port))
        self.sock.listen(128)
        threading.Thread(target=self._accept, daemon=True).start()

    def inbox(self, src: int) -> "queue.Queue[bytes]":
        with self.lock:
            return self.inboxes.setdefault(src, queue.Queue())

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            head = _read_exactly(conn, _HEADER.size)
            if head is None:
                return
            magic, src, length = _HEADER.unpack(head)
            if magic != _MAGIC:
                return
            data = _read_exactly(conn, length)
            if data is not None:
                self.inbox(src).put(data)


def _read_exactly(conn: socket.socket, n: int) -> Optional[bytes]:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


_listeners: Dict[int, _Listener] = {}
_listeners_lock = threading.Lock()


def register_receiver_from_node(src: int, port: int = MESSAGE_PORT) -> Receiver:
    """A receiver for messages from node `src`; this node takes messages from then on."""
    with _listeners_lock:
        listener = _listeners.get(port) or _listeners.setdefault(port, _Listener(port))
    return Receiver(src, listener.inbox(src))


def join_group(group: str, port: int) -> socket.socket:
    """A UDP socket bound to `group`:`port` that takes the group's datagrams. It joins the group
    on this node's TUN device, whose kernel says so (IGMP), which makes the node a member;
    closing the socket leaves."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((group, port))
    mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(address(node_id())))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    return s


def group_sender(ttl: int = 32) -> socket.socket:
    """A UDP socket for sending to groups (from the group's source node). `ttl` is the
    multicast TTL: each hop takes one, as routers do, and the kernel's default of 1 would end
    at the first."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    return s


def wait_for_topology_ready(timeout_ms: Optional[int] = None) -> None:
    """Returns once every node of the experiment is ready (at once if it is)."""
    base = os.environ.get("NEXTMINI_API")
    if not base:
        raise NextminiError("no controller known: run this with `nextmini exec <node> -- python3 …`")
    api = Api(base, timeout=5.0)
    deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
    while True:
        if api.get("/api/status")["phase"] == "ready":
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the topology was not ready within {timeout_ms} ms")
        time.sleep(0.05)


def network_info() -> Tuple[int, str]:
    """This node's id and overlay address."""
    return node_id(), address(node_id())
