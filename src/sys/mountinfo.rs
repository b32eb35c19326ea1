//! Is a path a mount point, and of what? Linux reads
//! `/proc/self/mountinfo` (a bind mount of the same filesystem has the same
//! device number, so comparing `st_dev` with the parent would miss it);
//! other systems compare device numbers.

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
}

/// The FUSE filesystem type our mounts carry.
pub const FSTYPE: &str = "fuse.replicafs";

pub use super::mounts::{find, is_mountpoint};

/// Parses mountinfo(5) text. Fields: id parent maj:min root mountpoint
/// options [optional...] - fstype source superoptions.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let mountpoint = fields.nth(4)?;
            let mut rest = fields.skip_while(|f| *f != "-");
            rest.next()?;
            let fstype = rest.next()?;
            let source = rest.next().unwrap_or("");
            Some(MountEntry {
                mountpoint: unescape(mountpoint),
                fstype: unescape(fstype),
                source: unescape(source),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:50 / /mnt/m rw,nosuid,nodev shared:2 - fuse.replicafs /src rw,user_id=0,group_id=0\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, "/mnt/parent dir");
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].fstype, FSTYPE);
        assert_eq!(m[1].source, "/src");
    }

    #[test]
    fn root_is_a_mountpoint() {
        assert!(is_mountpoint(std::path::Path::new("/")).unwrap());
    }
}
