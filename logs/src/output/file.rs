//! JSON lines to a file (rotated by size) or to standard output.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use portwarden_core::LogRecord;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Output;
use crate::encode::Encoder;

/// A file's identity and length at a checkpoint: everything past `size`
/// was written after it, and is written again on resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMark {
    /// The path written to.
    pub path: PathBuf,
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// Its length at the checkpoint.
    pub size: u64,
}

/// Before resuming: cuts what was written after `mark` from the output, so
/// the records read again are not written twice. The file may since have
/// been rotated once, to `<path>.1`; then the newer file holds only later
/// records and is removed.
fn repair(mark: &FileMark) -> io::Result<()> {
    let rotated = rotated_name(&mark.path, 1);
    for (path, newer) in [(&mark.path, None), (&rotated, Some(&mark.path))] {
        let Ok(meta) = std::fs::metadata(path) else { continue };
        if meta.dev() != mark.dev || meta.ino() != mark.ino {
            continue;
        }
        if meta.len() > mark.size {
            warn!(path = %path.display(), keep = mark.size, drop = meta.len() - mark.size,
                "output has records written after the last checkpoint; cutting them, they are read again");
            OpenOptions::new().write(true).open(path)?.set_len(mark.size)?;
        }
        if let Some(newer) = newer {
            if std::fs::metadata(newer).is_ok() {
                warn!(path = %newer.display(), "output rotated after the last checkpoint; removing the newer file");
                std::fs::remove_file(newer)?;
            }
        }
        return Ok(());
    }
    Ok(())
}

/// A file that does not end in a newline was cut mid-write (a crash):
/// drop the partial line, so the next record starts on a line of its own.
fn cut_torn_line(path: &Path) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut at = len;
    let mut buf = [0u8; 4096];
    while at > 0 {
        let n = buf.len().min(at as usize);
        file.seek(SeekFrom::Start(at - n as u64))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            let end = at - n as u64 + i as u64 + 1;
            if end < len {
                warn!(path = %path.display(), bytes = len - end, "output ends in a partial line; cutting it");
                file.set_len(end)?;
            }
            return Ok(());
        }
        at -= n as u64;
    }
    if len > 0 {
        warn!(path = %path.display(), bytes = len, "output holds no complete line; emptying it");
        file.set_len(0)?;
    }
    Ok(())
}

fn rotated_name(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// JSON lines appended to a file, rotated by size. Writing and rotating
/// happen on a blocking thread, off the async workers.
pub struct JsonFile {
    /// The file; away on the blocking thread during a flush.
    file: Option<OpenFile>,
    /// Its name, for logs and checkpoints.
    name: String,
    encoder: Encoder,
    buf: Vec<u8>,
}

/// The open file and where it stands.
struct OpenFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    dev: u64,
    ino: u64,
    size: u64,
}

impl JsonFile {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: PathBuf, max_bytes: u64, max_files: u32, host: String) -> crate::Result<Self> {
        let opened = (|| {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            cut_torn_line(&path)?;
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let meta = file.metadata()?;
            Ok((file, meta))
        })();
        let (file, meta) = opened.map_err(|source| crate::Error::Output { path: path.clone(), source })?;
        Ok(Self {
            name: format!("file:{}", path.display()),
            file: Some(OpenFile {
                path,
                max_bytes,
                max_files,
                file,
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
            }),
            encoder: Encoder::new(host),
            buf: Vec::new(),
        })
    }

    fn file(&mut self) -> io::Result<&mut OpenFile> {
        self.file.as_mut().ok_or_else(|| io::Error::other("the output's file was lost with a failed write thread"))
    }
}

impl OpenFile {
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.max_files).rev() {
            let from = rotated_name(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_name(&self.path, n + 1))?;
            }
        }
        if self.max_files > 0 {
            std::fs::rename(&self.path, rotated_name(&self.path, 1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.reopen()?;
        info!(path = %self.path.display(), "output file rotated");
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let meta = file.metadata()?;
        (self.file, self.dev, self.ino, self.size) = (file, meta.dev(), meta.ino(), meta.len());
        Ok(())
    }

    /// Appends `buf`, rotating first when it would pass the size limit.
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(buf) {
            // Cut a partial write, so the retry does not leave half a line.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += buf.len() as u64;
        Ok(())
    }
}

#[async_trait]
impl Output for JsonFile {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        for r in records {
            self.encoder.line(r, &mut self.buf);
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file()?;
        let (mut file, buf) = (self.file.take(), std::mem::take(&mut self.buf));
        let (file, mut buf, result) = tokio::task::spawn_blocking(move || {
            let result = file.as_mut().map_or(Ok(()), |f| f.append(&buf));
            (file, buf, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = file;
        if result.is_ok() {
            buf.clear();
        }
        self.buf = buf;
        result
    }

    fn mark(&self) -> Option<FileMark> {
        let f = self.file.as_ref()?;
        Some(FileMark { path: f.path.clone(), dev: f.dev, ino: f.ino, size: f.size })
    }

    fn restore(&mut self, mark: &FileMark) -> io::Result<()> {
        repair(mark)?;
        // The file may have been cut or replaced: open it afresh.
        self.file()?.reopen()
    }
}

/// JSON lines on standard output.
pub struct JsonStdout {
    encoder: Encoder,
    buf: Vec<u8>,
}

impl JsonStdout {
    /// Records without a sending host get `host`.
    pub fn new(host: String) -> Self {
        Self { encoder: Encoder::new(host), buf: Vec::new() }
    }
}

#[async_trait]
impl Output for JsonStdout {
    fn name(&self) -> String {
        "stdout".into()
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        for r in records {
            self.encoder.line(r, &mut self.buf);
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // A blocking write: when stdout is a pipe nobody reads, this output
        // stalls, and backpressure does the rest.
        let buf = std::mem::take(&mut self.buf);
        let (result, mut buf) = tokio::task::spawn_blocking(move || {
            let mut out = io::stdout().lock();
            let r = out.write_all(&buf).and_then(|()| out.flush());
            (r, buf)
        })
        .await
        .map_err(io::Error::other)?;
        if result.is_ok() {
            buf.clear();
        }
        self.buf = buf;
        result
    }
}
