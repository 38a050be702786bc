//! `--listen`: where the gateway accepts TCP connections.
//!
//! Grammar: `none`, or a comma-separated list of `IP:PORT` (IPv6 in brackets), `HOST:PORT` or
//! `INTERFACE:PORT`. A name that is a network interface of this machine (`tailscale0`, `eth0`)
//! stands for that interface's address (IPv4 first), so `--listen tailscale0:9000` serves on the
//! tailnet address of a running `tailscaled` and on nothing else; any other name is resolved
//! as a host name.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;

/// How long resolving a host name may take before the start is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One address of `--listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `IP:PORT`.
    Socket(SocketAddr),
    /// `NAME:PORT`: a network interface when one has that name, else a host name.
    Named {
        /// Interface or host name.
        name: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Socket(a) => write!(f, "{a}"),
            ListenAddr::Named { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

/// The parsed `--listen` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// `none`: no TCP listener at all (the in-process tailnet is the only way in).
    None,
    /// One or more addresses.
    Addrs(Vec<ListenAddr>),
}

/// Why a `--listen` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Not in the grammar.
    #[error(
        "--listen {value:?}: {reason}; expected IP:PORT, HOST:PORT, INTERFACE:PORT (e.g. 127.0.0.1:9000, [::1]:9000, tailscale0:9000), a comma-separated list of them, or none"
    )]
    Syntax {
        /// The offending entry.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The interface exists but has no IP address (down, or tailscaled not logged in).
    #[error(
        "--listen {name}:{port}: network interface {name} has no IPv4 or IPv6 address (is it up? for tailscale0: is tailscaled running and logged in?)"
    )]
    NoAddress {
        /// Interface name.
        name: String,
        /// Port.
        port: u16,
    },
    /// Neither an interface nor a host name that resolves.
    #[error(
        "--listen {name}:{port}: {name} is not a network interface of this machine (interfaces: {interfaces}) and does not resolve as a host name ({reason})"
    )]
    Unknown {
        /// The name given.
        name: String,
        /// Port.
        port: u16,
        /// The machine's interfaces, for the message.
        interfaces: String,
        /// Why resolving failed.
        reason: String,
    },
    /// The interface list could not be read.
    #[error("--listen: reading the network interfaces: {0}")]
    Interfaces(std::io::Error),
    /// Binding failed (address in use, not ours, permission).
    #[error("--listen {spec}: cannot listen on {addr}: {source}")]
    Bind {
        /// The entry as given.
        spec: String,
        /// The address tried (the last one, for host names with several).
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ListenSpec {
    /// Parses a `--listen` value (only the syntax: names are looked up by [`bind`]).
    pub fn parse(value: &str) -> Result<ListenSpec, ListenError> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("none") {
            return Ok(ListenSpec::None);
        }
        let syntax = |entry: &str, reason| ListenError::Syntax {
            value: entry.to_owned(),
            reason,
        };
        let mut addrs = Vec::new();
        for entry in value.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(syntax(value, "empty address"));
            }
            if entry.eq_ignore_ascii_case("none") {
                return Err(syntax(value, "none cannot be combined with addresses"));
            }
            if let Ok(a) = entry.parse::<SocketAddr>() {
                addrs.push(ListenAddr::Socket(a));
                continue;
            }
            let Some((name, port)) = entry.rsplit_once(':') else {
                return Err(syntax(entry, "no port"));
            };
            let Ok(port) = port.parse::<u16>() else {
                return Err(syntax(entry, "the port is not a number from 0 to 65535"));
            };
            if name.contains(':') {
                return Err(syntax(entry, "an IPv6 address needs brackets"));
            }
            // Interface names (at most 15 bytes on Linux) and host names share this alphabet.
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
            if !valid {
                return Err(syntax(entry, "not an IP address, host or interface name"));
            }
            addrs.push(ListenAddr::Named {
                name: name.to_owned(),
                port,
            });
        }
        Ok(ListenSpec::Addrs(addrs))
    }

    /// The port of the first address (for the tailnet listener's default).
    pub fn first_port(&self) -> Option<u16> {
        match self {
            ListenSpec::None => None,
            ListenSpec::Addrs(a) => a.first().map(|a| match a {
                ListenAddr::Socket(s) => s.port(),
                ListenAddr::Named { port, .. } => *port,
            }),
        }
    }
}

pub use crate::store::sys::{InterfaceAddr, interfaces};

/// The address to bind for interface `name`: its first IPv4 address, else a global IPv6 one,
/// else a link-local IPv6 one (with the scope). `Ok(None)` when there is no such interface.
pub fn interface_address(
    all: &[InterfaceAddr],
    name: &str,
    port: u16,
) -> Result<Option<SocketAddr>, ListenError> {
    let mine: Vec<(IpAddr, u32)> = all
        .iter()
        .filter(|i| i.name == name)
        .filter_map(|i| i.addr)
        .collect();
    if mine.is_empty() {
        return if all.iter().any(|i| i.name == name) {
            Err(ListenError::NoAddress {
                name: name.to_owned(),
                port,
            })
        } else {
            Ok(None)
        };
    }
    let link_local =
        |ip: &IpAddr| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
    let pick = mine
        .iter()
        .find(|(ip, _)| ip.is_ipv4())
        .or_else(|| mine.iter().find(|(ip, _)| !link_local(ip)))
        .or_else(|| mine.first())
        .copied();
    Ok(pick.map(|(ip, scope)| match ip {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        IpAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope)),
    }))
}

/// The socket addresses to try for one entry: an interface's address, or what a host name
/// resolves to.
async fn candidates(addr: &ListenAddr) -> Result<Vec<SocketAddr>, ListenError> {
    let (name, port) = match addr {
        ListenAddr::Socket(a) => return Ok(vec![*a]),
        ListenAddr::Named { name, port } => (name.as_str(), *port),
    };
    let all = interfaces().map_err(ListenError::Interfaces)?;
    if let Some(a) = interface_address(&all, name, port)? {
        return Ok(vec![a]);
    }
    let unknown = |reason: String| {
        let mut names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        ListenError::Unknown {
            name: name.to_owned(),
            port,
            interfaces: names.join(", "),
            reason,
        }
    };
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                Err(unknown("no addresses".to_owned()))
            } else {
                Ok(found)
            }
        }
        Ok(Err(e)) => Err(unknown(e.to_string())),
        Err(_) => Err(unknown(format!(
            "no answer within {} s",
            RESOLVE_TIMEOUT.as_secs()
        ))),
    }
}

/// Binds one entry (the first of a host name's addresses that works).
pub async fn bind(addr: &ListenAddr) -> Result<TcpListener, ListenError> {
    let mut last = None;
    for a in candidates(addr).await? {
        match TcpListener::bind(a).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some((a, e)),
        }
    }
    let (addr_tried, source) = last.expect("candidates() never returns an empty list");
    Err(ListenError::Bind {
        spec: addr.to_string(),
        addr: addr_tried,
        source,
    })
}

/// Binds every address of `spec` (none for `none`).
pub async fn bind_all(spec: &ListenSpec) -> Result<Vec<TcpListener>, ListenError> {
    let mut out = Vec::new();
    if let ListenSpec::Addrs(addrs) = spec {
        for a in addrs {
            out.push(bind(a).await?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert_eq!(ListenSpec::parse("none").unwrap(), ListenSpec::None);
        assert_eq!(ListenSpec::parse(" NONE ").unwrap(), ListenSpec::None);
        assert_eq!(
            ListenSpec::parse("127.0.0.1:9000").unwrap(),
            ListenSpec::Addrs(vec![ListenAddr::Socket("127.0.0.1:9000".parse().unwrap())])
        );
        assert_eq!(
            ListenSpec::parse("[::1]:80, tailscale0:9000,localhost:0").unwrap(),
            ListenSpec::Addrs(vec![
                ListenAddr::Socket("[::1]:80".parse().unwrap()),
                ListenAddr::Named {
                    name: "tailscale0".into(),
                    port: 9000
                },
                ListenAddr::Named {
                    name: "localhost".into(),
                    port: 0
                },
            ])
        );
        assert_eq!(
            ListenSpec::parse("eth0:8080").unwrap().first_port(),
            Some(8080)
        );
        for bad in [
            "",
            "9000",
            "eth0",
            "eth0:",
            "eth0:99999",
            "::1:9000",
            "none,127.0.0.1:1",
            "a,,b:1",
            "bad name:1",
            ":9000",
        ] {
            let e = ListenSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--listen"), "{bad}: {e}");
        }
    }

    #[test]
    fn interface_address_choice() {
        let i = |name: &str, addr: Option<&str>, scope: u32| InterfaceAddr {
            name: name.into(),
            addr: addr.map(|a| (a.parse().unwrap(), scope)),
        };
        let all = vec![
            i("lo", None, 0),
            i("lo", Some("127.0.0.1"), 0),
            i("eth0", None, 0),
            i("eth0", Some("fe80::1"), 2),
            i("eth0", Some("2001:db8::5"), 0),
            i("eth0", Some("192.0.2.7"), 0),
            i("v6only", Some("fe80::9"), 4),
            i("v6only", Some("2001:db8::9"), 0),
            i("ll", Some("fe80::7"), 5),
            i("down", None, 0),
        ];
        let pick = |name| interface_address(&all, name, 9000);
        assert_eq!(
            pick("eth0").unwrap(),
            Some("192.0.2.7:9000".parse().unwrap())
        );
        assert_eq!(
            pick("v6only").unwrap(),
            Some("[2001:db8::9]:9000".parse().unwrap())
        );
        let SocketAddr::V6(ll) = pick("ll").unwrap().unwrap() else {
            panic!("v6 expected")
        };
        assert_eq!(ll.scope_id(), 5);
        assert!(pick("nosuch").unwrap().is_none());
        let e = pick("down").unwrap_err().to_string();
        assert!(e.contains("has no IPv4 or IPv6 address"), "{e}");
    }

    #[test]
    fn loopback_interface_is_found() {
        let all = interfaces().unwrap();
        assert_eq!(
            interface_address(&all, "lo", 1).unwrap(),
            Some("127.0.0.1:1".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn unknown_name_is_a_clear_error() {
        let e = bind(&ListenAddr::Named {
            name: "nebula-no-such-if0.invalid".into(),
            port: 9,
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not a network interface"), "{e}");
        assert!(e.contains("lo"), "{e}");
    }
}
