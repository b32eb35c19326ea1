//! Links the WinFsp DLL, delay-loaded, into Windows builds; does nothing
//! for other targets.
//!
//! WinFsp's DLL lives in `<InstallDir>\bin`, which is not on the DLL search
//! path, so a WinFsp program links it delay-loaded and loads it itself
//! before the first WinFsp call (the session does, from the install
//! directory the registry names): `replicafs.exe` then starts, and says
//! "WinFsp is not installed", on a machine without it.
//!
//! The import library comes from `src/sys/windows/winfsp-x64.def` (the
//! DLL's export names, WinFsp 2.1):
//! - `x86_64-pc-windows-gnu` (mingw-w64, how CI builds it): binutils'
//!   `dlltool --output-delaylib` makes a delay-import library, and
//!   mingw-w64's `libmingwex` has the delay-load helper;
//! - `*-windows-msvc`: `lib.exe /def:` makes the import library and the
//!   linker's `/DELAYLOAD` does the rest (run from a Visual Studio
//!   developer prompt, where `lib.exe` is on PATH).

use std::path::PathBuf;
use std::process::Command;

const DEF: &str = "src/sys/windows/winfsp-x64.def";
const DLL: &str = "winfsp-x64.dll";

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {what} (needed to link WinFsp): {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

fn main() {
    println!("cargo:rerun-if-changed={DEF}");
    println!("cargo:rerun-if-env-changed=DLLTOOL");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "windows" || var("CARGO_CFG_TARGET_ARCH") != "x86_64" {
        return;
    }
    let out = PathBuf::from(var("OUT_DIR"));
    let def = PathBuf::from(var("CARGO_MANIFEST_DIR")).join(DEF);
    println!("cargo:rustc-link-search=native={}", out.display());
    if var("CARGO_CFG_TARGET_ENV") == "msvc" {
        run(
            Command::new("lib.exe")
                .arg(format!("/def:{}", def.display()))
                .arg("/machine:x64")
                .arg(format!("/out:{}", out.join("winfsp-x64.lib").display())),
            "lib.exe",
        );
        println!("cargo:rustc-link-arg=winfsp-x64.lib");
        println!("cargo:rustc-link-arg=delayimp.lib");
        println!("cargo:rustc-link-arg=/DELAYLOAD:{DLL}");
        return;
    }
    let dlltool = std::env::var("DLLTOOL").unwrap_or_else(|_| "x86_64-w64-mingw32-dlltool".into());
    run(
        Command::new(&dlltool)
            .arg("--input-def")
            .arg(&def)
            .args(["--dllname", DLL, "--output-delaylib"])
            .arg(out.join("libwinfsp-x64-delay.a")),
        &dlltool,
    );
    // Link *arguments*, which come after the dependencies' rlibs on the
    // command line (a `rustc-link-lib` would come before them, and GNU ld
    // would leave the winfsp crate's references unresolved). The delay-load
    // helper (`__delayLoadHelper2`) is in libmingwex, and it calls kernel32.
    println!("cargo:rustc-link-arg=-lwinfsp-x64-delay");
    println!("cargo:rustc-link-arg=-lmingwex");
    println!("cargo:rustc-link-arg=-lkernel32");
}
