//! pcapng output: one Interface Description Block per captured interface,
//! named after its container, with rotation by size or age.
//!
//! Each interface of each captured namespace becomes its own IDB, so
//! Wireshark and tshark show `frame.interface_name` as
//! `<container>/<interface>` (for example `web/eth0`), and the IDB's
//! description carries runtime, id, image and pod. Timestamps have
//! nanosecond resolution (`if_tsresol` = 9). Every rotated file starts with
//! the IDBs of all interfaces seen so far, so each file stands alone.
//!
//! pcap-file writes the stream: the section header and every interface
//! block, with their options, and it checks interface ids. Packets are the
//! hot path: each Enhanced Packet Block is encoded here, once, straight
//! into pcap-file's writer buffer (its typed block serialises every packet
//! twice, once to measure it, and its raw block needs the body contiguous
//! first, a second copy of every frame). Tests read the output back with
//! pcap-file's reader and with tshark.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use portwarden_core::{LinkType, PacketMeta};

/// Where pcapng goes.
pub enum Destination {
    /// Standard output (`-w -`), flushed after every batch, never rotated.
    Stdout,
    /// Files `<path>`, then `<path>.1`, `<path>.2`, ... when rotation is on.
    File {
        /// The first file's path.
        path: PathBuf,
        /// Rotate after this many bytes (0: never).
        max_bytes: u64,
        /// Rotate after this long (`None`: never).
        max_age: Option<Duration>,
    },
}

/// An interface as the file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdbInfo {
    /// `if_name`: `<container>/<interface>`.
    pub name: String,
    /// `if_description`: runtime, id, image, pod.
    pub description: String,
    /// Framing.
    pub link: LinkType,
    /// Snap length.
    pub snaplen: u32,
}

/// A pcapng writer fed by several captures at once.
pub struct PcapngOut {
    destination: Destination,
    /// pcap-file's writer over a buffer that [`PcapngOut::flush`] drains
    /// into `sink`.
    writer: PcapNgWriter<Vec<u8>>,
    sink: File,
    /// (capture key, ifindex) -> IDB index in the current file.
    ids: HashMap<(u64, u32), u32>,
    /// Every IDB so far, in index order, to replay after rotation.
    idbs: Vec<((u64, u32), IdbInfo)>,
    written: u64,
    opened: Instant,
    files: u32,
    /// The last interface looked up, since frames come in runs.
    last: Option<((u64, u32), u32)>,
}

/// The buffer is drained into the file at this size, even within a batch:
/// small enough to stay in cache (a 1 MiB buffer made every packet block
/// a cache miss to write).
const DRAIN_BYTES: usize = 32 << 10;

/// pcapng's Enhanced Packet Block type.
const ENHANCED_PACKET_BLOCK: u32 = 6;

impl PcapngOut {
    /// Starts the first file or the stream.
    pub fn new(destination: Destination) -> io::Result<PcapngOut> {
        let sink = open(&destination, 0)?;
        let writer = new_writer()?;
        Ok(PcapngOut {
            destination,
            writer,
            sink,
            ids: HashMap::new(),
            idbs: Vec::new(),
            written: 0,
            opened: Instant::now(),
            files: 1,
            last: None,
        })
    }

    /// Declares an interface of capture `key`; later frames refer to it.
    pub fn add_interface(&mut self, key: u64, ifindex: u32, info: IdbInfo) -> io::Result<()> {
        if self.ids.contains_key(&(key, ifindex)) {
            return Ok(());
        }
        self.write_idb(&info)?;
        let id = u32::try_from(self.ids.len()).map_err(io::Error::other)?;
        self.ids.insert((key, ifindex), id);
        self.idbs.push(((key, ifindex), info));
        Ok(())
    }

    /// Writes one frame of capture `key`. Frames of undeclared interfaces
    /// are refused (`false`).
    pub fn write(&mut self, key: u64, meta: &PacketMeta, data: &[u8]) -> io::Result<bool> {
        Ok(self.write_frames(key, std::iter::once((meta, data)))? == 1)
    }

    /// Writes frames of capture `key`, skipping frames of undeclared
    /// interfaces; returns how many it wrote. Frames of 512 bytes or more
    /// are not copied: their blocks' headers are buffered
    /// and the frames handed to the kernel in place (`writev`), before
    /// this returns, while the frames are still borrowed.
    pub fn write_frames<'a>(
        &mut self,
        key: u64,
        frames: impl IntoIterator<Item = (&'a PacketMeta, &'a [u8])>,
    ) -> io::Result<u64> {
        let mut in_place: Vec<(usize, &'a [u8])> = Vec::new();
        let mut count = 0;
        for (meta, data) in frames {
            let Some(interface_id) = self.interface_id(key, meta.ifindex) else { continue };
            // A tag the kernel took off goes back after the MAC addresses.
            let tag = meta.vlan.filter(|_| data.len() >= 12).map(|t| t.bytes());
            let len = data.len() + if tag.is_some() { 4 } else { 0 };
            let captured = u32::try_from(len).map_err(io::Error::other)?;
            let padding = len.next_multiple_of(4) - len;
            // Block type and length, then the EPB fields: interface id,
            // timestamp (high, low), captured and original lengths; then the
            // data, padding to 32 bits, and the length again. Little-endian,
            // as the section header `new_writer` asks pcap-file for.
            let total = u32::try_from(EPB_OVERHEAD + len + padding).map_err(io::Error::other)?;
            let mut head = [0u8; 28];
            for (i, word) in [
                ENHANCED_PACKET_BLOCK,
                total,
                interface_id,
                (meta.timestamp_ns >> 32) as u32,
                meta.timestamp_ns as u32,
                captured,
                meta.original_len + if tag.is_some() { 4 } else { 0 },
            ]
            .into_iter()
            .enumerate()
            {
                head[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
            let mut tail = [0u8; 7];
            tail[padding..padding + 4].copy_from_slice(&total.to_le_bytes());
            let buf = self.writer.get_mut();
            buf.extend_from_slice(&head);
            if let Some(tag) = tag {
                buf.extend_from_slice(&data[..12]);
                buf.extend_from_slice(&tag);
                buf.extend_from_slice(&data[12..]);
            } else if data.len() < COPY_BELOW {
                buf.extend_from_slice(data);
            } else {
                if in_place.capacity() == 0 {
                    // Once per call, not a reallocation every few frames.
                    in_place.reserve_exact(MAX_IN_PLACE);
                }
                in_place.push((buf.len(), data));
            }
            buf.extend_from_slice(&tail[..padding + 4]);
            self.written += u64::from(total);
            count += 1;
            if buf.len() >= DRAIN_BYTES || in_place.len() >= MAX_IN_PLACE {
                self.drain(&mut in_place)?;
            }
        }
        self.drain(&mut in_place)?;
        Ok(count)
    }

    /// The pcapng interface id of `ifindex` in capture `key`.
    #[inline]
    fn interface_id(&mut self, key: u64, ifindex: u32) -> Option<u32> {
        match self.last {
            Some((k, id)) if k == (key, ifindex) => Some(id),
            _ => self.look_up(key, ifindex),
        }
    }

    /// Another interface than the last frame's: rare, kept out of line.
    #[cold]
    #[inline(never)]
    fn look_up(&mut self, key: u64, ifindex: u32) -> Option<u32> {
        let wanted = (key, ifindex);
        let id = *self.ids.get(&wanted)?;
        self.last = Some((wanted, id));
        Some(id)
    }

    /// Flushes buffered blocks (after each batch) and rotates when due.
    pub fn flush(&mut self) -> io::Result<()> {
        self.drain(&mut Vec::new())?;
        self.sink.flush()?;
        if let Destination::File { max_bytes, max_age, .. } = &self.destination {
            let too_big = *max_bytes > 0 && self.written >= *max_bytes;
            let too_old = max_age.is_some_and(|age| self.opened.elapsed() >= age);
            if too_big || too_old {
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// Files started so far.
    pub fn files(&self) -> u32 {
        self.files
    }

    /// Hands what is buffered, with the frames written in place between
    /// its parts, to the file or stream.
    fn drain(&mut self, in_place: &mut Vec<(usize, &[u8])>) -> io::Result<()> {
        let buf = self.writer.get_mut();
        if buf.is_empty() {
            return Ok(());
        }
        let mut slices = Vec::with_capacity(in_place.len() * 2 + 1);
        let mut at = 0;
        for &(split, data) in in_place.iter() {
            slices.push(IoSlice::new(&buf[at..split]));
            slices.push(IoSlice::new(data));
            at = split;
        }
        slices.push(IoSlice::new(&buf[at..]));
        write_all_vectored(&mut self.sink, &mut slices)?;
        buf.clear();
        in_place.clear();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.drain(&mut Vec::new())?;
        self.sink.flush()?;
        self.sink = open(&self.destination, self.files)?;
        self.writer = new_writer()?;
        self.files += 1;
        self.written = 0;
        self.last = None;
        self.opened = Instant::now();
        let idbs = self.idbs.clone();
        for (_, info) in &idbs {
            self.write_idb(info)?;
        }
        Ok(())
    }

    fn write_idb(&mut self, info: &IdbInfo) -> io::Result<()> {
        let linktype = match info.link {
            LinkType::Ethernet => DataLink::ETHERNET,
            LinkType::RawIp => DataLink::RAW,
            LinkType::Other(_) => DataLink::USER0,
        };
        let block = InterfaceDescriptionBlock {
            linktype,
            snaplen: info.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(info.name.clone())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(info.description.clone())),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.written += self.writer.write_pcapng_block(block).map_err(to_io)? as u64;
        Ok(())
    }
}

/// Block type, length, the five EPB fields, and the trailing length.
const EPB_OVERHEAD: usize = 32;

/// Frames this big or bigger are written in place instead of copied: for
/// small frames a copy is cheaper than another `writev` segment.
pub(crate) const COPY_BELOW: usize = 512;

/// Frames written in place per `writev` (two segments each, within the
/// kernel's 1024).
const MAX_IN_PLACE: usize = 500;

/// pcap-file's writer, little-endian, over a fresh buffer holding the
/// section header.
fn new_writer() -> io::Result<PcapNgWriter<Vec<u8>>> {
    PcapNgWriter::with_endianness(Vec::with_capacity(DRAIN_BYTES + (64 << 10)), pcap_file::Endianness::Little)
        .map_err(to_io)
}

/// The file, or standard output as a file of its own (unbuffered, so
/// frames can be written in place).
fn open(destination: &Destination, index: u32) -> io::Result<File> {
    match destination {
        Destination::Stdout => Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?)),
        Destination::File { path, .. } => File::create(numbered(path, index)),
    }
}

/// Writes every slice, however the kernel splits the writes.
fn write_all_vectored(sink: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match sink.write_vectored(slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "pcapng output accepts no more")),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The n-th file of a rotation: `capture.pcapng`, `capture.pcapng.1`, ...
pub fn numbered(path: &Path, index: u32) -> PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

fn to_io(e: pcap_file::PcapError) -> io::Error {
    io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_core::Direction;

    fn meta(ifindex: u32) -> PacketMeta {
        PacketMeta {
            timestamp_ns: 1_700_000_000_123_456_789,
            ifindex,
            original_len: 4,
            vlan: None,
            checksum_pending: false,
            direction: Direction::Incoming,
            offset: 0,
            len: 4,
        }
    }

    fn info(name: &str) -> IdbInfo {
        IdbInfo { name: name.into(), description: "docker abc".into(), link: LinkType::Ethernet, snaplen: 262_144 }
    }

    #[test]
    fn files_rotate_and_each_starts_with_every_interface() {
        let dir = std::env::temp_dir().join(format!("pw-pcapng-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("cap.pcapng");
        let dest = Destination::File { path: path.clone(), max_bytes: 100, max_age: None };
        let mut out = PcapngOut::new(dest).expect("open");
        out.add_interface(1, 2, info("web/eth0")).expect("idb");
        out.add_interface(7, 1, info("db/lo")).expect("idb");
        assert!(out.write(1, &meta(2), b"abcd").expect("write"));
        assert!(!out.write(1, &meta(9), b"abcd").expect("undeclared"));
        out.flush().expect("flush");
        assert_eq!(out.files(), 2, "passed 100 bytes");
        assert!(out.write(7, &meta(1), b"wxyz").expect("write"));
        out.flush().expect("flush");
        drop(out);

        for file in [path.clone(), numbered(&path, 1)] {
            let data = std::fs::read(&file).expect("read");
            let mut reader = pcap_file::pcapng::PcapNgReader::new(&data[..]).expect("pcapng");
            let mut names = Vec::new();
            while let Some(block) = reader.next_block() {
                if let pcap_file::pcapng::Block::InterfaceDescription(idb) = block.expect("block") {
                    for o in idb.options {
                        if let InterfaceDescriptionOption::IfName(n) = o {
                            names.push(n.into_owned());
                        }
                    }
                }
            }
            assert_eq!(names, ["web/eth0", "db/lo"], "{}", file.display());
        }
    }

    #[test]
    fn packet_blocks_read_back_with_pcap_file() {
        let dir = std::env::temp_dir().join(format!("pw-pcapng-epb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("cap.pcapng");
        let mut out =
            PcapngOut::new(Destination::File { path: path.clone(), max_bytes: 0, max_age: None }).expect("open");
        out.add_interface(1, 2, info("web/eth0")).expect("idb");
        out.add_interface(1, 3, info("web/lo")).expect("idb");
        // Every padding length, copied and written in place (512 bytes and
        // up), and more in-place frames than one writev takes.
        let sizes = (1..=9).chain(509..=515).chain(std::iter::repeat_n(700, 1200));
        let frames: Vec<Vec<u8>> = sizes.map(|n: usize| (0..n).map(|b| b as u8).collect()).collect();
        let metas: Vec<PacketMeta> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut m = meta(if i % 2 == 0 { 2 } else { 3 });
                m.timestamp_ns += i as u64;
                m.original_len = f.len() as u32 + 100;
                m
            })
            .collect();
        assert!(out.write(1, &metas[0], &frames[0]).expect("write"));
        let rest = metas[1..].iter().zip(frames[1..].iter().map(Vec::as_slice));
        assert_eq!(out.write_frames(1, rest).expect("write"), frames.len() as u64 - 1);
        out.flush().expect("flush");
        drop(out);
        let data = std::fs::read(&path).expect("read");
        let mut reader = pcap_file::pcapng::PcapNgReader::new(&data[..]).expect("pcapng");
        let mut seen = Vec::new();
        while let Some(block) = reader.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(epb) = block.expect("a valid block") {
                seen.push((epb.interface_id, epb.timestamp.as_nanos() as u64, epb.original_len, epb.data.into_owned()));
            }
        }
        let want: Vec<_> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| ((i % 2) as u32, 1_700_000_000_123_456_789 + i as u64, f.len() as u32 + 100, f.clone()))
            .collect();
        assert_eq!(seen, want);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
