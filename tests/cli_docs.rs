//! The command line documents itself: every argument has help text,
//! `--help` names the environment variables replicafs reads, and the
//! completion scripts and man pages the packages install are generated
//! by the binary from the same definitions.

use std::process::Command;

use clap::CommandFactory;
use replicafs::cli::Cli;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_replicafs"))
}

/// Every argument of every command, with the path of commands to it,
/// that has no help text.
fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    let path = format!("{path} {}", cmd.get_name()).trim().to_string();
    if cmd.get_about().is_none() && cmd.get_long_about().is_none() {
        out.push(format!("{path}: the command itself"));
    }
    for arg in cmd.get_arguments() {
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            out.push(format!("{path}: {}", arg.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        undocumented(sub, &path, out);
    }
}

#[test]
fn every_argument_has_help() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    undocumented(&cmd, "", &mut missing);
    assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
}

#[test]
fn help_lists_the_environment() {
    for args in [&["--help"][..], &["mount", "--help"], &["mount", "-h"]] {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for var in [
            "RSYNC_PASSWORD",
            "REPLICAFS_LOG",
            "REPLICAFS_IO",
            "REPLICAFS_NO_WATCH",
            "REPLICAFS_BARRIER_TIMEOUT",
            "XDG_STATE_HOME",
        ] {
            assert!(text.contains(var), "{args:?} does not name {var}:\n{text}");
        }
    }
    // And the variables named are the ones the code reads.
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut read = Vec::new();
    let mut todo = vec![std::path::PathBuf::from(src)];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split('"').skip(1).step_by(2) {
                    if part.starts_with("REPLICAFS_")
                        && part.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    {
                        read.push(part.to_string());
                    }
                }
            }
        }
    }
    assert!(read.contains(&"REPLICAFS_NO_WATCH".to_string()), "{read:?}");
    let help = replicafs::cli::ENVIRONMENT;
    for var in read {
        assert!(help.contains(&var), "{var} is read but not in --help");
    }
}

#[test]
fn completions_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in [
            "mount",
            "sync",
            "status",
            "verify",
            "unmount",
            "create-target",
        ] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().arg("man").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    for name in [
        "replicafs",
        "replicafs-mount",
        "replicafs-sync",
        "replicafs-status",
        "replicafs-verify",
        "replicafs-unmount",
        "replicafs-completions",
    ] {
        let page = dir.path().join(format!("{name}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!(".TH {name} 1"))),
            "{name}.1 has no .TH header:\n{text}"
        );
        assert!(text.contains(".SH NAME"), "{name}.1 has no NAME section");
    }
    let mount = std::fs::read_to_string(dir.path().join("replicafs-mount.1")).unwrap();
    assert!(mount.contains("create\\-target"), "{mount}");
    assert!(
        mount.contains("RSYNC_PASSWORD"),
        "mount page lacks the environment"
    );
    // The hidden `man` command has no page of its own.
    assert!(!dir.path().join("replicafs-man.1").exists());
    // A directory that is not there is named.
    let out = bin().args(["man", "/nonexistent/man"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/man"));
}
