//! The datagrams: a data symbol (with the object's geometry, so that a receiver can start
//! from any of them) and the receiver's feedback. Big-endian, fixed fields; anything short,
//! unknown or inconsistent is refused.

/// IPv4 and UDP headers, which pacing counts with each datagram.
pub(crate) const UDP_IP_HEADERS: u64 = 28;

const MAGIC: u16 = 0x4e4c; // "NL"
const DATA: u8 = 1;
const FEEDBACK: u8 = 2;

/// What every data datagram says of its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flow: u64,
    /// The object's bytes.
    pub total: u64,
    pub symbol_size: u16,
    /// Source symbols per block (1: no forward error correction).
    pub k: u16,
    /// When it was sent, in the sender's clock (echoed for the round-trip time).
    pub sent_ns: u64,
    /// Its number among the flow's datagrams (the receiver counts the gaps as loss).
    pub seq: u64,
}

const HEADER_LEN: usize = 2 + 1 + 8 + 8 + 2 + 2 + 8 + 8;

/// The receiver's word to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub flow: u64,
    pub echo_ns: u64,
    /// Every block below this one is decoded.
    pub complete_below: u32,
    /// The highest block a symbol of which has arrived.
    pub highest: u32,
    pub symbols_received: u64,
    /// One past the highest datagram number received.
    pub symbols_sent_seen: u64,
    /// Blocks from `complete_below` on, a bit each (least significant first): decoded.
    pub decoded: Vec<u8>,
    /// Blocks from `complete_below` on that are not decoded yet, with the symbols held.
    pub partial: Vec<(u32, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Data {
        header: Header,
        block: u32,
        /// The encoding symbol's id (its chunk's index in the block without FEC).
        esi: u32,
        data: &'a [u8],
    },
    Feedback(Feedback),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

impl<'a> Packet<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        match self {
            Packet::Data {
                header,
                block,
                esi,
                data,
            } => {
                out.push(DATA);
                out.extend_from_slice(&header.flow.to_be_bytes());
                out.extend_from_slice(&header.total.to_be_bytes());
                out.extend_from_slice(&header.symbol_size.to_be_bytes());
                out.extend_from_slice(&header.k.to_be_bytes());
                out.extend_from_slice(&header.sent_ns.to_be_bytes());
                out.extend_from_slice(&header.seq.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(&esi.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Feedback(f) => {
                out.push(FEEDBACK);
                out.extend_from_slice(&f.flow.to_be_bytes());
                out.extend_from_slice(&f.echo_ns.to_be_bytes());
                out.extend_from_slice(&f.complete_below.to_be_bytes());
                out.extend_from_slice(&f.highest.to_be_bytes());
                out.extend_from_slice(&f.symbols_received.to_be_bytes());
                out.extend_from_slice(&f.symbols_sent_seen.to_be_bytes());
                out.extend_from_slice(&(f.decoded.len() as u16).to_be_bytes());
                out.extend_from_slice(&f.decoded);
                out.extend_from_slice(&(f.partial.len() as u16).to_be_bytes());
                for &(b, have) in &f.partial {
                    out.extend_from_slice(&b.to_be_bytes());
                    out.extend_from_slice(&have.to_be_bytes());
                }
            }
        }
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, Malformed> {
        let mut r = Reader(bytes);
        if r.u16()? != MAGIC {
            return Err(Malformed);
        }
        match r.u8()? {
            DATA => {
                let header = Header {
                    flow: r.u64()?,
                    total: r.u64()?,
                    symbol_size: r.u16()?,
                    k: r.u16()?,
                    sent_ns: r.u64()?,
                    seq: r.u64()?,
                };
                let (block, esi) = (r.u32()?, r.u32()?);
                let data = r.0;
                // A symbol is never longer than the symbol size, and never empty.
                if data.is_empty() || data.len() > usize::from(header.symbol_size) {
                    return Err(Malformed);
                }
                Ok(Packet::Data {
                    header,
                    block,
                    esi,
                    data,
                })
            }
            FEEDBACK => {
                let (flow, echo_ns, complete_below, highest) =
                    (r.u64()?, r.u64()?, r.u32()?, r.u32()?);
                let (symbols_received, symbols_sent_seen) = (r.u64()?, r.u64()?);
                let n = r.u16()?;
                let decoded = r.take(usize::from(n))?.to_vec();
                let n = r.u16()?;
                let mut partial = Vec::with_capacity(usize::from(n).min(r.0.len() / 6));
                for _ in 0..n {
                    partial.push((r.u32()?, r.u16()?));
                }
                if !r.0.is_empty() {
                    return Err(Malformed);
                }
                Ok(Packet::Feedback(Feedback {
                    flow,
                    echo_ns,
                    complete_below,
                    highest,
                    symbols_received,
                    symbols_sent_seen,
                    decoded,
                    partial,
                }))
            }
            _ => Err(Malformed),
        }
    }
}

/// Bytes a data datagram carries besides its symbol.
pub const DATA_OVERHEAD: usize = HEADER_LEN + 8;

#[cfg(test)]
#[test]
fn the_overhead_is_what_encode_adds() {
    let header = Header {
        flow: 1,
        total: 1,
        symbol_size: 64,
        k: 1,
        sent_ns: 0,
        seq: 0,
    };
    let data = Packet::Data {
        header,
        block: 0,
        esi: 0,
        data: &[7],
    };
    assert_eq!(data.encode().len(), DATA_OVERHEAD + 1);
}
