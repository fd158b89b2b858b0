//! Where a flow reassembles the messages it receives. The flow asks its [`RecvBuffers`] for
//! a buffer of a message's full length on the message's first segment and copies each
//! segment into it once, straight from the received packet; the finished buffer is what
//! [`super::FlowEvent::MessageReceived`] carries.
//!
//! The Pony engine's buffers are chains in the receiving app's shared pool
//! (`pony_express::pool::RecvChain`), so a message goes from the NIC's packet into the app's
//! memory with that one copy and is handed over by reference. Tests and simple users take
//! [`HeapBuffers`] (messages as `Vec<u8>`).

/// A buffer being filled with one message.
pub trait MessageBuf: std::fmt::Debug {
    /// The message length (the buffer holds exactly this many bytes).
    fn len(&self) -> usize;

    /// Whether the message is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `bytes` to offset `offset`. The flow only writes within `len()`.
    fn write_at(&mut self, offset: usize, bytes: &[u8]);
}

/// A source of message buffers.
pub trait RecvBuffers: std::fmt::Debug {
    /// The buffers it hands out.
    type Buf: MessageBuf;

    /// A buffer for a `len`-byte message, or `None` when there is no room right now: the
    /// segment is then dropped unacknowledged (counted in
    /// [`super::FlowStats::buffer_drops`]) and the peer retransmits it later.
    fn alloc(&mut self, len: usize) -> Option<Self::Buf>;
}

/// Messages reassembled on the heap.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapBuffers;

impl RecvBuffers for HeapBuffers {
    type Buf = Vec<u8>;

    fn alloc(&mut self, len: usize) -> Option<Vec<u8>> {
        Some(vec![0; len])
    }
}

impl MessageBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        self[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}
