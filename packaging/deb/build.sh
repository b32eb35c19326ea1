#!/bin/sh
# Builds a Debian package of replicafs with plain dpkg-deb (no cargo-deb,
# no debhelper). Run from anywhere, after `cargo build --release`:
#
#   cargo build --release
#   packaging/deb/build.sh            # -> target/debian/replicafs_VERSION_ARCH.deb
#
# Environment:
#   BIN=path         the binary to package (default target/release/replicafs)
#   OUT_DIR=dir      where the .deb goes (default target/debian)
#   MAINTAINER=...   the Maintainer field ("Name <email>"); the default is a
#                    placeholder to replace for any real distribution
#   DEB_REVISION=n   appended as VERSION-n (default: none, a native version)
#
# Contents:
#   /usr/bin/replicafs
#   /sbin/mount.fuse.replicafs             mount(8) helper (mount -t fuse.replicafs, fstab)
#   /lib/systemd/system/replicafs@.service
#   /usr/share/doc/replicafs/{README.md,README.mount.md,copyright,examples/replicafs.conf.example}

set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

die() {
    printf 'packaging/deb/build.sh: %s\n' "$*" >&2
    exit 2
}

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt install dpkg)"

bin=${BIN:-target/release/replicafs}
[ -x "$bin" ] || die "$bin not found: run 'cargo build --release' first (or set BIN=)"

# The package version is the crate's: the first `version = "..."` line of
# Cargo.toml, which is the [package] one.
version=$(sed -n 's/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no 'version = \"...\"' line in Cargo.toml"
# Cargo pre-releases (1.0.0-rc.1) sort before the release in Debian only as 1.0.0~rc.1.
version=$(printf '%s' "$version" | sed 's/-/~/')
[ -z "${DEB_REVISION:-}" ] || version="$version-$DEB_REVISION"

arch=$(dpkg --print-architecture 2>/dev/null) || arch=
if [ -z "$arch" ]; then
    case $(uname -m) in
        x86_64) arch=amd64 ;;
        aarch64) arch=arm64 ;;
        armv7l) arch=armhf ;;
        i?86) arch=i386 ;;
        riscv64) arch=riscv64 ;;
        *) die "unknown architecture $(uname -m); install dpkg" ;;
    esac
fi

maintainer=${MAINTAINER:-replicafs maintainers <maintainers@replicafs.invalid>}
out_dir=${OUT_DIR:-target/debian}
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
deb="$out_dir/replicafs_${version}_${arch}.deb"

stage=$(mktemp -d "${TMPDIR:-/tmp}/replicafs-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
pkg="$stage/pkg"
doc="$pkg/usr/share/doc/replicafs"

install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/sbin" \
    "$pkg/lib/systemd/system" "$doc/examples"

install -m 0755 "$bin" "$pkg/usr/bin/replicafs"
# Debian ships stripped binaries; the release profile keeps line tables.
if command -v strip >/dev/null; then
    strip --strip-debug --remove-section=.comment --remove-section=.note "$pkg/usr/bin/replicafs"
fi
install -m 0755 mount/mount.fuse.replicafs "$pkg/sbin/mount.fuse.replicafs"
install -m 0644 "mount/replicafs@.service" "$pkg/lib/systemd/system/replicafs@.service"
[ ! -f README.md ] || install -m 0644 README.md "$doc/README.md"
install -m 0644 mount/README.md "$doc/README.mount.md"
install -m 0644 mount/replicafs.conf.example "$doc/examples/replicafs.conf.example"

cat >"$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: replicafs

Files: *
Copyright: the replicafs authors
License: GPL-3.0-or-later

License: GPL-3.0-or-later
 This program is free software: you can redistribute it and/or modify
 it under the terms of the GNU General Public License as published by
 the Free Software Foundation, either version 3 of the License, or
 (at your option) any later version.
 .
 This program is distributed in the hope that it will be useful,
 but WITHOUT ANY WARRANTY; without even the implied warranty of
 MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
 GNU General Public License for more details.
 .
 On Debian systems, the complete text of the GNU General Public License
 version 3 can be found in "/usr/share/common-licenses/GPL-3".
EOF
chmod 0644 "$doc/copyright"

# Shared-library dependencies of the binary (libc6, libgcc-s1, with their
# minimum versions) as dpkg-shlibdeps computes them; it wants a
# debian/control to exist, so give it a minimal one in the staging dir.
shlibs=
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$stage/src/debian"
    printf 'Source: replicafs\n\nPackage: replicafs\nArchitecture: any\n' >"$stage/src/debian/control"
    shlibs=$(cd "$stage/src" && dpkg-shlibdeps -O "$pkg/usr/bin/replicafs" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p') || shlibs=
fi
[ -n "$shlibs" ] || shlibs=libc6
depends="fuse3, $shlibs"

installed_size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)

cat >"$pkg/DEBIAN/control" <<EOF
Package: replicafs
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Section: utils
Priority: optional
License: GPL-3.0-or-later
Description: mirror filesystem replicating every change as it happens
 replicafs mounts a FUSE filesystem over a source directory, passes every
 operation through to it, and replicates each change made through the
 mount to one or more targets (local directories or rsync daemons).
 .
 Mount with "replicafs mount", with "mount -t fuse.replicafs" or an
 /etc/fstab line (helper /sbin/mount.fuse.replicafs), or as a systemd
 service (replicafs@.service); see /usr/share/doc/replicafs/README.mount.md.
EOF

# Tell a running systemd about the new unit (what debhelper would add).
cat >"$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
EOF
cat >"$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/postrm"

(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums" "$pkg/DEBIAN/control"

dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
printf '%s\n' "$deb"
