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

impl RsyncUrl {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "target '{s}': {why} (expected rsync://[USER@]HOST[:PORT]/MODULE[/PATH])"
            ))
        };
        let rest = s
            .strip_prefix("rsync://")
            .ok_or_else(|| bad("not an rsync:// URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no module"))?;
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
}
