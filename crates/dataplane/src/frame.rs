//! A packet as it crosses the emulated network: the TUN device's virtio-net header, then IPv4.
//!
//! Node TUN devices run with offloads (`IFF_VNET_HDR`, TSO): the kernel hands a TCP sender's
//! data over in segments of up to 64 KB with a header that says how to cut them into MTU-sized
//! packets, and takes such segments back on the receiving node. A frame keeps that header, so
//! a segment can cross any number of hops and be written whole at its destination: one read,
//! one write and a few channel hops per 64 KB instead of per 1,500 bytes. A link that shapes
//! or drops traffic sees the packets the wire would carry: it cuts a segment first
//! ([`Frame::segment`]); a link that only delays carries it whole, which is the same thing at
//! the far end.

use tun_rs::{VIRTIO_NET_HDR_LEN, VirtioNetHdr};

/// Bytes in front of the IP packet.
pub const HEADER: usize = VIRTIO_NET_HDR_LEN;
/// `VIRTIO_NET_HDR_GSO_NONE`: an ordinary packet.
const GSO_NONE: u8 = 0;
/// The flag bit that marks TCP's explicit congestion notification in `gso_type`.
const GSO_ECN: u8 = 0x80;

/// A virtio-net header followed by an IPv4 packet (or one segment's worth of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Vec<u8>);

impl Frame {
    /// What a TUN read returned (header included). None when shorter than the header.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Frame> {
        (bytes.len() >= HEADER).then_some(Frame(bytes))
    }

    /// An ordinary packet (no offload) with this IP content.
    pub fn from_ip(ip: &[u8]) -> Frame {
        let mut bytes = vec![0u8; HEADER + ip.len()];
        bytes[HEADER..].copy_from_slice(ip);
        Frame(bytes)
    }

    /// Header and packet, as a TUN device takes them and a link carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn ip(&self) -> &[u8] {
        &self.0[HEADER..]
    }

    pub fn ip_mut(&mut self) -> &mut [u8] {
        &mut self.0[HEADER..]
    }

    fn offload(&self) -> Option<VirtioNetHdr> {
        VirtioNetHdr::decode(&self.0[..HEADER]).ok()
    }

    /// The cut-up parameters (header length, segment payload) when this is a TSO segment.
    fn gso(&self) -> Option<(usize, usize)> {
        let h = self.offload()?;
        (h.gso_type & !GSO_ECN != GSO_NONE && h.gso_size > 0)
            .then(|| (usize::from(h.hdr_len), usize::from(h.gso_size)))
    }

    /// An ordinary TCP/UDP-sized packet with complete checksums, which a TUN write may merge
    /// with its flow's neighbours.
    pub fn coalescable(&self) -> bool {
        self.offload()
            .is_some_and(|h| h.flags == 0 && h.gso_type == GSO_NONE)
    }

    pub fn is_segment(&self) -> bool {
        self.gso().is_some()
    }

    /// Bytes on the wire: every packet this frame stands for, headers included.
    pub fn wire_len(&self) -> usize {
        let ip = self.ip().len();
        match self.gso() {
            Some((hdr_len, mss)) if ip > hdr_len => {
                let payload = ip - hdr_len;
                payload + payload.div_ceil(mss) * hdr_len
            }
            _ => ip,
        }
    }

    /// The packets a TSO segment stands for, each with complete checksums and no offload;
    /// any other frame as it is. A segment that can't be cut (malformed) yields nothing.
    pub fn segment(self) -> Vec<Frame> {
        let Some((hdr_len, mss)) = self.gso() else {
            return vec![self];
        };
        let Some(hdr) = self.offload() else {
            return Vec::new();
        };
        let count = self.ip().len().saturating_sub(hdr_len).div_ceil(mss).max(1);
        let mut out = vec![vec![0u8; HEADER + hdr_len + mss]; count];
        let mut sizes = vec![0usize; count];
        let mut input = self.0;
        match tun_rs::gso_split(
            &mut input[HEADER..],
            hdr,
            &mut out,
            &mut sizes,
            HEADER,
            false,
        ) {
            Ok(n) => out
                .into_iter()
                .zip(sizes)
                .take(n)
                .map(|(mut bytes, size)| {
                    bytes.truncate(HEADER + size);
                    Frame(bytes)
                })
                .collect(),
            Err(e) => {
                tracing::debug!("dropping a segment that can't be cut: {e}");
                Vec::new()
            }
        }
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Frame {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// A TUN write that coalesces packets grows the first of a run in place.
impl tun_rs::ExpandBuffer for Frame {
    fn buf_capacity(&self) -> usize {
        self.0.capacity()
    }

    fn buf_resize(&mut self, new_len: usize, value: u8) {
        self.0.resize(new_len, value);
    }

    fn buf_extend_from_slice(&mut self, src: &[u8]) {
        self.0.extend_from_slice(src);
    }
}

impl linkem::Packet for Frame {
    fn len_bytes(&self) -> usize {
        self.wire_len()
    }

    /// Its 5-tuple's hash, and its DSCP as its weight.
    fn flow(&self) -> (u64, u32) {
        crate::packet::Ipv4Packet::new_checked(self.ip())
            .map_or((0, 1), |p| (p.flow_hash(), p.weight()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TSO segment as the kernel hands it over: IPv4 + TCP headers (40 bytes), `payload`
    /// bytes, partial checksum, cut at `mss`.
    fn tso(payload: usize, mss: u16) -> Frame {
        let total = 40 + payload;
        let mut ip = vec![0u8; total];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total.min(65535) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        ip[32] = 5 << 4; // TCP data offset: 20 bytes
        ip[33] = 0x18; // PSH, ACK
        for (i, b) in ip[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut frame = Frame::from_ip(&ip);
        VirtioNetHdr {
            flags: 1, // needs checksum
            gso_type: 1,
            hdr_len: 40,
            gso_size: mss,
            csum_start: 20,
            csum_offset: 16,
        }
        .encode(&mut frame.0[..HEADER])
        .unwrap();
        frame
    }

    #[test]
    fn an_ordinary_packet_is_its_own_length_and_stays_whole() {
        let f = Frame::from_ip(&[0x45; 100]);
        assert!(!f.is_segment());
        assert_eq!(f.wire_len(), 100);
        assert_eq!(f.clone().segment(), vec![f]);
    }

    #[test]
    fn a_segment_counts_every_packet_it_stands_for() {
        // 4,000 bytes at 1,400 per packet: 3 packets, each with its own 40 header bytes.
        let f = tso(4000, 1400);
        assert!(f.is_segment());
        assert_eq!(f.wire_len(), 4000 + 3 * 40);
    }

    #[test]
    fn cutting_a_segment_gives_the_packets_with_their_data_in_order() {
        let f = tso(4000, 1400);
        let wire = f.wire_len();
        let packets = f.segment();
        assert_eq!(packets.len(), 3);
        assert_eq!(packets.iter().map(Frame::wire_len).sum::<usize>(), wire);
        let mut data = Vec::new();
        let mut seq = Vec::new();
        for p in &packets {
            assert!(!p.is_segment());
            let ip = p.ip();
            assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
            seq.push(u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]));
            data.extend_from_slice(&ip[40..]);
        }
        assert_eq!(seq, vec![0, 1400, 2800]);
        assert_eq!(data.len(), 4000);
        assert!(data.iter().enumerate().all(|(i, b)| *b == i as u8));
    }
}
