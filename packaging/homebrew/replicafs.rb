# Homebrew formula for replicafs, for a tap (e.g. OWNER/homebrew-replicafs):
# Homebrew/core does not take formulae that need macFUSE.
#
# A TEMPLATE until the first release: OWNER, the url and the sha256 are
# placeholders. For a release tarball:
#   shasum -a 256 v0.1.0.tar.gz
# and put the result in sha256. Until then `brew install --HEAD` builds
# from the repository.
#
# macOS needs macFUSE (https://osxfuse.github.io/), a cask, installed and
# its system extension allowed before building: the build links its libfuse
# through the fuse.pc it installs in /usr/local/lib/pkgconfig.
#   brew install --cask macfuse
# Linux builds need nothing extra (pure-Rust mounting); mounting as a
# non-root user needs fusermount3 from the distribution's fuse3 package.
class Replicafs < Formula
  desc "Mirror filesystem replicating every change to targets as it happens"
  homepage "https://github.com/OWNER/replicafs"
  url "https://github.com/OWNER/replicafs/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "PLACEHOLDER_SHA256_OF_THE_v0.1.0_RELEASE_TARBALL"
  license "GPL-3.0-or-later"
  head "https://github.com/OWNER/replicafs.git", branch: "main"

  depends_on "pkgconf" => :build
  depends_on "rust" => :build

  def install
    if OS.mac?
      unless File.exist?("/usr/local/lib/pkgconfig/fuse.pc")
        odie "replicafs needs macFUSE: brew install --cask macfuse (then allow it and reboot)"
      end
      ENV.append_path "PKG_CONFIG_PATH", "/usr/local/lib/pkgconfig"
    end
    system "cargo", "install", *std_cargo_args

    doc.install "mount/README.md" => "README.mount.md"
    if OS.mac?
      pkgshare.install "mount/com.replicafs.mount.plist"
    else
      sbin.install "mount/mount.fuse.replicafs"
      pkgshare.install "mount/replicafs@.service", "mount/replicafs.conf.example"
    end
  end

  def caveats
    if OS.mac?
      <<~EOS
        replicafs mounts through macFUSE (brew install --cask macfuse).
        A launchd example to start a mount at login or boot:
          #{opt_pkgshare}/com.replicafs.mount.plist
        (see #{HOMEBREW_PREFIX}/share/doc/replicafs/README.mount.md)
      EOS
    else
      <<~EOS
        For mount -t fuse.replicafs and fstab, link the helper where mount(8)
        looks for it:
          sudo ln -s #{opt_sbin}/mount.fuse.replicafs /sbin/mount.fuse.replicafs
        A systemd unit is in #{opt_pkgshare} (see #{HOMEBREW_PREFIX}/share/doc/replicafs/README.mount.md).
      EOS
    end
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/replicafs --version")
    # Refused by name, before anything is mounted.
    (testpath/"mnt").mkpath
    output = shell_output("#{bin}/replicafs mount #{testpath}/missing #{testpath}/mnt " \
                          "--target #{testpath}/replica 2>&1", 2)
    assert_match "does not exist", output
  end
end
