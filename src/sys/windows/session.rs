//! The mount on Windows: the WinFsp session.
//!
//! The stack is the Unix one with WinFsp in FUSE's place: the WinFsp
//! adapter over the recording layer over the Windows passthrough core,
//! replicating through the same engine. WinFsp's DLL is linked
//! delay-loaded (see `build.rs`) and loaded here from the directory
//! WinFsp's installer records in the registry, so `replicafs.exe` starts
//! on a machine without WinFsp and says so when asked to mount.

#![allow(unsafe_code)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use winfsp::host::{FileSystemHost, VolumeParams};

use super::mounts::FS_NAME;
use super::passthrough::Passthrough;
use super::winfsp::WinFspAdapter;
use crate::fs::MountStats;
use crate::fs::recording::Recording;
use crate::mount::{DEFAULT_THREADS, DRAIN_TIMEOUT, MountSpec, Replication};

type Stack = WinFspAdapter<Recording<Passthrough>>;

/// Where WinFsp's installer records itself (64-bit view first, then the
/// 32-bit one the installer also writes).
const WINFSP_KEYS: [&str; 2] = ["SOFTWARE\\WOW6432Node\\WinFsp", "SOFTWARE\\WinFsp"];

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// WinFsp's install directory, from the registry.
fn install_dir() -> Option<String> {
    use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RegGetValueW};
    for key in WINFSP_KEYS {
        let (key, value) = (wide(key), wide("InstallDir"));
        let mut buf = [0u16; 1024];
        let mut size = (buf.len() * 2) as u32;
        // SAFETY: the key and value names are NUL-terminated; `buf` is live
        // and `size` says its length in bytes.
        let rc = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_SZ,
                std::ptr::null_mut(),
                buf.as_mut_ptr().cast(),
                &mut size,
            )
        };
        if rc == 0 {
            let n = (size as usize / 2).saturating_sub(1);
            let mut dir = String::from_utf16_lossy(&buf[..n]);
            if !dir.ends_with('\\') {
                dir.push('\\');
            }
            return Some(dir);
        }
    }
    None
}

/// Loads WinFsp's DLL (from its install directory, else the usual search
/// path: beside the exe) and initialises the crate's bindings.
///
/// # Errors
///
/// "WinFsp is not installed", naming where it was looked for.
pub fn load_winfsp() -> io::Result<()> {
    use windows_sys::Win32::System::LibraryLoader::LoadLibraryW;
    let dir = install_dir();
    if let Some(dir) = &dir {
        let dll = wide(&format!("{dir}bin\\winfsp-x64.dll"));
        // SAFETY: the path is NUL-terminated; a loaded DLL stays loaded
        // for the life of the process, as the delay-load stubs need.
        unsafe { LoadLibraryW(dll.as_ptr()) };
    }
    winfsp::winfsp_init().map(|_| ()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "WinFsp is not installed (no winfsp-x64.dll {}; {e:?}): install it from \
                 https://winfsp.dev/rel/ and mount again",
                match &dir {
                    Some(d) => format!("in {d}bin"),
                    None => format!(
                        "beside replicafs.exe, and no InstallDir under HKLM\\{}",
                        WINFSP_KEYS[1]
                    ),
                }
            ),
        )
    })
}

fn volume_params() -> VolumeParams {
    let mut p = VolumeParams::new();
    p.filesystem_name(FS_NAME)
        .sector_size(4096)
        .sectors_per_allocation_unit(1)
        .max_component_length(255)
        // NTFS's rules: names compare without case, keep their case.
        .case_sensitive_search(false)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        // No ACLs, streams, reparse points or EAs are mapped (see the
        // adapter): the volume says so, and Windows does not send them.
        .persistent_acls(false)
        .named_streams(false)
        .reparse_points(false)
        .extended_attributes(false)
        .post_cleanup_when_modified_only(true)
        .file_info_timeout(1000)
        .volume_serial_number(0x7265_706c);
    p
}

/// A mount served by this process.
pub struct Mounted {
    host: Option<FileSystemHost<Stack>>,
    recording: Arc<Recording<Passthrough>>,
    replication: Replication,
    stats: Arc<MountStats>,
    drain_timeout: Duration,
}

impl Mounted {
    pub fn set_drain_timeout(&mut self, d: Duration) {
        self.drain_timeout = d;
    }

    pub fn stats(&self) -> &MountStats {
        &self.stats
    }

    pub fn inode_count(&self) -> usize {
        crate::fs::Vfs::inode_count(self.recording.as_ref())
    }

    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    pub fn unmount(mut self) -> io::Result<()> {
        self.take_down();
        Ok(())
    }

    fn take_down(&mut self) {
        let Some(mut host) = self.host.take() else {
            return;
        };
        host.stop();
        host.unmount();
        drop(host);
        self.replication.finish(self.drain_timeout);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.take_down();
    }
}

/// The filesystem stack for a spec, without the WinFsp host: the adapter
/// over the recording layer over the core, and the replication behind it.
///
/// # Errors
///
/// SOURCE that cannot be opened, and what starting the replication fails
/// with (the state dir, the journal, the targets).
pub fn stack(spec: &MountSpec) -> io::Result<(Stack, Arc<Recording<Passthrough>>, Replication)> {
    let core = Passthrough::new(&spec.source)?;
    let replication = Replication::start(spec)?;
    let recording = Arc::new(Recording::new(
        core,
        Arc::clone(replication.engine()),
        spec.consistency,
    ));
    Ok((
        WinFspAdapter::new(Arc::clone(&recording)),
        recording,
        replication,
    ))
}

/// Mounts `spec` and serves it from this process until the [`Mounted`] is
/// dropped or unmounted.
///
/// # Errors
///
/// WinFsp missing (or its driver not running), SOURCE or the state dir
/// unusable, the mount point taken.
pub fn spawn(spec: &MountSpec) -> io::Result<Mounted> {
    load_winfsp()?;
    let (adapter, recording, replication) = stack(spec)?;
    let mut host = FileSystemHost::<Stack>::new(volume_params(), adapter).map_err(|e| {
        let driver = if super::passthrough::nt::is_wine() {
            " (wine has no WinFsp driver)"
        } else {
            ""
        };
        io::Error::other(format!(
            "WinFsp cannot create the volume: {e}{driver}; is the WinFsp driver installed and running?"
        ))
    })?;
    let at = spec.mountpoint.as_os_str();
    host.mount(at).map_err(|e| {
        io::Error::other(format!(
            "mount {} (a free drive letter such as X:, or a directory that does not exist yet): {e}",
            spec.mountpoint.display()
        ))
    })?;
    let threads = spec.fuse.threads.unwrap_or(DEFAULT_THREADS);
    host.start_with_threads(u32::try_from(threads).unwrap_or(1))
        .map_err(|e| io::Error::other(format!("start the WinFsp dispatcher: {e}")))?;
    tracing::info!(
        "mounted {} at {}",
        spec.source.display(),
        spec.mountpoint.display()
    );
    Ok(Mounted {
        host: Some(host),
        recording,
        replication,
        stats: Arc::new(MountStats::default()),
        drain_timeout: DRAIN_TIMEOUT,
    })
}

/// Serves the mount until Ctrl+C or Ctrl+Break, or `replicafs unmount`
/// (through the control channel).
///
/// # Errors
///
/// As [`spawn`].
pub fn run_foreground(spec: &MountSpec) -> io::Result<()> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mounted = spawn(spec)?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && !mounted.replication().unmount_requested()
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("unmounting {}", spec.mountpoint.display());
    mounted.unmount()
}

/// There is no OS call that ends another process's WinFsp volume: the
/// caller (`mount::unmount`) asks the serving process instead, through
/// its control channel.
///
/// # Errors
///
/// Always Unsupported.
pub fn umount(path: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "unmount {}: on Windows the mount ends with the process serving it \
             (Ctrl+C in its console, or stopping its service)",
            path.display()
        ),
    ))
}

/// As [`umount`]: there is no lazy unmount to fall back to.
///
/// # Errors
///
/// Always.
pub fn detach(path: &Path) -> io::Result<()> {
    umount(path)
}
