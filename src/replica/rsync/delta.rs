//! The token stream for one file: block-match tokens for what the
//! daemon's basis already has, literal data for the rest.
//!
//! Two ways to decide: `known` trusts the journal's dirty ranges (a block
//! untouched by them matches the basis block at the same offset, nothing
//! to search), `search` is rsync's rolling-checksum search against the
//! daemon's block sums (a reconcile, or the redo after a checksum
//! mismatch). Both only reference a basis block at or after the position
//! being written, which is what `--inplace` requires: the receiver
//! rewrites the basis as it goes.

use std::collections::HashMap;
use std::fs::File;
use std::io;

#[cfg(test)]
use super::sums::sum1;
use super::sums::{Checksum, Rolling};
use crate::replica::tree::read_full;

/// Literal runs are sent in tokens of at most this many bytes (rsync's
/// CHUNK_SIZE, which every receiver accepts).
const CHUNK: usize = 32 * 1024;
/// Blocks with the same rolling checksum tried at one position.
const MAX_CANDIDATES: usize = 16;
/// Source bytes read per pread.
const READ: usize = 4 << 20;

/// The sum head: `count` blocks of `blength` bytes, the last `remainder`
/// bytes long when non-zero; `s2length` bytes of strong sum each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SumHead {
    pub count: i32,
    pub blength: i32,
    pub s2length: i32,
    pub remainder: i32,
}

impl SumHead {
    fn block_len(&self, i: u64) -> u64 {
        if i + 1 == self.count as u64 && self.remainder != 0 {
            self.remainder as u64
        } else {
            self.blength as u64
        }
    }
}

/// The daemon's block sums.
#[derive(Debug)]
pub struct Sums {
    pub head: SumHead,
    pub sum1: Vec<u32>,
    /// `s2length` bytes per block, concatenated.
    pub sum2: Vec<u8>,
}

/// Where tokens go: the caller frames them into the data stream.
pub trait Sink {
    fn literal(&mut self, data: &[u8]) -> io::Result<()>;
    fn matched(&mut self, block: u32) -> io::Result<()>;
}

/// What one file's delta sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub literal: u64,
    pub matched: u64,
}

fn literal(sink: &mut impl Sink, data: &[u8], sent: &mut Sent) -> io::Result<()> {
    for c in data.chunks(CHUNK) {
        sink.literal(c)?;
    }
    sent.literal += data.len() as u64;
    Ok(())
}

/// Sends `size` bytes of `src`: basis block `i` is matched when it has the
/// length of the new file's `i`-th block and no `dirty` range touches it.
/// `dirty` is sorted and non-overlapping. Every byte is read once, for the
/// whole-file checksum, which is returned.
pub fn known(
    src: &File,
    size: u64,
    head: SumHead,
    dirty: &[(u64, u64)],
    csum: Checksum,
    sink: &mut impl Sink,
) -> io::Result<(Vec<u8>, Sent)> {
    let mut sent = Sent::default();
    let mut hash = csum.file_hasher();
    let bl = head.blength.max(0) as u64;
    let count = if bl == 0 { 0 } else { head.count.max(0) as u64 };
    let step = (READ as u64)
        .checked_div(bl)
        .map_or(READ as u64, |n| n.max(1) * bl);
    let mut buf = vec![0u8; step as usize];
    let mut d = 0usize;
    let mut off = 0u64;
    while off < size {
        let want = step.min(size - off) as usize;
        let got = read_full(src, &mut buf[..want], off)?;
        let chunk = &buf[..got];
        hash.update(chunk);
        if count == 0 {
            literal(sink, chunk, &mut sent)?;
        } else {
            // Walk the blocks of this chunk; `step` is a multiple of `bl`.
            let mut pos = 0usize;
            let mut lit_from = 0usize;
            while pos < chunk.len() {
                let abs = off + pos as u64;
                let i = abs / bl;
                let len = (bl as usize).min(chunk.len() - pos);
                let end = abs + len as u64;
                while d < dirty.len() && dirty[d].1 <= abs {
                    d += 1;
                }
                let touched = d < dirty.len() && dirty[d].0 < end;
                if i < count && head.block_len(i) == len as u64 && !touched {
                    literal(sink, &chunk[lit_from..pos], &mut sent)?;
                    sink.matched(i as u32)?;
                    sent.matched += len as u64;
                    lit_from = pos + len;
                }
                pos += len;
            }
            literal(sink, &chunk[lit_from..], &mut sent)?;
        }
        if got < want {
            break; // the file shrank since it was listed
        }
        off += got as u64;
    }
    Ok((hash.finish(), sent))
}

/// rsync's delta: roll a window over `src` and match it against the
/// daemon's blocks by `sum1`, confirmed by the strong sum.
pub fn search(
    src: &File,
    size: u64,
    sums: &Sums,
    csum: Checksum,
    seed: i32,
    sink: &mut impl Sink,
) -> io::Result<(Vec<u8>, Sent)> {
    let head = sums.head;
    let bl = head.blength.max(0) as usize;
    let count = sums.sum1.len();
    if bl == 0 || count == 0 {
        return known(src, size, SumHead::default(), &[], csum, sink);
    }
    let s2 = head.s2length as usize;
    let mut table: HashMap<u32, Vec<u32>> = HashMap::with_capacity(count);
    for (i, &s) in sums.sum1.iter().enumerate() {
        table.entry(s).or_default().push(i as u32);
    }
    let mut sent = Sent::default();
    let mut hash = csum.file_hasher();
    let mut win = Window::new(src, size);
    let mut pos = 0u64; // start of the window
    let mut lit_from = 0u64;
    let mut roll: Option<Rolling> = None;
    while pos < size {
        let wlen = (bl as u64).min(size - pos) as usize;
        win.ensure(lit_from, pos + wlen as u64 + 1)?;
        let r = match roll {
            Some(r) => r,
            None => Rolling::new(win.slice(pos, wlen)),
        };
        let mut hit = None;
        if let Some(cands) = table.get(&r.value()) {
            let mut strong = None;
            // Only blocks at or after the write position may be used (in
            // place). Candidates are in block order, so the block at this
            // very offset, if it is one, comes first: the receiver then
            // need not write it at all. Repetitive data makes many blocks
            // share a checksum: trying a bounded number keeps the search
            // linear (a miss only costs literal bytes).
            let first = cands.partition_point(|&j| (u64::from(j) * (bl as u64)) < pos);
            for &j in cands[first..].iter().take(MAX_CANDIDATES) {
                if head.block_len(u64::from(j)) != wlen as u64 {
                    continue;
                }
                let st = strong.get_or_insert_with(|| csum.block(seed, win.slice(pos, wlen)));
                let want = &sums.sum2[j as usize * s2..(j as usize + 1) * s2];
                if &st[..s2] == want {
                    hit = Some(j);
                    break;
                }
            }
        }
        if let Some(j) = hit {
            let lit = win.slice(lit_from, (pos - lit_from) as usize).to_vec();
            hash.update(&lit);
            literal(sink, &lit, &mut sent)?;
            hash.update(win.slice(pos, wlen));
            sink.matched(j)?;
            sent.matched += wlen as u64;
            pos += wlen as u64;
            lit_from = pos;
            roll = None;
            continue;
        }
        let mut r = r;
        let out = win.slice(pos, 1)[0];
        if pos + (wlen as u64) < size {
            r.roll(out, win.slice(pos + wlen as u64, 1)[0]);
        } else {
            r.shrink(out);
        }
        roll = Some(r);
        pos += 1;
        // Keep literal runs bounded in memory.
        if pos - lit_from >= CHUNK as u64 {
            let lit = win.slice(lit_from, (pos - lit_from) as usize).to_vec();
            hash.update(&lit);
            literal(sink, &lit, &mut sent)?;
            lit_from = pos;
        }
    }
    if lit_from < size {
        win.ensure(lit_from, size)?;
        let lit = win.slice(lit_from, (size - lit_from) as usize).to_vec();
        hash.update(&lit);
        literal(sink, &lit, &mut sent)?;
    }
    Ok((hash.finish(), sent))
}

/// A sliding view of a file: bytes from `base` on are in `buf`.
struct Window<'a> {
    f: &'a File,
    size: u64,
    base: u64,
    buf: Vec<u8>,
}

impl<'a> Window<'a> {
    fn new(f: &'a File, size: u64) -> Self {
        Window {
            f,
            size,
            base: 0,
            buf: Vec::new(),
        }
    }

    /// Makes `[keep, end)` (cut at the file size) available.
    fn ensure(&mut self, keep: u64, end: u64) -> io::Result<()> {
        let end = end.min(self.size);
        if keep > self.base + READ as u64 {
            let drop = (keep - self.base) as usize;
            self.buf.drain(..drop);
            self.base = keep;
        }
        let have = self.base + self.buf.len() as u64;
        if end > have {
            let want = ((end - have) as usize)
                .max(READ)
                .min((self.size - have) as usize);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let got = read_full(self.f, &mut self.buf[old..], have)?;
            if got < want {
                // The file shrank under us: pad with zeros; the whole-file
                // checksum then tells the daemon, which asks again.
                self.buf[old + got..].fill(0);
            }
        }
        Ok(())
    }

    fn slice(&self, at: u64, len: usize) -> &[u8] {
        let s = (at - self.base) as usize;
        &self.buf[s..s + len]
    }
}

/// Block sums of `data` the way the daemon's generator makes them; for
/// tests of the search.
#[cfg(test)]
pub fn make_sums(data: &[u8], bl: usize, s2: usize, csum: Checksum, seed: i32) -> Sums {
    let blocks: Vec<&[u8]> = data.chunks(bl).collect();
    Sums {
        head: SumHead {
            count: blocks.len() as i32,
            blength: bl as i32,
            s2length: s2 as i32,
            remainder: (data.len() % bl) as i32,
        },
        sum1: blocks.iter().map(|b| sum1(b)).collect(),
        sum2: blocks
            .iter()
            .flat_map(|b| csum.block(seed, b)[..s2].to_vec())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// Applies tokens to a basis in place, the way the daemon's receiver
    /// does with --inplace, and checks the --inplace rule as it goes.
    struct Apply {
        basis: Vec<u8>,
        out: Vec<u8>,
        bl: usize,
        head: SumHead,
    }

    impl Sink for Apply {
        fn literal(&mut self, data: &[u8]) -> io::Result<()> {
            let at = self.out.len();
            self.out.extend_from_slice(data);
            // In place: the basis is overwritten as the file is written.
            for (k, &b) in data.iter().enumerate() {
                if at + k < self.basis.len() {
                    self.basis[at + k] = b;
                }
            }
            Ok(())
        }
        fn matched(&mut self, block: u32) -> io::Result<()> {
            let o = block as usize * self.bl;
            assert!(
                o >= self.out.len(),
                "block {block} is behind the write position"
            );
            let len = self.head.block_len(block as u64) as usize;
            let data = self.basis[o..o + len].to_vec();
            self.literal(&data)
        }
    }

    fn file(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    fn check(basis: &[u8], new: &[u8], bl: usize, dirty: Option<&[(u64, u64)]>) -> Sent {
        let csum = Checksum::Xxh128;
        let sums = make_sums(basis, bl, 16, csum, 7);
        let mut a = Apply {
            basis: basis.to_vec(),
            out: Vec::new(),
            bl,
            head: sums.head,
        };
        let f = file(new);
        let (sum, sent) = match dirty {
            Some(d) => known(&f, new.len() as u64, sums.head, d, csum, &mut a).unwrap(),
            None => search(&f, new.len() as u64, &sums, csum, 7, &mut a).unwrap(),
        };
        assert_eq!(a.out, new);
        let mut h = csum.file_hasher();
        h.update(new);
        assert_eq!(sum, h.finish());
        sent
    }

    #[test]
    fn a_small_edit_sends_only_its_blocks() {
        let basis: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let mut new = basis.clone();
        new[50_000..50_010].fill(9);
        let s = check(&basis, &new, 1000, Some(&[(50_000, 50_010)]));
        assert_eq!(s.literal, 1000);
        let s = check(&basis, &new, 1000, None);
        assert_eq!(s.literal, 1000);
    }

    #[test]
    fn an_insertion_is_found_by_the_search() {
        let basis: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = basis.clone();
        new.splice(10_000..10_000, [1u8, 2, 3]);
        let s = check(&basis, &new, 700, None);
        assert!(s.literal < 1500, "{s:?}");
    }

    proptest! {
        #[test]
        fn tokens_rebuild_the_file(
            basis in proptest::collection::vec(0u8..4, 0..3000),
            edits in proptest::collection::vec((0usize..3000, 0usize..200, any::<u8>()), 0..5),
            grow in 0usize..500,
            bl in 1usize..300,
        ) {
            let mut new = basis.clone();
            new.resize(basis.len() + grow, 5);
            let mut dirty = Vec::new();
            for (at, len, v) in edits {
                let at = at.min(new.len());
                let end = (at + len).min(new.len());
                new[at..end].fill(v);
                dirty.push((at as u64, end as u64));
            }
            if grow > 0 {
                dirty.push((basis.len() as u64, new.len() as u64));
            }
            dirty.sort();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (s, e) in dirty {
                match merged.last_mut() {
                    Some(l) if s <= l.1 => l.1 = l.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            check(&basis, &new, bl, Some(&merged));
            check(&basis, &new, bl, None);
        }
    }
}
