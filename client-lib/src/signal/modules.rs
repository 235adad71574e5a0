//! The map of loaded modules (executable and shared libraries): where their code is, their load bias
//! and build id, taken at init so that addresses from a crash can be turned into code locations later.

use std::ffi::CStr;

/// One executable segment of a loaded module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Module {
    /// First address of the segment in memory.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Load bias: memory address minus the address in the file.
    pub bias: u64,
    /// The GNU build id, hex, or `-`.
    pub build_id: String,
    /// The module's path (absolute for the executable).
    pub path: String,
}

/// The executable segments of every module loaded now.
pub(crate) fn loaded() -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: the callback only reads the `dl_phdr_info` it is given, during the call, and writes to
    // `out` through the pointer passed as `data`, which lives for the whole call.
    unsafe {
        libc::dl_iterate_phdr(Some(callback), (&raw mut out).cast());
    }
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
    for m in &mut out {
        if m.path.is_empty() {
            m.path.clone_from(&exe);
        }
    }
    out.retain(|m| m.path.starts_with('/'));
    out
}

/// # Safety
/// Called by `dl_iterate_phdr` with a valid `info` and the `data` pointer given to it.
unsafe extern "C" fn callback(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the `Vec<Module>` passed by `loaded`; `info` is valid during the call.
    let (out, info) = unsafe { (&mut *data.cast::<Vec<Module>>(), &*info) };
    let bias = info.dlpi_addr;
    let path = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the dynamic loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
    };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let mut build_id = String::from("-");
    for h in headers {
        if h.p_type == libc::PT_NOTE {
            let start = bias.wrapping_add(h.p_vaddr) as *const u8;
            // SAFETY: a PT_NOTE segment of a loaded module is mapped and readable for p_memsz bytes.
            let notes = unsafe { std::slice::from_raw_parts(start, h.p_memsz as usize) };
            if let Some(id) = gnu_build_id(notes) {
                build_id = id;
            }
        }
    }
    for h in headers {
        if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0 {
            let start = bias.wrapping_add(h.p_vaddr);
            out.push(Module {
                start,
                end: start.wrapping_add(h.p_memsz),
                bias,
                build_id: build_id.clone(),
                path: path.clone(),
            });
        }
    }
    0
}

/// The NT_GNU_BUILD_ID in a block of ELF notes, as hex.
pub(crate) fn gnu_build_id(notes: &[u8]) -> Option<String> {
    gnu_build_id_desc(notes).map(|desc| desc.iter().map(|b| format!("{b:02x}")).collect())
}

/// The bytes of the NT_GNU_BUILD_ID note in a block of ELF notes. **Async-signal-safe**: slices of
/// the input only.
pub(super) fn gnu_build_id_desc(mut notes: &[u8]) -> Option<&[u8]> {
    let word = |b: &[u8], at: usize| -> Option<usize> {
        let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_ne_bytes(bytes)).ok()
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)?);
        let name = notes.get(12..12 + namesz)?;
        let desc_at = 12 + align(namesz);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if kind == 3 && name == b"GNU\0" {
            return Some(desc);
        }
        notes = notes.get(desc_at + align(descsz)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_in_the_module_map_with_its_own_code() {
        let modules = loaded();
        let here = this_test_binary_is_in_the_module_map_with_its_own_code as *const () as usize as u64;
        let m =
            modules.iter().find(|m| m.start <= here && here < m.end).expect("a module holds this function");
        assert_eq!(m.path, std::env::current_exe().unwrap().display().to_string());
        assert!(m.build_id == "-" || m.build_id.len() >= 16, "{}", m.build_id);
    }

    #[test]
    fn build_id_note_is_found_among_others() {
        let mut notes = Vec::new();
        for (name, kind, desc) in [(&b"XY\0"[..], 1u32, &[1u8, 2, 3][..]), (b"GNU\0", 3, &[0xab, 0xcd])] {
            notes.extend((name.len() as u32).to_ne_bytes());
            notes.extend((desc.len() as u32).to_ne_bytes());
            notes.extend(kind.to_ne_bytes());
            notes.extend(name);
            notes.resize(notes.len().div_ceil(4) * 4, 0);
            notes.extend(desc);
            notes.resize(notes.len().div_ceil(4) * 4, 0);
        }
        assert_eq!(gnu_build_id(&notes).as_deref(), Some("abcd"));
        assert_eq!(gnu_build_id(&notes[..5]), None);
    }
}
