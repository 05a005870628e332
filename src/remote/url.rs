//! The remote's address: an SFTP server, an account on it and a directory there, written as
//! `sftp://user@host[:port]/path` or scp-style `user@host:path`. Plain FTP is refused here,
//! with the reason.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a remote address was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, UrlError> {
    Err(UrlError(msg.into()))
}

/// Where the mirror goes: an SFTP server and a directory on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// Absolute, or relative to the login directory.
    pub path: String,
}

impl Remote {
    /// How known_hosts names this server: `host`, or `[host]:port` when not on 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let path = if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/~/{}", self.path)
        };
        write!(f, "sftp://{}@{}:{}{}", self.user, host, self.port, path)
    }
}

/// Recorded as its URL.
impl Serialize for Remote {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Remote {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Remote, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl FromStr for Remote {
    type Err = UrlError;

    /// `sftp://user@host[:port]/path` (a path starting `/~/` is relative to the login
    /// directory) or scp-style `user@host:path`.
    fn from_str(s: &str) -> Result<Remote, UrlError> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("ftp://") {
            return invalid(format!(
                "refusing {s}: plain FTP sends passwords and data unencrypted; use sftp://user@host/path"
            ));
        }
        if lower.starts_with("ftps://") || lower.starts_with("ftpes://") {
            return invalid(format!(
                "refusing {s}: FTPS is not supported yet; use sftp://user@host/path"
            ));
        }
        if s.chars().any(|c| c.is_control()) {
            return invalid("the remote must not contain control characters");
        }
        if let Some(rest) = lower.strip_prefix("sftp://").map(|_| &s[7..]) {
            return parse_url(rest);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return invalid(format!(
                "unsupported remote scheme '{scheme}://': ftpsync mirrors over SFTP only (sftp://user@host/path or user@host:path)"
            ));
        }
        parse_scp(s)
    }
}

fn parse_url(rest: &str) -> Result<Remote, UrlError> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (user, hostport) = split_user(authority)?;
    let (host, port) = split_port(hostport)?;
    let path = match path.strip_prefix("/~") {
        Some(home) => home.trim_start_matches('/').to_string(),
        None => path.to_string(),
    };
    finish(user, host, port, path)
}

fn parse_scp(s: &str) -> Result<Remote, UrlError> {
    let (user, rest) = split_user(s)?;
    let (host, path) = if let Some(r) = rest.strip_prefix('[') {
        let (h, p) = r
            .split_once("]:")
            .ok_or_else(|| UrlError(format!("expected [host]:path in '{s}'")))?;
        (h, p)
    } else {
        rest.split_once(':').ok_or_else(|| {
            UrlError(format!(
                "cannot parse remote '{s}': expected sftp://user@host[:port]/path or user@host:path"
            ))
        })?
    };
    finish(user, host.to_string(), 22, path.to_string())
}

fn split_user(s: &str) -> Result<(String, &str), UrlError> {
    match s.rsplit_once('@') {
        Some((u, rest)) if !u.is_empty() => Ok((u.to_string(), rest)),
        Some(_) => invalid("empty user name in remote"),
        None => Ok((default_user(), s)),
    }
}

fn default_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into())
}

fn split_port(s: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| UrlError(format!("unclosed '[' in host '{s}'")))?;
        (h, after.strip_prefix(':'))
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return invalid(format!("invalid port '{p}' (1-65535)")),
        },
    };
    Ok((host.to_string(), port))
}

fn finish(user: String, host: String, port: u16, path: String) -> Result<Remote, UrlError> {
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '%'));
    if !host_ok {
        return invalid(format!("invalid host name '{host}'"));
    }
    if user.starts_with('-') || user.chars().any(|c| c.is_whitespace() || c == '/') {
        return invalid(format!("invalid user name '{user}'"));
    }
    let path = if path.is_empty() { ".".into() } else { path };
    Ok(Remote {
        user,
        host,
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sftp_urls() {
        let r: Remote = "sftp://bob@example.org:2222/srv/data".parse().unwrap();
        assert_eq!(
            r,
            Remote {
                user: "bob".into(),
                host: "example.org".into(),
                port: 2222,
                path: "/srv/data".into()
            }
        );
        let r: Remote = "sftp://bob@[::1]/~/backup".parse().unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.path.as_str()),
            ("::1", 22, "backup")
        );
        assert_eq!(r.to_string(), "sftp://bob@[::1]:22/~/backup");
    }

    #[test]
    fn scp_style() {
        let r: Remote = "alice@host.lan:docs/x".parse().unwrap();
        assert_eq!(
            (r.user.as_str(), r.host.as_str(), r.path.as_str()),
            ("alice", "host.lan", "docs/x")
        );
        let r: Remote = "alice@[fe80::1]:/abs".parse().unwrap();
        assert_eq!((r.host.as_str(), r.path.as_str()), ("fe80::1", "/abs"));
    }

    #[test]
    fn ftp_is_refused_with_reason() {
        let e = "ftp://u@h/p".parse::<Remote>().unwrap_err().to_string();
        assert!(e.contains("unencrypted"), "{e}");
        let e = "FTPS://u@h/p".parse::<Remote>().unwrap_err().to_string();
        assert!(e.contains("not supported yet"), "{e}");
        let e = "http://u@h/p".parse::<Remote>().unwrap_err().to_string();
        assert!(e.contains("SFTP only"), "{e}");
    }

    #[test]
    fn bad_remotes() {
        for bad in [
            "sftp://u@h:0/p",
            "sftp://u@h:99999/p",
            "sftp://u@/p",
            "u@h",
            "sftp://u@h o/p",
            "u@h:p\nx",
            "-oProxyCommand=x@h:p",
        ] {
            assert!(bad.parse::<Remote>().is_err(), "{bad:?} accepted");
        }
    }
}
