//! Formatting into a fixed buffer without allocation, for the signal handler.
//! **Everything here is async-signal-safe.**

/// Appends text and numbers to a fixed buffer; what does not fit is cut off.
pub(super) struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
    /// Something did not fit.
    cut: bool,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0, cut: false }
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self.cut |= n < bytes.len();
        self
    }

    /// Appends `bytes` only if all of them fit.
    pub fn whole(&mut self, bytes: &[u8]) -> &mut Self {
        if bytes.len() <= self.buf.len() - self.len {
            self.bytes(bytes);
        } else {
            self.cut = true;
        }
        self
    }

    /// Whether anything written so far was cut off.
    pub fn cut_off(&self) -> bool {
        self.cut
    }

    /// Appends `s` as a JSON string, quoted and escaped (`"`, `\\` and control characters).
    pub fn json_str(&mut self, s: &str) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.str("\"");
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0..=0x1f | 0x7f => None,
                _ => continue,
            };
            self.bytes(&bytes[start..i]);
            match escape {
                Some(e) => self.bytes(e),
                None => self.str("\\u00").bytes(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
            };
            start = i + 1;
        }
        self.bytes(&bytes[start..]).str("\"")
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        if value < 0 {
            self.str("-");
        }
        let mut digits = [0u8; 20];
        let mut v = value.unsigned_abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    pub fn hex(&mut self, value: u64) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        let mut v = value;
        loop {
            i -= 1;
            digits[i] = HEX[(v & 15) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.str("0x").bytes(&digits[i..])
    }

    /// Appends bytes as lowercase hex digits, two per byte, without a prefix.
    pub fn hex_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in bytes {
            self.bytes(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        self
    }

    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_and_cuts_what_does_not_fit() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.str("a ").int(-42).str(" ").int(0).str(" ").hex(0).str(" ").hex(0xdead_beef).str(" ").int(i64::MIN);
        assert_eq!(std::str::from_utf8(w.written()).unwrap(), "a -42 0 0x0 0xdeadbeef -9223372036854775808");
        let mut small = [0u8; 4];
        let mut w = Writer::new(&mut small);
        w.str("hello");
        assert_eq!(w.written(), b"hell");
        assert!(w.cut_off());
    }

    #[test]
    fn json_strings_are_escaped_as_serde_reads_them() {
        for text in
            ["plain", "", "quote \" back \\ slash", "lines\n\r\ttab", "ctl \u{1}\u{1f}\u{7f}", "é ü 日本 🦀"]
        {
            let mut buf = [0u8; 256];
            let mut w = Writer::new(&mut buf);
            w.json_str(text);
            let back: String = serde_json::from_slice(w.written()).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn whole_appends_all_or_nothing() {
        let mut buf = [0u8; 8];
        let mut w = Writer::new(&mut buf);
        w.whole(b"abcde").whole(b"fghij");
        assert_eq!(w.written(), b"abcde");
        assert!(w.cut_off());
    }
}
