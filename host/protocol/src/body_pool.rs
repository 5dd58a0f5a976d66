//! Reused, 64-byte-aligned buffers for the bodies of received Flight messages.
//!
//! A PUT or an exchange receives one multi-megabyte body per record batch. A
//! fresh allocation of that size comes from the kernel a page at a time (glibc
//! maps it on malloc and unmaps it on free), and those page faults cost 7% of a
//! PUT's server CPU. A body's buffer comes back here when the last `Bytes` of it
//! is dropped, and the next body of about its size reuses it, its pages already
//! mapped. The pool keeps at most [`POOL_BYTES`] of free buffers in the process
//! and frees the rest; bodies below [`MIN_POOLED_BYTES`] are left to malloc,
//! which reuses small blocks itself.

use bytes::Bytes;
use std::mem::MaybeUninit;
use std::sync::Mutex;

/// Free buffers kept for reuse across the process, in bytes of capacity.
pub const POOL_BYTES: usize = 64 << 20;

/// Smallest body whose buffer is pooled.
pub const MIN_POOLED_BYTES: usize = 256 << 10;

/// Pooled capacities are multiples of this, so bodies of similar sizes share
/// buffers; a body takes a buffer at most a quarter and one granule larger.
const GRANULE: usize = 64 << 10;

/// The process's pool, which [`BodyBuffer::new`] takes from.
pub static BODIES: BodyPool = BodyPool::new(POOL_BYTES);

/// 64 bytes, 64-byte aligned: what a buffer is made of, so that Arrow can use
/// the body's buffers where they lie.
#[repr(C, align(64))]
struct Line([u8; 64]);

const LINE: usize = std::mem::size_of::<Line>();

/// Room for `len` bytes, not initialised: a body declared but not yet sent costs
/// address space, not memory.
fn lines(len: usize) -> Vec<MaybeUninit<Line>> {
    let mut lines = Vec::with_capacity(len.div_ceil(LINE));
    lines.resize_with(len.div_ceil(LINE), MaybeUninit::uninit);
    lines
}

/// Free buffers, at most `limit` bytes of them.
pub struct BodyPool {
    limit: usize,
    free: Mutex<Free>,
}

struct Free {
    buffers: Vec<Vec<MaybeUninit<Line>>>,
    bytes: usize,
}

impl BodyPool {
    /// A pool keeping at most `limit` bytes of free buffers.
    pub const fn new(limit: usize) -> Self {
        Self {
            limit,
            free: Mutex::new(Free {
                buffers: Vec::new(),
                bytes: 0,
            }),
        }
    }

    /// Bytes of free buffers held now.
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic while holding the lock leaves the list consistent.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The smallest free buffer that fits `len` bytes without wasting more than
    /// a quarter and a granule, else a new one.
    fn take(&self, len: usize) -> Vec<MaybeUninit<Line>> {
        let most = len + len / 4 + GRANULE;
        {
            let mut free = self.lock();
            let fitting = free
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| (len..=most).contains(&(b.len() * LINE)))
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            if let Some(i) = fitting {
                let buffer = free.buffers.swap_remove(i);
                free.bytes -= buffer.len() * LINE;
                return buffer;
            }
        }
        lines(len.next_multiple_of(GRANULE))
    }

    fn give_back(&self, buffer: Vec<MaybeUninit<Line>>) {
        let bytes = buffer.len() * LINE;
        let mut free = self.lock();
        if free.bytes + bytes <= self.limit {
            free.bytes += bytes;
            free.buffers.push(buffer);
        }
    }
}

/// A message body being received: filled piece by piece, then frozen.
pub struct BodyBuffer {
    lines: Vec<MaybeUninit<Line>>,
    filled: usize,
    len: usize,
    pool: Option<&'static BodyPool>,
}

impl BodyBuffer {
    /// A buffer for a body of `len` bytes, from [`BODIES`] when that large.
    pub fn new(len: usize) -> Self {
        Self::from_pool(len, &BODIES)
    }

    /// A buffer for a body of `len` bytes, from `pool` when that large.
    pub fn from_pool(len: usize, pool: &'static BodyPool) -> Self {
        let pool = (len >= MIN_POOLED_BYTES).then_some(pool);
        Self {
            lines: pool.map_or_else(|| lines(len), |pool| pool.take(len)),
            filled: 0,
            len,
            pool,
        }
    }

    /// Bytes still to come.
    pub fn missing(&self) -> usize {
        self.len - self.filled
    }

    /// Appends the first [`BodyBuffer::missing`] bytes of `bytes` at most, and
    /// returns how many it took.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.missing());
        // SAFETY: `filled + n <= len`, which the lines hold; the source is
        // another allocation.
        unsafe {
            let at = self.lines.as_mut_ptr().cast::<u8>().add(self.filled);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, n);
        }
        self.filled += n;
        n
    }

    /// The body (what was filled of it); its buffer goes back to the pool when
    /// the last `Bytes` of it is dropped.
    pub fn freeze(self) -> Bytes {
        debug_assert_eq!(self.missing(), 0, "frozen before it was filled");
        Bytes::from_owner(Filled {
            lines: self.lines,
            len: self.filled,
            pool: self.pool,
        })
    }
}

/// A received body, owned by the `Bytes` that share it.
struct Filled {
    lines: Vec<MaybeUninit<Line>>,
    len: usize,
    pool: Option<&'static BodyPool>,
}

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were filled (`BodyBuffer::fill`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Filled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool {
            pool.give_back(std::mem::take(&mut self.lines));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(limit: usize) -> &'static BodyPool {
        Box::leak(Box::new(BodyPool::new(limit)))
    }

    fn body(len: usize, pool: &'static BodyPool) -> Bytes {
        let mut buffer = BodyBuffer::from_pool(len, pool);
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        for piece in bytes.chunks(100_000) {
            assert_eq!(buffer.fill(piece), piece.len());
        }
        assert_eq!(buffer.fill(b"more"), 0, "never past its length");
        let frozen = buffer.freeze();
        assert_eq!(&frozen[..], &bytes[..]);
        frozen
    }

    #[test]
    fn a_freed_body_s_buffer_serves_the_next_body_of_about_its_size() {
        let pool = pool(POOL_BYTES);
        let first = body(3 << 20, pool);
        let address = first.as_ptr();
        assert_eq!(address as usize % 64, 0, "64-byte aligned");
        let shared = first.slice(10..20);
        drop(first);
        assert_eq!(pool.held_bytes(), 0, "still in use by a slice");
        drop(shared);
        assert_eq!(pool.held_bytes(), (3 << 20));
        let second = body((3 << 20) - 1000, pool);
        assert_eq!(second.as_ptr(), address, "reused");
        assert_eq!(pool.held_bytes(), 0);
    }

    #[test]
    fn a_small_body_does_not_take_a_much_larger_buffer() {
        let pool = pool(POOL_BYTES);
        drop(body(8 << 20, pool));
        let small = body(1 << 20, pool);
        assert_eq!(pool.held_bytes(), 8 << 20, "the large one stays free");
        drop(small);
        assert_eq!(pool.held_bytes(), 9 << 20);
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit_and_small_bodies_are_not_pooled() {
        let pool = pool(10 << 20);
        let held: Vec<_> = (0..4).map(|_| body(3 << 20, pool)).collect();
        drop(held);
        assert_eq!(pool.held_bytes(), 9 << 20, "three of four fit in 10 MiB");
        drop(body(MIN_POOLED_BYTES - 1, pool));
        assert_eq!(pool.held_bytes(), 9 << 20);
        assert!(body(0, pool).is_empty());
    }

    #[test]
    fn bodies_freed_on_other_threads_come_back() {
        let pool = pool(POOL_BYTES);
        let bodies: Vec<_> = (0..8).map(|_| body(1 << 20, pool)).collect();
        std::thread::scope(|s| {
            for b in bodies {
                s.spawn(move || drop(b));
            }
        });
        assert_eq!(pool.held_bytes(), 8 << 20);
    }
}
