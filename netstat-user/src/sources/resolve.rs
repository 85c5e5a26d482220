//! Names for addresses and ports when -n is not given: ports from
//! /etc/services, hosts from /etc/hosts and then reverse DNS (getnameinfo)
//! in parallel threads, cached across displays. One display never waits more
//! than `deadline` for DNS: an address still unresolved by then is shown as
//! a number, and its lookup goes on in the background for the next display.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use crate::model::Proto;

pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(900);
const MAX_THREADS: usize = 16;

#[derive(Default)]
struct Shared {
    /// Finished lookups: Some(name) or None (no name).
    done: HashMap<IpAddr, Option<String>>,
    in_flight: HashSet<IpAddr>,
}

pub struct Resolver {
    hosts: HashMap<IpAddr, String>,
    services: HashMap<(u16, Proto), String>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    pub deadline: Duration,
    /// Consult DNS at all (off for fixture runs that must be deterministic).
    pub dns: bool,
    /// This machine's host name: what a listener's foreign address shows
    /// (`HOSTNAME:0`), as Windows shows it.
    pub hostname: Option<String>,
}

impl Resolver {
    /// Read `<etc>/hosts` and `<etc>/services`; missing files mean no names.
    pub fn new(etc: &Path) -> Resolver {
        let hosts = std::fs::read(etc.join("hosts")).map(|b| parse_hosts(&String::from_utf8_lossy(&b))).unwrap_or_default();
        let services =
            std::fs::read(etc.join("services")).map(|b| parse_services(&String::from_utf8_lossy(&b))).unwrap_or_default();
        Resolver { hosts, services, shared: Arc::default(), deadline: DEFAULT_DEADLINE, dns: true, hostname: None }
    }

    /// The resolver a display uses: /etc (or `NETSTAT_ETC`, which also turns
    /// DNS off so that a fixture run is deterministic) and the host name of
    /// `<proc_root>/sys/kernel/hostname`.
    pub fn system(proc_root: &Path) -> Resolver {
        let etc = std::env::var_os("NETSTAT_ETC");
        let mut r = Resolver::new(etc.as_deref().map_or(Path::new("/etc"), Path::new));
        r.dns = etc.is_none();
        r.hostname = std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        r
    }

    pub fn service(&self, port: u16, proto: Proto) -> Option<&str> {
        self.services.get(&(port, proto)).map(String::as_str)
    }

    /// The name of `ip`, if /etc/hosts or a finished DNS lookup gave one.
    pub fn host(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        if let Some(h) = self.hosts.get(&ip) {
            return Some(h.clone());
        }
        self.shared.0.lock().unwrap().done.get(&ip).cloned().flatten()
    }

    /// Start reverse lookups for every address not known yet and wait for
    /// them, at most `deadline`.
    pub fn prepare(&self, ips: impl IntoIterator<Item = IpAddr>) {
        if !self.dns {
            return;
        }
        let (lock, cv) = &*self.shared;
        let mut todo: Vec<IpAddr> = {
            let mut sh = lock.lock().unwrap();
            let mut seen = HashSet::new();
            let mut v = Vec::new();
            for ip in ips {
                let ip = ip.to_canonical();
                if ip.is_unspecified()
                    || self.hosts.contains_key(&ip)
                    || sh.done.contains_key(&ip)
                    || sh.in_flight.contains(&ip)
                    || !seen.insert(ip)
                {
                    continue;
                }
                v.push(ip);
            }
            for ip in &v {
                sh.in_flight.insert(*ip);
            }
            v
        };
        if todo.is_empty() {
            return;
        }
        let wait_for: HashSet<IpAddr> = todo.iter().copied().collect();
        todo.reverse();
        let queue = Arc::new(Mutex::new(todo));
        let threads = wait_for.len().min(MAX_THREADS);
        for _ in 0..threads {
            let queue = queue.clone();
            let shared = self.shared.clone();
            // Detached on purpose: a lookup stuck on a dead resolver must not
            // hold the display; it finishes (or not) in the background.
            let _ = std::thread::Builder::new().name("resolve".into()).spawn(move || {
                loop {
                    let Some(ip) = queue.lock().unwrap().pop() else { break };
                    let name = reverse_lookup(ip);
                    let (lock, cv) = &*shared;
                    let mut sh = lock.lock().unwrap();
                    sh.in_flight.remove(&ip);
                    sh.done.insert(ip, name);
                    cv.notify_all();
                }
            });
        }
        let end = Instant::now() + self.deadline;
        let mut sh = lock.lock().unwrap();
        while wait_for.iter().any(|ip| !sh.done.contains_key(ip)) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            sh = cv.wait_timeout(sh, end - now).unwrap().0;
        }
    }
}

/// getnameinfo with NI_NAMEREQD: a name or nothing.
fn reverse_lookup(ip: IpAddr) -> Option<String> {
    let sa: SocketAddr = SocketAddr::new(ip, 0);
    let mut host = [0 as libc::c_char; 1025];
    let rc = match sa {
        SocketAddr::V4(v4) => {
            let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            unsafe {
                libc::getnameinfo(
                    (&s as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    host.as_mut_ptr(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
        }
        SocketAddr::V6(v6) => {
            let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_addr.s6_addr = v6.ip().octets();
            unsafe {
                libc::getnameinfo(
                    (&s as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    host.as_mut_ptr(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
        }
    };
    if rc != 0 {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }.to_string_lossy().into_owned();
    (!name.is_empty()).then_some(name)
}

/// First name of each address (the canonical one), first line wins.
pub fn parse_hosts(text: &str) -> HashMap<IpAddr, String> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let (Some(addr), Some(name)) = (f.next(), f.next()) else { continue };
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            m.entry(ip.to_canonical()).or_insert_with(|| name.to_string());
        }
    }
    m
}

pub fn parse_services(text: &str) -> HashMap<(u16, Proto), String> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let (Some(name), Some(pp)) = (f.next(), f.next()) else { continue };
        let Some((port, proto)) = pp.split_once('/') else { continue };
        let Ok(port) = port.parse::<u16>() else { continue };
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => continue,
        };
        m.entry((port, proto)).or_insert_with(|| name.to_string());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_services() {
        let h = parse_hosts("# c\n127.0.0.1 localhost runsc\n127.0.0.1 vm\n::1 ip6-localhost # x\nbad line\n10.0.0.1\n");
        assert_eq!(h[&"127.0.0.1".parse::<IpAddr>().unwrap()], "localhost");
        assert_eq!(h[&"::1".parse::<IpAddr>().unwrap()], "ip6-localhost");
        assert_eq!(h.len(), 2);
        let s = parse_services("ssh\t\t22/tcp  # SSH\ndomain 53/udp\nhttp 80/tcp www\nbad 99999/tcp\nx 7/ddp\n");
        assert_eq!(s[&(22, Proto::Tcp)], "ssh");
        assert_eq!(s[&(53, Proto::Udp)], "domain");
        assert!(!s.contains_key(&(53, Proto::Tcp)));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn mapped_addresses_use_the_ipv4_name() {
        let mut r = Resolver::new(Path::new("/nonexistent"));
        r.hosts.insert("10.1.2.3".parse().unwrap(), "box.example".into());
        assert_eq!(r.host("::ffff:10.1.2.3".parse().unwrap()).as_deref(), Some("box.example"));
    }
}
