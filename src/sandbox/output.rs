//! Bounded capture of a command's output: the head and the tail are kept, the middle dropped.

/// Bytes kept from the start of the output.
pub const HEAD_BYTES: usize = 16 * 1024;
/// Bytes kept from the end of the output.
pub const TAIL_BYTES: usize = 48 * 1024;

#[derive(Debug, Default)]
pub struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl Capture {
    pub fn push(&mut self, mut data: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let n = (HEAD_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        self.tail.extend(data);
        let excess = self.tail.len().saturating_sub(TAIL_BYTES);
        if excess > 0 {
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// The text and whether something was dropped.
    pub fn finish(self) -> (String, bool) {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        let truncated = self.dropped > 0;
        if truncated {
            out.push_str(&format!(
                "\n[... {} bytes of output omitted ...]\n",
                self.dropped
            ));
        }
        let tail: Vec<u8> = self.tail.into_iter().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        (out, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail() {
        let mut c = Capture::default();
        c.push(&vec![b'a'; HEAD_BYTES]);
        c.push(&[b'b'; 10]);
        c.push(&vec![b'c'; TAIL_BYTES]);
        let (s, t) = c.finish();
        assert!(t);
        assert!(s.starts_with('a') && s.ends_with('c'));
        assert!(s.contains("10 bytes of output omitted"));
    }
}
