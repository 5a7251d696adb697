//! Damage that sled's recovery passes over in silence.
//!
//! sled (0.34) keeps its data file as a log of checksummed messages in fixed-size segments, and
//! at open replays the messages written since its last snapshot, segment by segment. A message
//! whose checksum fails ends the replay of its segment, and the replay goes on with the next
//! one: the pages written in the rest of that segment fall back to older versions, and records
//! vanish without an error. (Damage at the very end of the log cuts everything after it; the
//! durable mark in [`crate::mark`] notices that.)
//!
//! This module reads the data file the way that replay does and names each such message. A
//! damaged message counts only where it cannot be a torn write of a crash: it lies below the
//! newest segment header's stable point (all of it was once synced), and the message right after
//! it reads well (so the rest of the segment is real data, not an old one's leftovers).
//!
//! Whatever opens the store next lets sled write to it, and sled may reuse the damaged segment,
//! wiping the evidence but not bringing back what was lost. So what is found is also recorded
//! beside the store (the file `log-damage`) and stays found until `roost admin repair`.
//!
//! The format is sled 0.34's, which this workspace pins: a segment header of 20 bytes (checksum,
//! the segment's first LSN and the stable LSN when it began, each XOR-masked); then messages,
//! each a header (checksum of header and body, kind, and varints for length, segment number and
//! page) followed by its body.

use std::{fs::File, io::Write, os::unix::fs::FileExt, path::Path};

const SEGMENT_HEADER_LEN: usize = 20;
/// sled writes no message header closer than this to a segment's end.
const MAX_MESSAGE_HEADER_LEN: usize = 32;
const DEFAULT_SEGMENT_SIZE: usize = 512 * 1024;
const LSN_MASK: i64 = 0x7FFF_FFFF_FFFF_FFFF;

/// Message kinds that matter here; kinds above `HIGHEST_KIND` do not exist.
const KIND_CORRUPTED: u8 = 0;
const KIND_CAP: u8 = 2;
const HIGHEST_KIND: u8 = 11;

/// A damaged place in the data file, by byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LogDamage {
    pub offset: u64,
}

/// One segment of the data file, read whole.
struct Segment<'a> {
    offset: u64,
    lsn: i64,
    bytes: &'a [u8],
}

const RECORD: &str = "log-damage";

/// The damage found in the data file (in `sled_dir`) now or recorded by an earlier look (in the
/// store directory `path`), recording what is new.
pub(crate) fn found_damage(path: &Path, sled_dir: &Path) -> std::io::Result<Vec<LogDamage>> {
    let mut damage = recorded(path);
    let found = damaged_messages(sled_dir)?;
    if found.iter().any(|d| !damage.contains(d)) {
        damage.extend(found);
        damage.sort_by_key(|d| d.offset);
        damage.dedup();
        let lines: String = damage.iter().map(|d| format!("{}\n", d.offset)).collect();
        let file = File::create(path.join(RECORD))?;
        (&file).write_all(lines.as_bytes())?;
        file.sync_all()?;
    }
    Ok(damage)
}

/// Forgets the damage recorded: the data file it was found in was replaced by a fresh one.
pub(crate) fn forget_recorded(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path.join(RECORD)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn recorded(path: &Path) -> Vec<LogDamage> {
    std::fs::read_to_string(path.join(RECORD))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .map(|offset| LogDamage { offset })
        .collect()
}

/// Reads the data file `db` in `path` and lists every damaged message sled's replay would skip
/// past. A store without a data file has none.
fn damaged_messages(path: &Path) -> std::io::Result<Vec<LogDamage>> {
    let file = match File::open(path.join("db")) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let segment_size = segment_size(path);
    let length = file.metadata()?.len();
    // The headers first, for the newest one's stable point; then the segments one at a time,
    // so a large store is never held in memory.
    let mut valid = Vec::new();
    let mut damage = Vec::new();
    let mut stable = -1;
    for offset in (0..length).step_by(segment_size) {
        let mut header = [0; SEGMENT_HEADER_LEN];
        let header = &mut header[..(length - offset).min(SEGMENT_HEADER_LEN as u64) as usize];
        file.read_exact_at(header, offset)?;
        match segment_header(header) {
            Header::Valid {
                lsn,
                max_stable_lsn,
            } => {
                stable = stable.max(max_stable_lsn);
                valid.push((offset, lsn));
            }
            Header::Unused => {}
            // sled would not read this segment at all, and lose whatever it held.
            Header::Damaged => damage.push(LogDamage { offset }),
        }
    }
    let mut bytes = Vec::new();
    for (offset, lsn) in valid {
        bytes.resize(segment_size.min((length - offset) as usize), 0);
        file.read_exact_at(&mut bytes, offset)?;
        let segment = Segment {
            offset,
            lsn,
            bytes: &bytes,
        };
        damage.extend(damage_in(&segment, segment_size, stable));
    }
    damage.sort_by_key(|d| d.offset);
    Ok(damage)
}

/// The segment size sled was opened with, from its `conf` file (sled's default otherwise).
fn segment_size(path: &Path) -> usize {
    std::fs::read_to_string(path.join("conf"))
        .ok()
        .and_then(|conf| {
            conf.lines()
                .find_map(|line| line.strip_prefix("segment_size:"))
                .and_then(|size| size.trim().parse().ok())
        })
        .filter(|&size| size > SEGMENT_HEADER_LEN + MAX_MESSAGE_HEADER_LEN)
        .unwrap_or(DEFAULT_SEGMENT_SIZE)
}

enum Header {
    Valid {
        lsn: i64,
        max_stable_lsn: i64,
    },
    /// Never written, or blanked by sled itself.
    Unused,
    Damaged,
}

fn segment_header(bytes: &[u8]) -> Header {
    let Some(header) = bytes.get(..SEGMENT_HEADER_LEN) else {
        return Header::Unused;
    };
    let stored = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) ^ 0xFFFF_FFFF;
    if crc32fast::hash(&header[4..]) == stored {
        let lsn = i64::from_le_bytes(header[4..12].try_into().expect("8 bytes")) ^ LSN_MASK;
        let max_stable_lsn =
            i64::from_le_bytes(header[12..20].try_into().expect("8 bytes")) ^ LSN_MASK;
        Header::Valid {
            lsn,
            max_stable_lsn,
        }
    } else if header.iter().all(|&b| b == 0) {
        Header::Unused
    } else {
        Header::Damaged
    }
}

/// Walks a segment's messages as sled's replay does, from its header to its cap.
fn damage_in(segment: &Segment, segment_size: usize, stable: i64) -> Vec<LogDamage> {
    let number = segment.lsn as u64 / segment_size as u64;
    let mut damage = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at + MAX_MESSAGE_HEADER_LEN <= segment.bytes.len() {
        match read_message(segment.bytes, at, number) {
            Message::Valid { kind, next } => {
                if kind == KIND_CAP {
                    break;
                }
                at = next;
            }
            Message::End => break,
            Message::Bad { next } => {
                let lsn = segment.lsn + at as i64;
                let more_follows = next.is_some_and(|next| {
                    matches!(
                        read_message(segment.bytes, next, number),
                        Message::Valid { .. }
                    )
                });
                if lsn >= stable || !more_follows {
                    break;
                }
                damage.push(LogDamage {
                    offset: segment.offset + at as u64,
                });
                at = next.expect("checked above");
            }
        }
    }
    damage
}

enum Message {
    Valid {
        kind: u8,
        next: usize,
    },
    /// The blank sled leaves after the last message it wrote.
    End,
    /// Unreadable; `next` is where the message after it would start, if its length is usable.
    Bad {
        next: Option<usize>,
    },
}

fn read_message(bytes: &[u8], at: usize, segment_number: u64) -> Message {
    if at + MAX_MESSAGE_HEADER_LEN > bytes.len() {
        return Message::End;
    }
    let header = &bytes[at..];
    let crc = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let kind = header[4];
    if kind == KIND_CORRUPTED && crc == 0 {
        return Message::End;
    }
    let mut rest = &header[5..];
    let (Some(len), Some(number), Some(_page)) =
        (varint(&mut rest), varint(&mut rest), varint(&mut rest))
    else {
        return Message::Bad { next: None };
    };
    let header_len = header.len() - rest.len();
    let body_start = at + header_len;
    let next = usize::try_from(len)
        .ok()
        .and_then(|len| body_start.checked_add(len))
        .filter(|&end| end <= bytes.len());
    let Some(end) = next else {
        return Message::Bad { next: None };
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[body_start..end]);
    hasher.update(&header[4..header_len]);
    let readable = hasher.finalize() ^ 0xFFFF_FFFF == crc
        && kind != KIND_CORRUPTED
        && kind <= HIGHEST_KIND
        && number == segment_number;
    if readable {
        Message::Valid { kind, next: end }
    } else {
        Message::Bad { next }
    }
}

/// sled's variable-length integer.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let first = *buf.first()?;
    let (value, used) = match first {
        0..=240 => (u64::from(first), 1),
        241..=248 => (
            240 + 256 * (u64::from(first) - 241) + u64::from(*buf.get(1)?),
            2,
        ),
        249 => (
            2288 + 256 * u64::from(*buf.get(1)?) + u64::from(*buf.get(2)?),
            3,
        ),
        _ => {
            let size = usize::from(first) - 247;
            let mut le = [0; 8];
            le[..size].copy_from_slice(buf.get(1..=size)?);
            (u64::from_le_bytes(le), size + 1)
        }
    };
    *buf = &buf[used..];
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_store(dir: &Path, records: usize) {
        let db = sled::open(dir).unwrap();
        let tree = db.open_tree("t").unwrap();
        for n in 0..records {
            tree.insert((n as u64).to_be_bytes(), vec![n as u8; 512])
                .unwrap();
            if n % 50 == 0 {
                db.flush().unwrap();
            }
        }
        db.flush().unwrap();
    }

    /// The oldest segment of the data file: its offset, and where each of its messages starts
    /// (the last entry is its cap).
    fn oldest_segment(bytes: &[u8]) -> (usize, Vec<usize>) {
        let (offset, lsn) = (0..bytes.len())
            .step_by(DEFAULT_SEGMENT_SIZE)
            .filter_map(|offset| match segment_header(&bytes[offset..]) {
                Header::Valid { lsn, .. } => Some((offset, lsn)),
                _ => None,
            })
            .min_by_key(|&(_, lsn)| lsn)
            .unwrap();
        let segment = &bytes[offset..(offset + DEFAULT_SEGMENT_SIZE).min(bytes.len())];
        let number = lsn as u64 / DEFAULT_SEGMENT_SIZE as u64;
        let mut starts = vec![SEGMENT_HEADER_LEN];
        loop {
            let at = *starts.last().unwrap();
            match read_message(segment, at, number) {
                Message::Valid { kind: KIND_CAP, .. } => return (offset, starts),
                Message::Valid { next, .. } => starts.push(next),
                _ => panic!("segment at {offset} ends at {at} without a cap"),
            }
        }
    }

    #[test]
    fn a_sound_log_has_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), 3000);
        assert_eq!(damaged_messages(dir.path()).unwrap(), vec![]);
        // The walk reads a whole segment to its cap, not merely up to something it misreads.
        let bytes = std::fs::read(dir.path().join("db")).unwrap();
        let (_, starts) = oldest_segment(&bytes);
        assert!(starts.len() > 100, "{}", starts.len());
        // Reopened (sled blanks its tail and writes a snapshot) and written again.
        write_store(dir.path(), 3000);
        assert_eq!(damaged_messages(dir.path()).unwrap(), vec![]);
    }

    #[test]
    fn a_flipped_bit_inside_the_log_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), 3000);
        let file = dir.path().join("db");
        let mut bytes = std::fs::read(&file).unwrap();
        // The last byte of the tenth message of the oldest segment.
        let (offset, starts) = oldest_segment(&bytes);
        bytes[offset + starts[10] - 1] ^= 0x10;
        std::fs::write(&file, bytes).unwrap();
        assert_eq!(
            damaged_messages(dir.path()).unwrap(),
            vec![LogDamage {
                offset: (offset + starts[9]) as u64
            }]
        );
    }

    #[test]
    fn sled_varints_read_back() {
        for (bytes, value) in [
            (vec![7u8], 7u64),
            (vec![241, 5], 245),
            (vec![249, 1, 2], 2288 + 258),
            (vec![250, 1, 0, 1], 0x01_0001),
        ] {
            assert_eq!(varint(&mut bytes.as_slice()), Some(value));
        }
        assert_eq!(varint(&mut [250u8, 1].as_slice()), None);
    }
}
