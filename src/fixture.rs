//! Mounted fixtures for tests, ours and other projects': a temporary
//! SOURCE, MOUNTPOINT and TARGET, a live mount between them, unmounted on
//! drop (also when the test panics).
//!
//! ```no_run
//! let fx = replicafs::fixture::Fixture::new().expect("mount");
//! std::fs::write(fx.mnt().join("hello"), b"hi").unwrap();
//! assert_eq!(std::fs::read(fx.source().join("hello")).unwrap(), b"hi");
//! ```

use std::io;
use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::backend::IoChoice;
use crate::config::{FuseMountOptions, Target};
use crate::mount::{MountSpec, Mounted};
use crate::sync::policy::Consistency;
use crate::sync::policy::TargetDown;

pub struct Fixture {
    // Field order matters: the mount goes before its directories.
    mounted: Option<Mounted>,
    source: PathBuf,
    mnt: PathBuf,
    target: PathBuf,
    _dir: tempfile::TempDir,
}

/// Builder for a [`Fixture`] with mount options.
#[derive(Debug, Clone)]
pub struct FixtureBuilder {
    options: FuseMountOptions,
    world_traversable: bool,
    consistency: Consistency,
    on_target_down: Option<TargetDown>,
    state_dir: Option<PathBuf>,
    remote: Option<Remote>,
    drain_timeout: Option<Duration>,
}

/// An rsync daemon module as the fixture's target.
#[derive(Debug, Clone)]
struct Remote {
    url: crate::replica::rsync::RsyncUrl,
    password_file: Option<PathBuf>,
    /// Where the module's files are on this machine, for `target()` and
    /// `verify()`.
    local: PathBuf,
}

impl Default for FixtureBuilder {
    fn default() -> Self {
        FixtureBuilder {
            options: FuseMountOptions::default(),
            world_traversable: false,
            consistency: Consistency::Fsync,
            on_target_down: None,
            state_dir: None,
            remote: None,
            drain_timeout: None,
        }
    }
}

impl FixtureBuilder {
    /// `-o` options, as on the command line (e.g. "allow_other").
    pub fn options(mut self, opts: &str) -> io::Result<Self> {
        self.options = FuseMountOptions::parse(&[opts.to_string()])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(self)
    }

    /// Make the fixture's directories reachable by every user (mode 0755),
    /// for tests that act as other users.
    pub fn world_traversable(mut self) -> Self {
        self.world_traversable = true;
        self
    }

    /// When writes return relative to the target (default fsync).
    pub fn consistency(mut self, c: Consistency) -> Self {
        self.consistency = c;
        self
    }

    /// What fsync does while the target is down (default as the CLI's:
    /// degrade, block in sync mode).
    pub fn on_target_down(mut self, p: TargetDown) -> Self {
        self.on_target_down = Some(p);
        self
    }

    /// Replicate to an rsync daemon (`rsync://...`) instead of a
    /// directory; `local` is the module's directory on this machine, which
    /// `target()` and `verify()` then use.
    pub fn rsync_target(
        mut self,
        url: &str,
        password_file: Option<PathBuf>,
        local: &Path,
    ) -> io::Result<Self> {
        let url = crate::replica::rsync::RsyncUrl::parse(url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.remote = Some(Remote {
            url,
            password_file,
            local: local.to_path_buf(),
        });
        Ok(self)
    }

    /// How long dropping the fixture waits for the target to take what is
    /// pending (default a minute): short for tests of a failing target.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = Some(d);
        self
    }

    pub fn mount(self) -> io::Result<Fixture> {
        fuse_available().map_err(io::Error::other)?;
        let dir = tempfile::Builder::new().prefix("replicafs-fx").tempdir()?;
        let source = dir.path().join("source");
        let mnt = dir.path().join("mnt");
        let target = dir.path().join("target");
        for d in [&source, &mnt, &target] {
            std::fs::create_dir(d)?;
        }
        if self.world_traversable {
            for d in [dir.path(), &source, &mnt, &target] {
                crate::sys::make_world_traversable(d)?;
            }
        }
        let state = self.state_dir.unwrap_or_else(|| dir.path().join("state"));
        let (targets, target, password_file) = match self.remote {
            Some(r) => (vec![Target::Rsync(r.url)], r.local, r.password_file),
            None => (vec![Target::Dir(target.clone())], target, None),
        };
        let spec = MountSpec {
            source: source.canonicalize()?,
            mountpoint: mnt.canonicalize()?,
            fuse: self.options,
            targets,
            consistency: self.consistency,
            on_target_down: self.on_target_down.unwrap_or(TargetDown::default_for(
                self.consistency == Consistency::Sync,
            )),
            io: IoChoice::Auto,
            state_dir: state,
            password_file,
        };
        let mut mounted = crate::mount::spawn(&spec)?;
        if let Some(d) = self.drain_timeout {
            mounted.set_drain_timeout(d);
        }
        Ok(Fixture {
            mounted: Some(mounted),
            source: spec.source,
            mnt: spec.mountpoint,
            target,
            _dir: dir,
        })
    }
}

impl Fixture {
    /// A fixture with default options.
    pub fn new() -> io::Result<Self> {
        Self::builder().mount()
    }

    pub fn builder() -> FixtureBuilder {
        FixtureBuilder::default()
    }

    /// The directory the mount passes through to.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The mount itself.
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// Where replicas go.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The mount's statistics (largest requests seen, ...).
    /// Inodes the kernel holds references to.
    pub fn inode_count(&self) -> usize {
        self.mounted
            .as_ref()
            .expect("mounted until dropped")
            .inode_count()
    }

    pub fn stats(&self) -> &crate::fs::MountStats {
        self.mounted
            .as_ref()
            .expect("mounted until dropped")
            .stats()
    }

    /// Waits until the target holds every change made so far (a barrier,
    /// like `replicafs sync`).
    pub fn sync(&self) -> Result<(), String> {
        self.mounted
            .as_ref()
            .expect("mounted until dropped")
            .replication()
            .drain(Duration::from_secs(60))
    }

    /// Differences between SOURCE and the target, one line each (empty:
    /// identical), as `replicafs verify` reports them.
    pub fn verify(&self) -> io::Result<Vec<String>> {
        crate::verify::compare(&self.source, &self.target)
    }

    /// The replication engine, for status and barriers.
    pub fn engine(&self) -> &std::sync::Arc<crate::sync::Engine> {
        self.mounted
            .as_ref()
            .expect("mounted until dropped")
            .replication()
            .engine()
    }

    /// Unmounts now, reporting failure (drop only logs it).
    pub fn unmount(mut self) -> io::Result<()> {
        match self.mounted.take() {
            Some(m) => m.unmount(),
            None => Ok(()),
        }
    }
}

/// Whether this process can mount (FUSE on Unix); the error says why not.
pub fn fuse_available() -> Result<(), String> {
    crate::sys::mount_available()
}
