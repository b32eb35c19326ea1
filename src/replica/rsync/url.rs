//! The address of an rsync daemon target, parsed from the command line or
//! the config into this type.

use std::fmt;

use crate::error::{Error, Result};

/// `rsync://[USER@]HOST[:PORT]/MODULE[/PATH]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub module: String,
    pub path: String,
}

impl fmt::Display for RsyncUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rsync://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if self.port != 873 {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/{}", self.module)?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

/// What a TARGET written as text is: a remote one (`Some`, parsed or
/// refused) or a local directory (`None`).
///
/// Remote: `rsync://...`; rsync's own daemon form
/// `[USER@]HOST::MODULE[/PATH]`, which means
/// `rsync://[USER@]HOST/MODULE[/PATH]`; and, refused with the form to
/// write instead rather than taken for a directory of that name, anything
/// else that looks like a URL or a remote: another `SCHEME://`, `rsync:`
/// without the two slashes, and rsync's remote-shell form `HOST:PATH`.
/// A directory whose name really looks like that is written `./NAME`.
pub fn remote_target(s: &str) -> Option<Result<RsyncUrl>> {
    let form = "rsync://[USER@]HOST[:PORT]/MODULE[/PATH] or [USER@]HOST::MODULE[/PATH]";
    if s.contains("://") {
        return Some(RsyncUrl::parse(s));
    }
    if let Some((authority, path)) = daemon_form(s) {
        return Some(RsyncUrl::parse_parts(s, authority, path));
    }
    if s.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("rsync:")) {
        let rest = s[6..].trim_start_matches('/');
        return Some(Err(Error::invalid(format!(
            "target '{s}': not an rsync URL; write rsync://{rest} (rsync://HOST/MODULE[/PATH])"
        ))));
    }
    // HOST:PATH, the colon before any slash. A one-letter HOST is a
    // Windows drive (C:\x, C:x), which stays local.
    let before_slash = s.split(['/', '\\']).next().unwrap_or("");
    if let Some((host, _)) = before_slash.split_once(':') {
        if host.len() > 1 {
            return Some(Err(Error::invalid(format!(
                "target '{s}': HOST:PATH (rsync over a remote shell) is not supported; \
                 give an rsync daemon as {form}, or a directory named so as ./{s}"
            ))));
        }
    }
    None
}

/// `[USER@]HOST::MODULE[/PATH]` split at the `::` (outside an IPv6
/// `[...]`), when `s` is written so.
fn daemon_form(s: &str) -> Option<(&str, &str)> {
    let first = s.find("::")?;
    let at = match s.find('[') {
        // An IPv6 host: its own colons are not the separator.
        Some(open) if open < first => {
            let close = open + s[open..].find(']')?;
            close + s[close..].find("::")?
        }
        _ => first,
    };
    let authority = &s[..at];
    if authority.is_empty() || authority.contains(['/', '\\']) {
        return None;
    }
    Some((authority, &s[at + 2..]))
}

impl RsyncUrl {
    /// Parses `rsync://[USER@]HOST[:PORT]/MODULE[/PATH]`.
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s.strip_prefix("rsync://").ok_or_else(|| {
            Error::invalid(format!(
                "target '{s}': not an rsync:// URL (expected rsync://[USER@]HOST[:PORT]/MODULE[/PATH])"
            ))
        })?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| {
            Error::invalid(format!(
                "target '{s}': no module (expected rsync://[USER@]HOST[:PORT]/MODULE[/PATH])"
            ))
        })?;
        Self::parse_parts(s, authority, path)
    }

    /// `[USER@]HOST[:PORT]` and `MODULE[/PATH]`, from `s` as the user wrote it.
    fn parse_parts(s: &str, authority: &str, path: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "target '{s}': {why} (expected rsync://[USER@]HOST[:PORT]/MODULE[/PATH])"
            ))
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad("empty user name before '@'")),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in host"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad("junk after ']' in host")),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 873,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("port '{p}' is not a number from 1 to 65535")))?,
        };
        let path = path.trim_end_matches('/');
        let (module, sub) = path.split_once('/').unwrap_or((path, ""));
        check_module(module).map_err(|why| bad(&why))?;
        let sub = sub.trim_matches('/');
        if sub.split('/').any(|c| c == "..") {
            return Err(bad("'..' in the path"));
        }
        Ok(RsyncUrl {
            user,
            host: host.to_string(),
            port,
            module: module.to_string(),
            path: sub.to_string(),
        })
    }
}

/// A module name as an rsync daemon can define it (`[NAME]` in
/// rsyncd.conf: no `/` or `]`, no leading or trailing blanks), and not a
/// path component that climbs: `.` and `..` are refused like `..` in the
/// path, as are blanks and control characters anywhere.
fn check_module(module: &str) -> std::result::Result<(), String> {
    if module.is_empty() {
        return Err("no module".into());
    }
    if module == "." || module == ".." {
        return Err(format!("module '{module}' is not a module name"));
    }
    if let Some(c) = module
        .chars()
        .find(|&c| c.is_control() || c.is_whitespace() || matches!(c, '[' | ']' | '\\'))
    {
        return Err(format!(
            "module '{}' contains {c:?}, which rsync module names cannot",
            module.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_urls() {
        let u = RsyncUrl::parse("rsync://alice@backup.example:8873/mod/some/dir/").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "backup.example");
        assert_eq!(u.port, 8873);
        assert_eq!(u.module, "mod");
        assert_eq!(u.path, "some/dir");
        assert_eq!(
            u.to_string(),
            "rsync://alice@backup.example:8873/mod/some/dir"
        );
        let u = RsyncUrl::parse("rsync://[::1]/m").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 873));
        for bad in [
            "rsync://host",
            "rsync:///mod",
            "rsync://h:99999/m",
            "rsync://h:0/m",
            "rsync://h/",
            "rsync://@h/m",
            "rsync://h/m/../x",
            "rsync://h/..",
            "rsync://h/../etc",
            "rsync://h/./x",
            "rsync://h/a b",
            "rsync://h/a]",
            "rsync://h/a\tb/x",
            "http://h/m",
        ] {
            assert!(RsyncUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn targets_that_are_remote() {
        let u = remote_target("alice@nas::mirror/data/").unwrap().unwrap();
        assert_eq!(u.to_string(), "rsync://alice@nas/mirror/data");
        let u = remote_target("[::1]::m").unwrap().unwrap();
        assert_eq!((u.host.as_str(), u.module.as_str()), ("::1", "m"));
        assert!(remote_target("nas::").unwrap().is_err());
        for (bad, says) in [
            ("rsync:/host/mod", "write rsync://host/mod"),
            ("rsync:host/mod", "write rsync://host/mod"),
            ("RSYNC:/host/mod", "write rsync://host/mod"),
            ("backup:/srv", "HOST:PATH"),
            ("http://h/m", "not an rsync:// URL"),
        ] {
            let e = remote_target(bad).unwrap().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        for local in [
            "/srv/a::b",
            "./x:y",
            "rel/dir",
            "C:\\data",
            "C:/data",
            "x",
            "rsync",
        ] {
            assert!(remote_target(local).is_none(), "{local} taken as remote");
        }
    }
}
