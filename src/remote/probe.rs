//! What a server offers, read from its cleartext KEXINIT, so a handshake that failed on the
//! algorithm policy can say which algorithms the server offered. libssh2 does not tell.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The server's name-lists, client-to-server direction (OpenSSH offers the same both ways).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offered {
    pub kex: Vec<String>,
    pub host_key: Vec<String>,
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
}

const SSH_MSG_KEXINIT: u8 = 20;

/// Connects, exchanges banners and reads the server's first packet (its KEXINIT, sent before
/// any key exchange, in the clear).
pub fn offered(addr: SocketAddr, timeout: Duration) -> std::io::Result<Offered> {
    let mut tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.write_all(b"SSH-2.0-ftpsync_probe\r\n")?;
    let mut rd = BufReader::new(tcp);
    // RFC 4253 4.2: the server may send other lines before its version line.
    for _ in 0..32 {
        let mut line = Vec::new();
        rd.by_ref().take(512).read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(invalid("connection closed before the SSH banner"));
        }
        if line.starts_with(b"SSH-") {
            let payload = read_packet(&mut rd)?;
            return parse_kexinit(&payload).ok_or_else(|| invalid("malformed KEXINIT"));
        }
    }
    Err(invalid("no SSH banner"))
}

fn read_packet(rd: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 5];
    rd.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let pad = head[4] as usize;
    if !(pad + 1..=64 * 1024).contains(&len) {
        return Err(invalid("bad packet length"));
    }
    let mut body = vec![0u8; len - 1];
    rd.read_exact(&mut body)?;
    body.truncate(len - 1 - pad);
    Ok(body)
}

/// Parses a KEXINIT payload: type, 16-byte cookie, then name-lists.
pub fn parse_kexinit(payload: &[u8]) -> Option<Offered> {
    let rest = payload.strip_prefix(&[SSH_MSG_KEXINIT])?;
    let mut rest = rest.get(16..)?;
    let mut lists = Vec::with_capacity(6);
    for _ in 0..6 {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let text = std::str::from_utf8(rest.get(4..4 + len)?).ok()?;
        lists.push(
            text.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
        rest = &rest[4 + len..];
    }
    let mut it = lists.into_iter();
    let kex = it.next()?;
    let host_key = it.next()?;
    let ciphers = it.next()?;
    let _ciphers_sc = it.next()?;
    let macs = it.next()?;
    Some(Offered {
        // Markers such as kex-strict-s-v00@openssh.com and ext-info-s are not algorithms.
        kex: kex
            .into_iter()
            .filter(|k| !k.starts_with("kex-strict-") && !k.starts_with("ext-info-"))
            .collect(),
        host_key,
        ciphers,
        macs,
    })
}

/// Whether the server offers an AEAD cipher that the policy allows.
fn common_aead(offered: &[String], policy: &[(&str, &str)]) -> bool {
    let allowed = policy
        .iter()
        .find(|(what, _)| *what == "cipher")
        .map_or("", |(_, list)| *list);
    offered.iter().any(|c| {
        (c.contains("-gcm@") || c.starts_with("chacha20-poly1305"))
            && allowed.split(',').any(|a| a == c)
    })
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Explains which categories have nothing in common with the policy, e.g. "no common cipher:
/// the server offers aes128-cbc; ftpsync allows chacha20-poly1305@openssh.com, ...". Empty when
/// every category overlaps (the failure was something else).
pub fn explain(offered: &Offered, policy: &[(&str, &str)]) -> String {
    let lists = [
        &offered.kex,
        &offered.host_key,
        &offered.ciphers,
        &offered.macs,
    ];
    // An AEAD cipher carries its own integrity: no MAC needs to be agreed then.
    let aead = common_aead(&offered.ciphers, policy);
    let mut parts = Vec::new();
    for ((what, allowed), offered) in policy.iter().zip(lists) {
        let allowed: Vec<&str> = allowed.split(',').collect();
        let common = offered.iter().any(|o| allowed.contains(&o.as_str()));
        if common || (*what == "MAC" && aead) {
            continue;
        }
        parts.push(format!(
            "no common {what}: the server offers {}; ftpsync allows only {}",
            offered.join(","),
            allowed.join(",")
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_list(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn parses_and_explains() {
        let mut p = vec![SSH_MSG_KEXINIT];
        p.extend_from_slice(&[7; 16]);
        for l in [
            "diffie-hellman-group14-sha1,kex-strict-s-v00@openssh.com",
            "ssh-ed25519",
            "aes128-cbc",
            "aes128-cbc",
            "hmac-sha2-256",
            "hmac-sha2-256",
        ] {
            p.extend(name_list(l));
        }
        p.extend(name_list("none"));
        let o = parse_kexinit(&p).unwrap();
        assert_eq!(o.kex, ["diffie-hellman-group14-sha1"]);
        assert_eq!(o.ciphers, ["aes128-cbc"]);
        let policy = [
            ("key exchange", "curve25519-sha256"),
            ("host key type", "ssh-ed25519"),
            ("cipher", "aes128-ctr"),
            ("MAC", "hmac-sha2-256-etm@openssh.com"),
        ];
        let msg = explain(&o, &policy);
        assert!(
            msg.contains("no common key exchange: the server offers diffie-hellman-group14-sha1")
        );
        assert!(msg.contains("no common cipher: the server offers aes128-cbc"));
        assert!(msg.contains("no common MAC"));
        assert!(!msg.contains("host key type"));
    }
}
