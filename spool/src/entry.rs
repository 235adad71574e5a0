//! One entry on disk: its file name and its framed bytes (see FORMAT.md, "Entry names" and
//! "Entry file layout").

use std::fmt;

use crate::id::{EntryId, ID_TEXT_LEN};
use crate::kind::Kind;

/// Magic bytes at the start of every entry file.
pub const MAGIC: [u8; 4] = *b"LWSP";
/// The entry format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the version 1 header; the body starts here.
pub const HEADER_LEN: usize = 48;
/// Header flag: the body is a raw signal report, to be symbolized before upload.
pub const FLAG_RAW_SIGNAL: u16 = 1;
/// Header flag: the body is a crash report (JSON) whose frames are addresses still to be symbolized
/// (a panic's raw capture, client-lib's REPORT.md).
pub const FLAG_UNSYMBOLIZED: u16 = 2;
/// Header flag (format 1.2): the body is one JSON value, as its writer's JSON serializer made it
/// (client-lib's writers set it). The checksum vouches that it comes back unchanged, so an uploader
/// may send it without parsing it again; one without the flag is checked before it is sent.
pub const FLAG_JSON: u16 = 4;
/// The longest entry file name: `9-<26>-<20 digits>.crash`.
pub const NAME_MAX: usize = 1 + 1 + ID_TEXT_LEN + 1 + 20 + 1 + 5;
const CRC_OFFSET: usize = 44;

/// An entry's file name, which carries its claim order, size and age (`<priority>-<id>-<size>.<kind>`).
///
/// Names order by priority, then id: the order in which entries are claimed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct EntryName {
    priority: u8,
    id: EntryId,
    size: u64,
    kind: Kind,
}

impl EntryName {
    /// The name of an entry of `kind` with this id and total file size.
    pub fn new(kind: Kind, id: EntryId, size: u64) -> Self {
        Self { priority: kind.priority(), id, size, kind }
    }

    /// The entry's id.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The entry's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The entry file's total size in bytes (header and body).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The priority (from the kind).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Writes the name into `out` and returns its length.
    ///
    /// Async-signal-safe: arithmetic on the given buffer only.
    pub fn write_to(&self, out: &mut [u8; NAME_MAX]) -> usize {
        let mut pos = 0;
        let mut put = |bytes: &[u8]| {
            out[pos..pos + bytes.len()].copy_from_slice(bytes);
            pos += bytes.len();
        };
        put(&[b'0' + self.priority]);
        put(b"-");
        let mut id = [0u8; ID_TEXT_LEN];
        self.id.encode(&mut id);
        put(&id);
        put(b"-");
        let mut digits = [0u8; 20];
        let n = format_decimal(self.size, &mut digits);
        put(&digits[20 - n..]);
        put(b".");
        put(self.kind.as_str().as_bytes());
        pos
    }

    /// Parses a file name; `None` if it is not an entry name (a foreign file).
    pub fn parse(name: &str) -> Option<Self> {
        let (stem, kind) = name.rsplit_once('.')?;
        let kind: Kind = kind.parse().ok()?;
        let mut parts = stem.splitn(3, '-');
        let priority = parts.next()?;
        let id = parts.next()?;
        let size = parts.next()?;
        if priority.len() != 1 || priority.as_bytes()[0].wrapping_sub(b'0') != kind.priority() {
            return None;
        }
        if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id = EntryId::parse(id).ok()?;
        let size = size.parse().ok()?;
        let parsed = Self::new(kind, id, size);
        // Only the canonical spelling (upper case, no leading zeros) is a name.
        (parsed.to_string() == name).then_some(parsed)
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; NAME_MAX];
        let n = self.write_to(&mut buf);
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

/// Writes `value` right-aligned into `out` and returns how many digits it used.
///
/// Async-signal-safe.
pub(crate) fn format_decimal(mut value: u64, out: &mut [u8; 20]) -> usize {
    let mut n = 0;
    loop {
        out[19 - n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            return n;
        }
    }
}

/// The decoded header of an entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// The entry's kind.
    pub kind: Kind,
    /// Header flags, such as [`FLAG_RAW_SIGNAL`].
    pub flags: u16,
    /// The entry's id.
    pub id: EntryId,
    /// When the entry was written, in milliseconds since the Unix epoch.
    pub created_millis: u64,
    /// Length of the body in bytes.
    pub body_len: u64,
}

impl Header {
    /// The header bytes for `body_parts`, checksum included.
    ///
    /// Async-signal-safe: no allocation (CRC32C is computed in place).
    pub fn encode(&self, body_parts: &[&[u8]]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[8] = self.kind.code();
        h[9] = self.kind.priority();
        h[10..12].copy_from_slice(&self.flags.to_le_bytes());
        h[12..28].copy_from_slice(&self.id.as_u128().to_be_bytes());
        h[28..36].copy_from_slice(&self.created_millis.to_le_bytes());
        h[36..44].copy_from_slice(&self.body_len.to_le_bytes());
        let mut crc = crc32c::crc32c(&h[..CRC_OFFSET]);
        for part in body_parts {
            crc = crc32c::crc32c_append(crc, part);
        }
        h[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// Why the bytes of a file are not a good entry. Shown in quarantine reasons.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptReason {
    /// The file is shorter than a header.
    #[error("truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated {
        /// The file's length.
        len: u64,
    },
    /// The file does not start with the magic bytes.
    #[error("bad magic {found:02x?}, expected LWSP")]
    Magic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The entry was written in a format version this reader does not know.
    #[error("unknown entry format version {0} (this reader knows {FORMAT_VERSION})")]
    Version(u16),
    /// The header length field is not the version's.
    #[error("header length {0}, expected {HEADER_LEN}")]
    HeaderLen(u16),
    /// Unknown kind code.
    #[error("unknown kind code {0}")]
    Kind(u8),
    /// Priority does not match the kind.
    #[error("priority {priority} does not match kind {kind}")]
    Priority {
        /// The kind in the header.
        kind: Kind,
        /// The priority in the header.
        priority: u8,
    },
    /// The header does not agree with the file name.
    #[error("header ({kind} {id}) does not match the file name {name}")]
    NameMismatch {
        /// The kind in the header.
        kind: Kind,
        /// The id in the header.
        id: EntryId,
        /// The file name.
        name: String,
    },
    /// Header length plus body length is not the file length.
    #[error("length mismatch: header says {expected} bytes, file has {actual}")]
    Length {
        /// What the header says the file length is.
        expected: u64,
        /// The file's actual length.
        actual: u64,
    },
    /// The checksum does not match.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// The stored CRC32C.
        stored: u32,
        /// The CRC32C of what is in the file.
        computed: u32,
    },
    /// The file name is not an entry name.
    #[error("file name is not an entry name (foreign file)")]
    ForeignName,
    /// The writer died before the entry was complete.
    #[error("partial write by a dead session")]
    PartialWrite,
}

/// Checks an entry's bytes in the order FORMAT.md gives and returns its header and body.
///
/// `name`, when given, must agree with the header. Never panics, whatever the bytes.
pub fn decode<'a>(bytes: &'a [u8], name: Option<&EntryName>) -> Result<(Header, &'a [u8]), CorruptReason> {
    let len = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        return Err(CorruptReason::Truncated { len });
    }
    let field = |at: usize, n: usize| &bytes[at..at + n];
    let u16_at = |at| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u64_at = |at| {
        let mut b = [0u8; 8];
        b.copy_from_slice(field(at, 8));
        u64::from_le_bytes(b)
    };
    if field(0, 4) != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(field(0, 4));
        return Err(CorruptReason::Magic { found });
    }
    let version = u16_at(4);
    if version != FORMAT_VERSION {
        return Err(CorruptReason::Version(version));
    }
    let header_len = u16_at(6);
    if usize::from(header_len) != HEADER_LEN {
        return Err(CorruptReason::HeaderLen(header_len));
    }
    let kind = Kind::from_code(bytes[8]).ok_or(CorruptReason::Kind(bytes[8]))?;
    if bytes[9] != kind.priority() {
        return Err(CorruptReason::Priority { kind, priority: bytes[9] });
    }
    let flags = u16_at(10);
    let mut id = [0u8; 16];
    id.copy_from_slice(field(12, 16));
    let id = EntryId::from_u128(u128::from_be_bytes(id));
    if let Some(name) = name
        && (name.kind() != kind || name.id() != id)
    {
        return Err(CorruptReason::NameMismatch { kind, id, name: name.to_string() });
    }
    let created_millis = u64_at(28);
    let body_len = u64_at(36);
    let expected = body_len.saturating_add(HEADER_LEN as u64);
    if expected != len {
        return Err(CorruptReason::Length { expected, actual: len });
    }
    // The size in the name is checked only once the header and the file agree with each other, so
    // that a truncated entry (whose name still has the size it was written with) is reported as
    // truncated, not as a name mismatch.
    if let Some(name) = name
        && name.size() != len
    {
        return Err(CorruptReason::NameMismatch { kind, id, name: name.to_string() });
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(field(CRC_OFFSET, 4));
    let stored = u32::from_le_bytes(stored);
    let body = &bytes[HEADER_LEN..];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[..CRC_OFFSET]), body);
    if stored != computed {
        return Err(CorruptReason::Checksum { stored, computed });
    }
    Ok((Header { kind, flags, id, created_millis, body_len }, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(kind: Kind, body: &[u8]) -> (EntryName, Vec<u8>) {
        let id = EntryId::generate();
        let header = Header { kind, flags: 0, id, created_millis: 7, body_len: body.len() as u64 };
        let mut bytes = header.encode(&[body]).to_vec();
        bytes.extend_from_slice(body);
        (EntryName::new(kind, id, bytes.len() as u64), bytes)
    }

    #[test]
    fn name_round_trips_and_sorts_by_priority_then_time() {
        let early_log = EntryName::new(Kind::Log, EntryId::from_parts(1, 0), 10);
        let late_crash = EntryName::new(Kind::Crash, EntryId::from_parts(9, 0), 99_999);
        assert!(late_crash < early_log);
        assert!(late_crash.to_string() < early_log.to_string());
        for name in [early_log, late_crash] {
            assert_eq!(EntryName::parse(&name.to_string()), Some(name));
        }
    }

    #[test]
    fn foreign_names_are_not_entry_names() {
        let good = EntryName::new(Kind::Event, EntryId::from_parts(3, 0xABCDEF), 48).to_string();
        for bad in [
            "notes.txt",
            "",
            ".hidden",
            &good.replace(".event", ".crash"),
            &good.replacen('1', "0", 1),
            &good.replace("-48.", "-048."),
            &good.replace("-48.", "-."),
            &good.to_lowercase(),
        ] {
            assert_eq!(EntryName::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn good_entry_decodes() {
        let (name, bytes) = entry(Kind::Crash, b"hello");
        let (header, body) = decode(&bytes, Some(&name)).expect("good entry");
        assert_eq!(body, b"hello");
        assert_eq!(header.kind, Kind::Crash);
        assert_eq!(header.id, name.id());
    }

    #[test]
    fn each_kind_of_damage_has_its_reason() {
        let (name, bytes) = entry(Kind::Log, b"some body bytes");
        assert!(matches!(decode(&bytes[..20], None), Err(CorruptReason::Truncated { len: 20 })));
        assert!(matches!(decode(&bytes[..bytes.len() - 1], None), Err(CorruptReason::Length { .. })));
        assert!(
            matches!(decode(&bytes[..bytes.len() - 1], Some(&name)), Err(CorruptReason::Length { .. })),
            "a truncated entry under its own name is a length mismatch"
        );
        let renamed = EntryName::new(Kind::Log, name.id(), name.size() + 1);
        assert!(matches!(decode(&bytes, Some(&renamed)), Err(CorruptReason::NameMismatch { .. })));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        assert!(matches!(decode(&flipped, None), Err(CorruptReason::Checksum { .. })));
        let mut version = bytes.clone();
        version[4] = 9;
        assert_eq!(decode(&version, None), Err(CorruptReason::Version(9)));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(matches!(decode(&magic, None), Err(CorruptReason::Magic { .. })));
        let other = EntryName::new(Kind::Log, EntryId::generate(), name.size());
        assert!(matches!(decode(&bytes, Some(&other)), Err(CorruptReason::NameMismatch { .. })));
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, None);
        }

        #[test]
        fn any_single_bit_flip_is_detected(body in proptest::collection::vec(any::<u8>(), 0..300), bit: usize) {
            let (_, mut bytes) = entry(Kind::Event, &body);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bytes, None).is_err());
        }
    }
}
