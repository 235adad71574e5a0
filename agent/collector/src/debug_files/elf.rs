//! What an ELF file holds, for `lastword debug-files check`, for the kind an upload is filed under,
//! and for the collector's check that an uploaded file is the build its URL names.
//!
//! The file is read through object's `ReadCache`: only the headers and the section table are read,
//! never the whole file (a debug file may be hundreds of megabytes).

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use object::read::ReadCache;
use object::{Object as _, ObjectSection as _};

use super::FileKind;

/// The ELF type of a file, with position-independent executables told apart from shared objects (both
/// are `ET_DYN`; an executable has a program interpreter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfType {
    /// `ET_EXEC`, or `ET_DYN` with a `PT_INTERP`/`.interp`: a program.
    Executable,
    /// `ET_DYN` without an interpreter: a shared library.
    SharedObject,
    /// `ET_REL`: an object file.
    Relocatable,
    /// `ET_CORE`.
    Core,
    /// Anything else.
    Other,
}

impl ElfType {
    /// How `check` names it.
    pub fn name(self) -> &'static str {
        match self {
            ElfType::Executable => "executable",
            ElfType::SharedObject => "shared object",
            ElfType::Relocatable => "relocatable object",
            ElfType::Core => "core dump",
            ElfType::Other => "other",
        }
    }
}

/// What an ELF file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contents {
    /// The GNU build id (`.note.gnu.build-id`), lowercase hex; `None` when the file has none.
    pub build_id: Option<String>,
    /// Its ELF type.
    pub elf_type: ElfType,
    /// A `.symtab` with symbols in it (stripping removes it; `.dynsym` does not count).
    pub symbol_table: bool,
    /// DWARF debugging information (`.debug_info`).
    pub dwarf_info: bool,
    /// DWARF line tables (`.debug_line`): files and lines.
    pub dwarf_lines: bool,
    /// Call frame information for unwinding in `.eh_frame` (kept by `strip`).
    pub eh_frame: bool,
    /// Call frame information in `.debug_frame`.
    pub debug_frame: bool,
    /// A separate debug file (`objcopy --only-keep-debug`): its code sections are there in name only
    /// (`SHT_NOBITS`), the file holds no code.
    pub separate_debug: bool,
    /// The file's size in bytes.
    pub size: u64,
}

impl Contents {
    /// Whether it has what symbolizes: DWARF or a symbol table.
    pub fn has_symbols(&self) -> bool {
        self.symbol_table || self.dwarf_info || self.dwarf_lines
    }

    /// The kind it is filed under: `debuginfo` when it has symbols or DWARF, else `executable` (a
    /// stripped binary is still worth keeping: its `.eh_frame`, and the code for a debugger).
    pub fn kind(&self) -> FileKind {
        if self.has_symbols() { FileKind::Debuginfo } else { FileKind::Executable }
    }

    /// Whether it may be filed as `kind`: a `debuginfo` needs symbols or DWARF; an `executable` must
    /// hold code (not be a separate debug file).
    pub fn may_be(&self, kind: FileKind) -> bool {
        match kind {
            FileKind::Debuginfo => self.has_symbols(),
            FileKind::Executable => !self.separate_debug,
        }
    }
}

/// Why a file's contents could not be told.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Not an ELF file at all.
    #[error("{path} is not an ELF file")]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// It starts like ELF but its headers do not parse.
    #[error("{path} is a damaged ELF file: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What object said.
        why: String,
    },
}

impl fmt::Display for Contents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "build id:         {}", self.build_id.as_deref().unwrap_or("none"))?;
        writeln!(f, "ELF type:         {}", self.elf_type.name())?;
        writeln!(f, "separate debug:   {}", yes(self.separate_debug))?;
        writeln!(f, "symbol table:     {}", yes(self.symbol_table))?;
        writeln!(f, "DWARF info:       {}", yes(self.dwarf_info))?;
        writeln!(f, "DWARF lines:      {}", yes(self.dwarf_lines))?;
        writeln!(f, "CFI .eh_frame:    {}", yes(self.eh_frame))?;
        writeln!(f, "CFI .debug_frame: {}", yes(self.debug_frame))?;
        writeln!(f, "size:             {} bytes", self.size)?;
        write!(f, "uploads as:       {}", self.kind().name())
    }
}

/// What the ELF file at `path` holds. Blocking (reads the file's headers).
pub fn inspect(path: &Path) -> Result<Contents, ElfError> {
    let io = |source| ElfError::Io { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut magic = [0u8; 4];
    if std::io::Read::read_exact(&mut file, &mut magic).is_err() || magic != *b"\x7fELF" {
        return Err(ElfError::NotElf { path: path.to_owned() });
    }
    let cache = ReadCache::new(file);
    let damaged = |e: object::Error| ElfError::Damaged { path: path.to_owned(), why: e.to_string() };
    let obj = object::File::parse(&cache).map_err(damaged)?;
    let build_id = obj.build_id().map_err(damaged)?.map(hex::encode);
    // A section with bytes in the file (NOBITS ones, as in a separate debug file, have none).
    let present = |name: &str| {
        obj.section_by_name(name).is_some_and(|s| s.size() > 0 && s.file_range().is_some_and(|(_, n)| n > 0))
    };
    let text_without_bytes = obj.section_by_name(".text").is_some_and(|s| s.file_range().is_none());
    let interp = obj.section_by_name(".interp").is_some();
    let elf_type = match obj.kind() {
        object::ObjectKind::Executable => ElfType::Executable,
        object::ObjectKind::Dynamic if interp => ElfType::Executable,
        object::ObjectKind::Dynamic => ElfType::SharedObject,
        object::ObjectKind::Relocatable => ElfType::Relocatable,
        object::ObjectKind::Core => ElfType::Core,
        _ => ElfType::Other,
    };
    Ok(Contents {
        build_id,
        elf_type,
        symbol_table: present(".symtab"),
        dwarf_info: present(".debug_info") || present(".zdebug_info"),
        dwarf_lines: present(".debug_line") || present(".zdebug_line"),
        eh_frame: present(".eh_frame"),
        debug_frame: present(".debug_frame") || present(".zdebug_frame"),
        separate_debug: text_without_bytes,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_elf_is_told_so() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello, not a program").expect("written");
        assert!(matches!(inspect(&path), Err(ElfError::NotElf { .. })));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").expect("written");
        assert!(matches!(inspect(&empty), Err(ElfError::NotElf { .. })));
        let damaged = dir.path().join("damaged");
        std::fs::write(&damaged, b"\x7fELF\x02\x01\x01").expect("written");
        assert!(matches!(inspect(&damaged), Err(ElfError::Damaged { .. })));
    }
}
