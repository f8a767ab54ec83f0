//! The file layer under [`FileStore`](super::FileStore): six operations on one growing byte
//! array, so that tests can put the store on a disk that loses or tears writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use super::FileStoreError;

/// The byte storage a [`FileStore`](super::FileStore) writes its log to.
///
/// [`FileDisk`] is the real file; other implementations put the log elsewhere, or inject faults
/// (the crate's crash tests use one that drops unsynced bytes and tears writes).
///
/// The store relies on exactly this contract:
///
/// * [`append`](Self::append) adds bytes at the end; after an error, the bytes may be partly
///   written, and the store truncates them away;
/// * bytes are durable only once a later [`sync`](Self::sync) has returned `Ok`; after a crash,
///   everything synced is intact, while bytes appended since the last sync may be missing, cut
///   short or damaged;
/// * [`write_at`](Self::write_at) overwrites bytes in place (the store does so only for its two
///   small anchors near the start); until the next `sync` returns `Ok`, a crash may leave the
///   range written old, new, or torn between the two, but never changes bytes outside it;
/// * [`truncate`](Self::truncate) shortens the data (made durable by the next `sync`).
pub trait Disk: Send {
    /// The current length in bytes (appended bytes included, synced or not).
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn len(&self) -> io::Result<u64>;

    /// Whether the disk holds no bytes.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    ///
    /// # Errors
    ///
    /// The underlying I/O error; [`io::ErrorKind::UnexpectedEof`] if the range passes the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Appends `data` at the end.
    ///
    /// # Errors
    ///
    /// The underlying I/O error; part of `data` may then have been written.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;

    /// Overwrites the bytes at `offset..offset + data.len()`, which lie within the current
    /// length.
    ///
    /// # Errors
    ///
    /// The underlying I/O error (part of `data` may then have been written);
    /// [`io::ErrorKind::InvalidInput`] if the range passes the end.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes every byte appended or written so far, and the current length, durable.
    ///
    /// # Errors
    ///
    /// The underlying I/O error; what is durable is then unknown.
    fn sync(&mut self) -> io::Result<()>;

    /// Shortens the data to `len` bytes.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// A [`Disk`] on a real file, locked for exclusive use while open.
///
/// Syncs with [`File::sync_data`] (`fdatasync` on Linux, which also persists the file's new
/// length). On macOS that call does not flush the drive's own cache.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    len: u64,
}

impl FileDisk {
    /// Opens or creates the file at `path` for reading and writing, and locks it exclusively
    /// (the lock is held until the disk is dropped).
    ///
    /// A newly created file's directory entry is synced (on Unix), so that the file itself
    /// survives a crash once its contents are synced.
    ///
    /// # Errors
    ///
    /// [`FileStoreError::Locked`] if another handle, in this process or another, holds the
    /// lock; [`FileStoreError::Io`] otherwise.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FileStoreError> {
        let path = path.as_ref();
        if let Some(disk) = Self::open_existing(path)? {
            return Ok(disk);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let disk = Self::locked(file)?;
        sync_parent_dir(path)?;
        Ok(disk)
    }

    /// Opens and locks the file at `path`, or `None` if there is none.
    pub(crate) fn open_existing(path: &Path) -> Result<Option<Self>, FileStoreError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Self::locked(file).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the file at `path` holding `contents`, atomically: the contents are written and
    /// synced in a temporary file that is then linked into place, so a crash leaves either no
    /// file or the complete contents. If the file appears meanwhile, that file is opened. Where
    /// the file system has no hard links, the file is created empty instead.
    pub(crate) fn create_with(path: &Path, contents: &[u8]) -> Result<Self, FileStoreError> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.creating", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        // A leftover from an earlier crash of this same process id.
        let _ = std::fs::remove_file(&tmp);
        {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            std::io::Write::write_all(&mut f, contents)?;
            f.sync_all()?;
        }
        // Linking (unlike renaming) never replaces a file another process created meanwhile.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // No hard links on this file system: create the file empty; the store then writes
            // its first bytes itself (a crash before they are synced leaves a file that is
            // refused, never taken for a new store: remove it to start again).
            Err(_) => return Self::open(path),
        }
        sync_parent_dir(path)?;
        Self::open_existing(path)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "created file vanished").into())
    }

    fn locked(file: File) -> Result<Self, FileStoreError> {
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(FileStoreError::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing here; the file system orders the entry itself.
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    // `FileDisk` is used through `&mut` for writes and the store is not shared between threads
    // while reading, so the cursor is not raced.
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

#[cfg(not(any(unix, windows)))]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(buf)
}

impl Disk for FileDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read_exact_at(&self.file, buf, offset)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        write_all_at(&self.file, data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or(io::ErrorKind::InvalidInput)?;
        write_all_at(&self.file, data, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }
}
