//! SHA-256 of file contents: streaming over a whole file, or incremental over the writes the
//! daemon saw.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub type Sha256Hash = [u8; 32];

const CHUNK: usize = 1 << 20;

/// Hashes a whole file from offset 0 (positional reads, so a shared descriptor is not moved).
/// Returns the hash and the number of bytes hashed.
pub fn hash_file(file: &File) -> io::Result<(Sha256Hash, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = match file.read_at(&mut buf, off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok((h.finalize().into(), off))
}

/// A hash fed by writes, valid only while they arrive in order from offset 0.
#[derive(Clone, Default)]
pub struct Incremental {
    state: Option<(Sha256, u64)>,
}

impl Incremental {
    /// Starts over for an empty file.
    pub fn reset(&mut self) {
        self.state = Some((Sha256::new(), 0));
    }

    /// Gives up: the contents must be read in full.
    pub fn invalidate(&mut self) {
        self.state = None;
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        match &mut self.state {
            Some((h, next)) if *next == offset => {
                h.update(data);
                *next += data.len() as u64;
            }
            _ => self.state = None,
        }
    }

    /// The hash, if every byte of a file of `size` bytes went through `write`.
    pub fn finish(&self, size: u64) -> Option<Sha256Hash> {
        match &self.state {
            Some((h, next)) if *next == size => Some(h.clone().finalize().into()),
            _ => None,
        }
    }
}

pub fn to_hex(h: &Sha256Hash) -> String {
    hex::encode(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sha(data: &[u8]) -> Sha256Hash {
        Sha256::digest(data).into()
    }

    #[test]
    fn whole_file_matches_digest() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        assert_eq!(hash_file(&f).unwrap(), (sha(&data), data.len() as u64));
    }

    #[test]
    fn incremental_in_order_matches() {
        let mut inc = Incremental::default();
        inc.reset();
        inc.write(0, b"hello ");
        inc.write(6, b"world");
        assert_eq!(inc.finish(11), Some(sha(b"hello world")));
        assert_eq!(inc.finish(12), None, "size mismatch means bytes not seen");
    }

    #[test]
    fn incremental_out_of_order_gives_up() {
        let mut inc = Incremental::default();
        inc.reset();
        inc.write(0, b"abc");
        inc.write(10, b"x");
        inc.write(3, b"def");
        assert_eq!(inc.finish(6), None);
    }
}
