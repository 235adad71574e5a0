//! Formatting into a fixed buffer without allocation, for the signal handler.
//! **Everything here is async-signal-safe.**

/// Appends text and numbers to a fixed buffer; what does not fit is cut off.
pub(super) struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
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
    }
}
