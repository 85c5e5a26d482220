//! Thin libc wrappers the workloads share: process naming and forking,
//! limits, and sockets built by hand where std cannot (unbound UDP, bind
//! before connect, a chosen listen backlog). No policy lives here.
use std::{
    ffi::CString,
    fs::File,
    io::{self, BufRead, BufReader, Write},
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream},
    os::fd::{FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

/// Set this process's comm (what /proc/PID/comm and the tracer show).
pub fn set_comm(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).collect();
    bytes.truncate(15);
    let c = CString::new(bytes).expect("NULs filtered");
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// A hard stop in case the workload's own deadline logic is ever stuck
/// (a blocking accept or connect): SIGALRM's default action ends the process.
pub fn backstop(seconds: u64) {
    unsafe { libc::alarm(seconds.min(u32::MAX as u64) as u32) };
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut rl: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur
    }
}

/// Fork a child named `name` that runs `body` and exits with its code. The
/// child dies with its parent (PR_SET_PDEATHSIG), so nothing outlives a
/// killed run. The caller must be single-threaded.
pub fn fork_named(name: &str, seconds: u64, body: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    io::stdout().flush()?;
    let parent = unsafe { libc::getpid() };
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
        if unsafe { libc::getppid() } != parent {
            unsafe { libc::_exit(1) };
        }
        set_comm(name);
        backstop(seconds);
        let code = body();
        let _ = io::stdout().flush();
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Wait for a child; true when it exited with status 0.
pub fn wait_ok(pid: libc::pid_t) -> bool {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    unsafe { libc::kill(pid, sig) };
}

/// User plus system CPU seconds of this process's reaped children.
pub fn children_cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// A pipe for a child to report to its parent: (read end, write end).
pub fn pipe() -> io::Result<(BufReader<File>, File)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe { Ok((BufReader::new(File::from_raw_fd(fds[0])), File::from_raw_fd(fds[1]))) }
}

pub fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut s = String::new();
    if r.read_line(&mut s)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "child exited without reporting"));
    }
    Ok(s.trim_end().to_string())
}

/// Print one line with a single write, so lines from several processes
/// sharing stdout never interleave.
pub fn emit(v: &serde_json::Value) {
    let mut line = v.to_string();
    line.push('\n');
    let mut out = io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

pub fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

pub fn from_raw(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

fn name_of(
    fd: RawFd,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<SocketAddr> {
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { f(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    from_raw(&ss).ok_or_else(|| io::Error::other("unexpected address family"))
}

pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, libc::getsockname)
}

/// The peer, or None when the socket is not connected.
pub fn peer_addr(fd: RawFd) -> io::Result<Option<SocketAddr>> {
    match name_of(fd, libc::getpeername) {
        Ok(a) => Ok(Some(a)),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The socket's cookie (getsockopt SOL_SOCKET SO_COOKIE): the kernel's own
/// identity for it, as sock_diag and bpf_get_socket_cookie report it. Asking
/// assigns one if the socket had none, so tests ask only after the events
/// they check.
pub fn cookie(fd: RawFd) -> io::Result<u64> {
    const SO_COOKIE: libc::c_int = 57;
    let mut v: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    check(unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, SO_COOKIE, (&mut v as *mut u64).cast(), &mut len) })?;
    Ok(v)
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

pub fn socket(family: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn family_of(addr: &SocketAddr) -> libc::c_int {
    if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 }
}

pub fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (ss, len) = to_raw(addr);
    check(unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) })
}

pub fn connect(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (ss, len) = to_raw(addr);
    loop {
        let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn sendto(fd: RawFd, addr: &SocketAddr, payload: &[u8]) -> io::Result<()> {
    let (ss, len) = to_raw(addr);
    let r = unsafe {
        libc::sendto(fd, payload.as_ptr().cast(), payload.len(), 0, &ss as *const _ as *const libc::sockaddr, len)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    check(unsafe {
        libc::setsockopt(fd, level, opt, &v as *const _ as *const libc::c_void, size_of::<libc::c_int>() as libc::socklen_t)
    })
}

/// A TCP listener with an explicit backlog (std picks its own).
pub fn tcp_listen(addr: &SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let fd = socket(family_of(addr), libc::SOCK_STREAM)?;
    use std::os::fd::AsRawFd;
    setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    bind(fd.as_raw_fd(), addr)?;
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(TcpListener::from(fd))
}

/// Connect from `src` (port chosen at connect time, so one source address
/// serves many destinations: IP_BIND_ADDRESS_NO_PORT) to `dst`.
pub fn tcp_connect_from(src: Option<&SocketAddr>, dst: &SocketAddr, rst: bool) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let fd = socket(family_of(dst), libc::SOCK_STREAM)?;
    let raw = fd.as_raw_fd();
    if let Some(src) = src {
        setsockopt_int(raw, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        bind(raw, src)?;
    }
    if rst {
        linger_zero(raw)?;
    }
    connect(raw, dst)?;
    Ok(TcpStream::from(fd))
}

/// SO_LINGER 0: close() resets the connection, leaving no TIME_WAIT.
pub fn linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })
}

pub fn sleep_until(deadline: std::time::Instant) {
    let now = std::time::Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// CLOCK_REALTIME in ns, the clock netstat's event times are given in.
pub fn realtime_ns() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_nanos() as u64
}

/// Close a descriptor this process inherited but must not keep (a forked
/// child's copy of its parent's listener). The child ends in `_exit`, so the
/// owner's destructor never runs there and nothing is closed twice.
pub fn close_inherited(fd: RawFd) {
    unsafe { libc::close(fd) };
}

/// Reap `pid` if it has exited: None while it runs, Some(ok) once it is gone.
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<bool>> {
    let mut status = 0;
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        return Ok(None);
    }
    Ok(Some(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0))
}

/// Wait up to `timeout_ms` for any of `fds` to be readable (or hung up);
/// returns which are. EINTR counts as "nothing yet".
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    check(flags)?;
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })
}

/// A TCP listener in a SO_REUSEPORT group: every process that binds the same
/// address this way gets its own accept queue, and the kernel spreads new
/// connections among them.
pub fn tcp_listen_reuseport(addr: &SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    let fd = socket(family_of(addr), libc::SOCK_STREAM)?;
    setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    bind(fd.as_raw_fd(), addr)?;
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(TcpListener::from(fd))
}

/// A connected pair of Unix stream sockets, for passing descriptors.
pub fn unix_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

/// Send `fd` over a Unix socket (SCM_RIGHTS) with `payload` as the data
/// bytes (at least one byte must travel with the descriptor).
pub fn send_fd(sock: RawFd, fd: RawFd, payload: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
    }
    loop {
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receive one descriptor sent by `send_fd` (installed close-on-exec) and
/// the data bytes that came with it, into `payload`.
pub fn recv_fd(sock: RawFd, payload: &mut [u8]) -> io::Result<(OwnedFd, usize)> {
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "descriptor sender hung up"));
    }
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::other("message carried no descriptor"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
        Ok((OwnedFd::from_raw_fd(fd), n))
    }
}
