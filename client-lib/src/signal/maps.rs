//! The module list at crash time: the executable file mappings of `/proc/self/maps`, read in the
//! handler with `open`/`read`/`close` into preallocated memory, so that a library loaded after init
//! (`dlopen`) is known too. A module known at init keeps the load bias and build id found then; a new
//! one's are read from its ELF headers and notes in memory ([`Memory`], never a plain load that could
//! fault), without `dl_iterate_phdr` (which takes the loader's lock). **Everything here is
//! async-signal-safe.**

use super::memory::{Denied, Memory};
use super::modules::{Module, gnu_build_id_desc};
use super::write::Writer;

/// How many bytes of `/proc/self/maps` are read at most (the buffer's size).
pub(super) const MAPS_MAX: usize = 512 * 1024;

/// One line of `/proc/self/maps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    executable: bool,
    offset: usize,
    path: &'a [u8],
}

fn hex_field(field: &[u8]) -> Option<usize> {
    if field.is_empty() || field.len() > 16 {
        return None;
    }
    let mut value = 0usize;
    for &b in field {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | usize::from(digit);
    }
    Some(value)
}

/// Parses `start-end perms offset dev inode path`.
fn parse_line(line: &[u8]) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = hex_field(fields.next()?)?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or_default();
    let first_non_space = path.iter().position(|&b| b != b' ').unwrap_or(path.len());
    let path = &path[first_non_space..];
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = hex_field(&range[..dash])?;
    let end = hex_field(&range[dash + 1..])?;
    Some(Mapping { start, end, executable: perms.get(2) == Some(&b'x'), offset, path })
}

/// The permissions (`rwxp`) of the mapping that holds `addr` in the maps text, if a whole line has it.
pub(super) fn permissions_at(maps: &[u8], addr: usize) -> Option<&[u8]> {
    let complete = &maps[..maps.iter().rposition(|&b| b == b'\n').map_or(0, |nl| nl + 1)];
    complete.split(|&b| b == b'\n').find_map(|line| {
        let m = parse_line(line)?;
        (m.start <= addr && addr < m.end).then(|| line.split(|&b| b == b' ').nth(1).unwrap_or_default())
    })
}

/// Reads `/proc/self/maps` into `buf`. Returns the length read and whether it was cut short (the
/// buffer was full), or the errno of `open`/`read`.
pub(super) fn read_maps(buf: &mut [u8]) -> Result<(usize, bool), i32> {
    // SAFETY: open with a NUL-terminated path; async-signal-safe.
    let fd = unsafe { libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        // SAFETY: errno of this thread.
        return Err(unsafe { *libc::__errno_location() });
    }
    let mut len = 0;
    let result = loop {
        if len == buf.len() {
            break Ok((len, true));
        }
        // SAFETY: reads into the unused rest of `buf`.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        match n {
            0 => break Ok((len, false)),
            n if n > 0 => len += n as usize,
            _ => {
                // SAFETY: errno of this thread.
                let e = unsafe { *libc::__errno_location() };
                if e != libc::EINTR {
                    break Err(e);
                }
            }
        }
    };
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    result
}

/// A module's load bias and, when it has one, its build id's bytes.
type ElfInfo<'s> = (usize, Option<&'s [u8]>);

/// Load bias and build id of the ELF module whose first byte (file offset 0) is mapped at `base`,
/// read from its headers in memory. `None` when they do not read as a 64-bit ELF file.
fn elf_info<'s>(
    memory: &mut Memory,
    base: usize,
    scratch: &'s mut [u8; 4096],
) -> Result<Option<ElfInfo<'s>>, Denied> {
    let mut header = [0u8; 64];
    if memory.read(base, &mut header)? < 64 || header[..4] != *b"\x7fELF" || header[4] != 2 {
        return Ok(None);
    }
    let u16_at =
        |b: &[u8], at: usize| b.get(at..at + 2).map(|s| usize::from(u16::from_ne_bytes([s[0], s[1]])));
    let u32_at =
        |b: &[u8], at: usize| b.get(at..at + 4).map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
    let u64_at = |b: &[u8], at: usize| {
        b.get(at..at + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_ne_bytes)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(&header, 0x20), u16_at(&header, 0x36), u16_at(&header, 0x38))
    else {
        return Ok(None);
    };
    let size = phentsize * phnum;
    if phentsize < 56 || size > 2048 {
        return Ok(None);
    }
    let (headers, notes) = scratch.split_at_mut(2048);
    let Some(at) = usize::try_from(phoff).ok().and_then(|o| base.checked_add(o)) else { return Ok(None) };
    if memory.read(at, &mut headers[..size])? < size {
        return Ok(None);
    }
    let phdr = |i: usize| &headers[i * phentsize..(i + 1) * phentsize];
    // The load segment that starts the file gives the bias.
    let mut bias = None;
    for i in 0..phnum {
        let h = phdr(i);
        if u32_at(h, 0) == Some(1) && u64_at(h, 8).is_some_and(|offset| offset < 4096) {
            let vaddr = u64_at(h, 16).unwrap_or(0) as usize;
            bias = Some(base.wrapping_sub(vaddr & !(super::PAGE - 1)));
            break;
        }
    }
    let Some(bias) = bias else { return Ok(None) };
    for i in 0..phnum {
        let h = phdr(i);
        if u32_at(h, 0) == Some(4) {
            let vaddr = u64_at(h, 16).unwrap_or(0) as usize;
            let len = (u64_at(h, 40).unwrap_or(0) as usize).min(notes.len());
            let n = memory.read(bias.wrapping_add(vaddr), &mut notes[..len])?;
            if let Some(range) = gnu_build_id_desc(&notes[..n]).map(|d| {
                let start = d.as_ptr() as usize - notes.as_ptr() as usize;
                start..start + d.len()
            }) {
                return Ok(Some((bias, Some(&notes[range]))));
            }
        }
    }
    Ok(Some((bias, None)))
}

/// Writes one `module` line per executable file mapping of `maps` (the text of `/proc/self/maps`,
/// of which only whole lines are used). `known` is the module list of init; `cut` says the text was
/// cut short, in which case the known modules above the last line read are added from `known`.
/// Returns a memory denial met on the way (build ids of new modules are then `-`).
pub(super) fn write_modules(
    out: &mut Writer<'_>,
    line_buf: &mut [u8],
    maps: &[u8],
    cut: bool,
    known: &[Module],
    memory: &mut Memory,
    scratch: &mut [u8; 4096],
) -> Option<Denied> {
    let mut denied = None;
    // The mapping of file offset 0 of the module being read (its ELF header).
    let mut base: Option<(usize, &[u8])> = None;
    let mut last_end = 0;
    let complete = match maps.iter().rposition(|&b| b == b'\n') {
        Some(nl) => &maps[..=nl],
        None => &[][..],
    };
    for line in complete.split(|&b| b == b'\n') {
        let Some(m) = parse_line(line) else { continue };
        last_end = m.end;
        if !m.path.starts_with(b"/") {
            continue;
        }
        if m.offset == 0 {
            base = Some((m.start, m.path));
        }
        if !m.executable {
            continue;
        }
        let mut w = Writer::new(line_buf);
        w.str("module ").hex(m.start as u64).str(" ").hex(m.end as u64).str(" ");
        // The same file: the loader may name it by another path (a symbolic link such as
        // /lib64/ld-linux-x86-64.so.2) than the kernel does, but not by another file name.
        let same_file = |k: &Module| {
            k.path.as_bytes() == m.path
                || k.path.as_bytes().rsplit(|&b| b == b'/').next() == m.path.rsplit(|&b| b == b'/').next()
        };
        if let Some(k) =
            known.iter().find(|k| same_file(k) && (k.start as usize) < m.end && m.start < k.end as usize)
        {
            w.hex(k.bias).str(" ").str(&k.build_id);
        } else {
            let info = match base {
                Some((start, path)) if path == m.path && denied.is_none() => {
                    match elf_info(memory, start, scratch) {
                        Ok(info) => info,
                        Err(d) => {
                            denied = Some(d);
                            None
                        }
                    }
                }
                _ => None,
            };
            match info {
                Some((bias, id)) => {
                    w.hex(bias as u64).str(" ");
                    match id {
                        Some(id) => w.hex_bytes(id),
                        None => w.str("-"),
                    };
                }
                // Without headers: the usual layout (the first load segment at address 0).
                None => {
                    w.hex(base.map_or(m.start - m.offset, |(start, _)| start) as u64).str(" -");
                }
            }
        }
        w.str(" ").bytes(m.path).str("\n");
        if !w.cut_off() {
            out.whole(w.written());
        }
    }
    if cut {
        write_known(out, line_buf, known.iter().filter(|k| k.start as usize >= last_end));
    }
    denied
}

/// Writes `module` lines for modules of the init list.
pub(super) fn write_known<'m>(
    out: &mut Writer<'_>,
    line_buf: &mut [u8],
    modules: impl Iterator<Item = &'m Module>,
) {
    for k in modules {
        let mut w = Writer::new(line_buf);
        w.str("module ").hex(k.start).str(" ").hex(k.end).str(" ").hex(k.bias).str(" ");
        w.str(&k.build_id).str(" ").str(&k.path).str("\n");
        if !w.cut_off() {
            out.whole(w.written());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_and_without_paths() {
        let m =
            parse_line(b"7f1c2a400000-7f1c2a428000 r-xp 00028000 fd:01 1234   /usr/lib/libc.so.6").unwrap();
        assert_eq!((m.start, m.end, m.executable, m.offset), (0x7f1c2a400000, 0x7f1c2a428000, true, 0x28000));
        assert_eq!(m.path, b"/usr/lib/libc.so.6");
        let anon = parse_line(b"7ffd5f1c0000-7ffd5f1e1000 rw-p 00000000 00:00 0").unwrap();
        assert_eq!(anon.path, b"");
        let spaced = parse_line(b"1000-2000 r-xp 00000000 08:01 5 /tmp/a b (deleted)").unwrap();
        assert_eq!(spaced.path, b"/tmp/a b (deleted)");
        assert_eq!(parse_line(b"garbage"), None);
    }

    #[test]
    fn this_process_maps_give_this_test_binary_with_its_init_build_id() {
        let known = super::super::modules::loaded();
        let mut maps = vec![0u8; MAPS_MAX];
        let (len, cut) = read_maps(&mut maps).unwrap();
        let mut out_buf = vec![0u8; 128 * 1024];
        let mut line = vec![0u8; 4200];
        let mut scratch = [0u8; 4096];
        let mut memory = Memory::new(None, false);
        let mut out = Writer::new(&mut out_buf);
        assert!(
            write_modules(&mut out, &mut line, &maps[..len], cut, &known, &mut memory, &mut scratch)
                .is_none()
        );
        let text = String::from_utf8(out.written().to_vec()).unwrap();
        let exe = std::env::current_exe().unwrap().display().to_string();
        let me = known.iter().find(|m| m.path == exe).unwrap();
        assert!(text.lines().any(|l| l.ends_with(&exe) && l.contains(&me.build_id)), "{text}");
        // Read from memory, the build id of a module is the one dl_iterate_phdr gave at init.
        let unknown: Vec<Module> = Vec::new();
        let mut out_buf2 = vec![0u8; 128 * 1024];
        let mut out2 = Writer::new(&mut out_buf2);
        write_modules(&mut out2, &mut line, &maps[..len], cut, &unknown, &mut memory, &mut scratch);
        let text2 = String::from_utf8(out2.written().to_vec()).unwrap();
        for k in &known {
            let found = text2.lines().find(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let start = u64::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap();
                let end = u64::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap();
                let name = k.path.rsplit('/').next().unwrap();
                l.ends_with(&format!("/{name}")) && start < k.end && k.start < end
            });
            let line = found.unwrap_or_else(|| panic!("{} at {:#x} in {text2}", k.path, k.start));
            assert!(line.contains(&format!(" {:#x} {} ", k.bias, k.build_id)), "{line} vs {k:?}");
        }
    }
}
