//! UDP in batches on Linux: `recvmmsg` reads up to [`BATCH`] queries in one system call and
//! `sendmmsg` sends their answers in one more, as NSD does. Under load most of a DNS
//! server's time is system calls, so this is where it keeps up with NSD.
//!
//! The unsafe code is confined to filling the kernel's `mmsghdr` arrays from buffers this
//! struct owns and keeps in place for the duration of each call.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Queries longer than this are cut by the kernel (MSG_TRUNC) and treated as malformed; no
/// DNS query that an authoritative server should answer comes close.
pub const MAX_QUERY: usize = 4096;

/// An `iovec` that points at nothing, for the entries of a batch that are not used.
const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// Buffers for one batch: received queries in, answers out.
pub struct Batch {
    packets: Vec<[u8; MAX_QUERY]>,
    lengths: [usize; BATCH],
    truncated: [bool; BATCH],
    peers: [libc::sockaddr_storage; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
}

impl Batch {
    pub fn new() -> Self {
        Self {
            packets: vec![[0u8; MAX_QUERY]; BATCH],
            lengths: [0; BATCH],
            truncated: [false; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            peers: unsafe { zeroed() },
            peer_lens: [0; BATCH],
        }
    }

    /// Waits until at least one datagram can be read, then reads as many as are queued (up to
    /// [`BATCH`]) in one `recvmmsg`.
    pub async fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || self.recvmmsg(socket)) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn recvmmsg(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        // Room for any sender's address; the kernel writes back the length of each.
        self.peer_lens = [size_of::<libc::sockaddr_storage>() as libc::socklen_t; BATCH];
        let mut iovecs = [EMPTY_IOVEC; BATCH];
        for (iovec, packet) in iovecs.iter_mut().zip(&mut self.packets) {
            *iovec = libc::iovec {
                iov_base: packet.as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
        }
        let mut headers = self.headers(&mut iovecs, 0..BATCH);
        // SAFETY: `headers` holds BATCH entries, each a packet of `self` and its peer.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, header) in headers.iter().enumerate().take(n) {
            self.lengths[i] = (header.msg_len as usize).min(MAX_QUERY);
            self.truncated[i] = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.peer_lens[i] = header.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    /// The `i`th datagram of the last batch: its bytes (mutable, to cap EDNS in place), its
    /// sender, and whether the kernel cut it.
    pub fn datagram(&mut self, i: usize) -> (&mut [u8], Option<SocketAddr>, bool) {
        let peer = to_socket_addr(&self.peers[i], self.peer_lens[i]);
        (
            &mut self.packets[i][..self.lengths[i]],
            peer,
            self.truncated[i],
        )
    }

    /// Sends `answers[k]` to the sender of datagram `to[k]`, in as few `sendmmsg` calls as
    /// the socket allows. A datagram the kernel refuses is dropped, as UDP would drop it.
    pub async fn send(
        &mut self,
        socket: &UdpSocket,
        answers: &[Vec<u8>],
        to: &[usize],
    ) -> io::Result<()> {
        let mut sent = 0;
        while sent < to.len() {
            socket.writable().await?;
            match socket.try_io(Interest::WRITABLE, || {
                self.sendmmsg(socket, &answers[sent..], &to[sent..])
            }) {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // One bad destination (say, an ICMP-refused port) must not stop the rest.
                Err(e) => {
                    tracing::debug!("udp send: {e}");
                    sent += 1;
                }
            }
        }
        Ok(())
    }

    fn sendmmsg(
        &mut self,
        socket: &UdpSocket,
        answers: &[Vec<u8>],
        to: &[usize],
    ) -> io::Result<usize> {
        let count = to.len().min(BATCH);
        let mut iovecs = [EMPTY_IOVEC; BATCH];
        for (iovec, answer) in iovecs.iter_mut().zip(&answers[..count]) {
            // The kernel only reads what it sends.
            *iovec = libc::iovec {
                iov_base: answer.as_ptr().cast_mut().cast(),
                iov_len: answer.len(),
            };
        }
        let mut headers = self.headers(&mut iovecs, to[..count].iter().copied());
        // SAFETY: `headers` holds `count` entries, each an answer and the peer it goes to.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The kernel's view of one batch, for `recvmmsg` or `sendmmsg`: datagram `k` is the
    /// buffer `iovecs[k]`, exchanged with the address of peer `peers[k]` (`peer_lens` bytes of
    /// it). The headers point into `iovecs` and `self`, so both stay in place until the call.
    fn headers(
        &mut self,
        iovecs: &mut [libc::iovec],
        peers: impl Iterator<Item = usize>,
    ) -> [libc::mmsghdr; BATCH] {
        // SAFETY: an all-zero mmsghdr is valid: null pointers, zero lengths.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for ((header, iovec), i) in headers.iter_mut().zip(iovecs).zip(peers) {
            header.msg_hdr.msg_name = (&raw mut self.peers[i]).cast();
            header.msg_hdr.msg_namelen = self.peer_lens[i];
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        headers
    }
}

fn to_socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
