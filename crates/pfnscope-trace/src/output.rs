//! Creating a command's output file without harm: never through a symbolic link, never onto a
//! device, directory or other non-regular file, never over one of the command's inputs, and
//! over an existing file only when asked to ([`Existing::Replace`], the commands' `--force`).
//!
//! `tracer record -o` runs as root. Opening the path as given followed a link another user had
//! planted in a shared directory and overwrote the file it pointed to; `-o /dev/full` was taken
//! as a file. Here the file is created under a fresh name in the target's directory
//! (`O_CREAT | O_EXCL`, which never follows a link) and then renamed to its name. A rename
//! replaces a link at the target instead of following it; without `Replace` it is
//! `RENAME_NOREPLACE`, so whatever appeared at the target meanwhile is kept and reported.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

/// What to do when the output already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (the default of every command).
    Refuse,
    /// Replace it, if it is a regular file and no input (`--force`).
    Replace,
}

impl Existing {
    pub fn replace_if(force: bool) -> Existing {
        if force {
            Existing::Replace
        } else {
            Existing::Refuse
        }
    }
}

// An I/O error is part of the message, so it is a field named `err`, not `source`: front ends
// print the whole chain on one line, and a source would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path} already exists: choose another name, or add --force to replace it")]
    Exists { path: PathBuf },
    #[error(
        "{path} is a symbolic link: refusing to write through it (it may point anywhere); remove it or choose another name"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is {what}, not a regular file: give the name of a file to write")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error(
        "{path} is an input of this command: writing there would destroy it; choose another name"
    )]
    IsInput { path: PathBuf },
    #[error("{path} exists and is not a directory: give the output a directory of its own")]
    NotADirectory { path: PathBuf },
    #[error("cannot write {path}: directory {dir} does not exist")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("cannot write {path}: directory {dir} is not writable; choose another")]
    ReadOnlyDirectory { path: PathBuf, dir: PathBuf },
    #[error("cannot create {path}: {err}")]
    Create { path: PathBuf, err: io::Error },
}

/// Whether `path` may be written, without creating anything: what a command checks before it
/// starts work that a refusal at the end would waste.
pub fn check(path: &Path, existing: Existing, inputs: &[&Path]) -> Result<(), OutputError> {
    let dir = directory(path);
    if !dir.is_dir() {
        return Err(OutputError::NoDirectory {
            path: path.to_owned(),
            dir,
        });
    }
    may_replace(path, existing, inputs)?;
    let writable = CString::new(dir.as_os_str().as_bytes())
        .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
        .unwrap_or(false);
    if !writable {
        return Err(OutputError::ReadOnlyDirectory {
            path: path.to_owned(),
            dir,
        });
    }
    Ok(())
}

/// Whether what is at `path` now may be replaced: nothing, or a regular file that is no input,
/// with [`Existing::Replace`].
fn may_replace(path: &Path, existing: Existing, inputs: &[&Path]) -> Result<(), OutputError> {
    let m = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(OutputError::Create {
                path: path.to_owned(),
                err,
            });
        }
        Ok(m) => m,
    };
    let t = m.file_type();
    let what = if t.is_symlink() {
        return Err(OutputError::Symlink {
            path: path.to_owned(),
        });
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_fifo() {
        "a pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        ""
    };
    if !what.is_empty() {
        return Err(OutputError::NotRegular {
            path: path.to_owned(),
            what,
        });
    }
    let same =
        |i: &&Path| std::fs::metadata(i).is_ok_and(|im| im.dev() == m.dev() && im.ino() == m.ino());
    if inputs.iter().any(same) {
        return Err(OutputError::IsInput {
            path: path.to_owned(),
        });
    }
    match existing {
        Existing::Refuse => Err(OutputError::Exists {
            path: path.to_owned(),
        }),
        Existing::Replace => Ok(()),
    }
}

fn directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A new file that gets its name ([`NewFile::place`]) only once its writer says so; until then
/// it has a temporary name in the same directory, removed if it is dropped unplaced.
#[derive(Debug)]
pub struct NewFile {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    existing: Existing,
    placed: bool,
}

impl NewFile {
    /// Checks `path` as [`check`] does and creates the file under a temporary name.
    pub fn create(
        path: &Path,
        existing: Existing,
        inputs: &[&Path],
    ) -> Result<NewFile, OutputError> {
        check(path, existing, inputs)?;
        let create_err = |err| OutputError::Create {
            path: path.to_owned(),
            err,
        };
        let name = path
            .file_name()
            .ok_or_else(|| create_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        for n in 0u32.. {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".{}.{n}.part", std::process::id()));
            let tmp = directory(path).join(tmp_name);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp);
            match opened {
                Ok(file) => {
                    return Ok(NewFile {
                        file,
                        tmp,
                        path: path.to_owned(),
                        existing,
                        placed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => continue,
                Err(e) => return Err(create_err(e)),
            }
        }
        unreachable!("the loop returns")
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to its name: over an existing file only with [`Existing::Replace`].
    /// Idempotent.
    pub fn place(&mut self) -> Result<(), OutputError> {
        if self.placed {
            return Ok(());
        }
        let res = match self.existing {
            Existing::Replace => std::fs::rename(&self.tmp, &self.path),
            Existing::Refuse => rename_noreplace(&self.tmp, &self.path),
        };
        match res {
            Ok(()) => {
                self.placed = true;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(OutputError::Exists {
                path: self.path.clone(),
            }),
            Err(err) => Err(OutputError::Create {
                path: self.path.clone(),
                err,
            }),
        }
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    // A file system without RENAME_NOREPLACE: link(2) also fails on an existing target (a
    // link included) and never follows one.
    if unsafe { libc::link(f.as_ptr(), t.as_ptr()) } == 0 {
        return std::fs::remove_file(from);
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) {
        return Err(e);
    }
    // Nor hard links (vfat): check, then rename. A rename never follows a link either.
    match std::fs::symlink_metadata(to) {
        Ok(_) => Err(io::ErrorKind::AlreadyExists.into()),
        Err(_) => std::fs::rename(from, to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pfnscope-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(nf: &mut NewFile, text: &str) {
        nf.file().write_all(text.as_bytes()).unwrap();
        nf.place().unwrap();
    }

    #[test]
    fn a_new_name_is_created_and_an_existing_one_needs_replace() {
        let d = dir("new");
        let p = d.join("t.arrows");
        write(
            &mut NewFile::create(&p, Existing::Refuse, &[]).unwrap(),
            "one",
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one");
        let e = NewFile::create(&p, Existing::Refuse, &[]).unwrap_err();
        assert!(matches!(e, OutputError::Exists { .. }), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        write(
            &mut NewFile::create(&p, Existing::Replace, &[]).unwrap(),
            "two",
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        // Nothing is left under a temporary name.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn links_devices_directories_and_inputs_are_refused() {
        let d = dir("refused");
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = d.join("link.arrows");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for existing in [Existing::Refuse, Existing::Replace] {
            let e = NewFile::create(&link, existing, &[]).unwrap_err();
            assert!(matches!(e, OutputError::Symlink { .. }), "{e}");
            let e = NewFile::create(Path::new("/dev/full"), existing, &[]).unwrap_err();
            assert!(e.to_string().contains("a device"), "{e}");
            let e = NewFile::create(&d, existing, &[]).unwrap_err();
            assert!(e.to_string().contains("a directory"), "{e}");
            let e = NewFile::create(&victim, existing, &[victim.as_path()]).unwrap_err();
            assert!(matches!(e, OutputError::IsInput { .. }), "{e}");
            // An input reached through a link is still the input.
            let e = NewFile::create(&victim, existing, &[link.as_path()]).unwrap_err();
            assert!(matches!(e, OutputError::IsInput { .. }), "{e}");
        }
        let e = NewFile::create(&d.join("no/such/t.arrows"), Existing::Refuse, &[]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        std::fs::remove_dir_all(d).ok();
    }

    /// A link planted after the check but before the file gets its name is not followed:
    /// without Replace it is reported, with Replace the link itself is replaced.
    #[test]
    fn a_link_planted_meanwhile_is_never_followed() {
        let d = dir("race");
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let p = d.join("t.arrows");
        for existing in [Existing::Refuse, Existing::Replace] {
            let mut nf = NewFile::create(&p, existing, &[]).unwrap();
            std::os::unix::fs::symlink(&victim, &p).unwrap();
            nf.file().write_all(b"trace").unwrap();
            match existing {
                Existing::Refuse => {
                    assert!(matches!(nf.place(), Err(OutputError::Exists { .. })));
                    std::fs::remove_file(&p).unwrap();
                }
                Existing::Replace => {
                    nf.place().unwrap();
                    assert!(!std::fs::symlink_metadata(&p).unwrap().is_symlink());
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), "trace");
                }
            }
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        }
        std::fs::remove_dir_all(d).ok();
    }
}
