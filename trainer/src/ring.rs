//! The TCP ring collective between CPU ranks.
//!
//! Rank `r` of `W` connects to rank `(r + 1) % W` ("next") and accepts one
//! connection from rank `(r - 1) % W` ("prev"); every byte travels from a rank
//! to its next. A handshake (magic, generation, sender rank, world size) turns
//! away strays and ranks of another generation.
//!
//! - `all_reduce_sum` (CPU fp32): reduce-scatter then all-gather over `W`
//!   chunks. Each chunk is summed in a fixed order around the ring and then
//!   copied to every rank, so the same inputs always give the same bits, on
//!   every rank.
//! - `reduce_scatter_sum` (CPU fp32): the same reduce-scatter over `W` equal
//!   pieces, rotated so that rank r ends with piece r; piece r is summed
//!   from rank r + 1 round to rank r. The all-reduce's chunks (`n * c / W`)
//!   start at rank c instead, so past two ranks an element may be summed in
//!   another order by the two (two terms commute: with two ranks the bits
//!   agree).
//! - `all_gather` (any dtype, in place): each rank's piece passed round the
//!   ring, overwriting.
//! - `broadcast` (any dtype): the raw bytes flow from the root around the ring
//!   in blocks, each rank forwarding a block as soon as it has it.
//!
//! Any failure (a peer gone, a short message, [`RingAborter::abort`]) shuts
//! both sockets, so the neighbours fail too instead of waiting: the whole ring
//! errors out, and the caller regroups. There are no read timeouts: a rank may
//! spend minutes writing a checkpoint while the others wait in the next
//! collective.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::BlockingRetryable;
use premem_core::retry::{Retry, RetryParams};
use tch::{Device, Kind, Tensor};

use crate::collective::{Collective, CollectiveError};

/// First bytes of every handshake.
const MAGIC: &[u8; 8] = b"PMRING01";
/// magic, generation, rank, world.
const HELLO_LEN: usize = 8 + 8 + 4 + 4;
/// Bytes per pipelined broadcast block.
const BLOCK: usize = 1 << 20;
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted connection may take to send its hello (a peer sends
/// it as soon as it connects, so it is usually queued already).
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

const OP_REDUCE_SCATTER: u32 = 1;
const OP_ALL_GATHER: u32 = 2;
const OP_BROADCAST: u32 = 3;

fn op_name(op: u32) -> &'static str {
    match op {
        OP_REDUCE_SCATTER => "reduce-scatter",
        OP_ALL_GATHER => "all-gather",
        OP_BROADCAST => "broadcast",
        _ => "an unknown message",
    }
}

/// The group could not be formed.
fn form_error(message: String) -> CollectiveError {
    CollectiveError::Form(format!("ring: {message}"))
}

/// A peer failed mid-collective.
fn io_error(message: String) -> CollectiveError {
    CollectiveError::Io(format!("ring: {message}"))
}

fn aborted() -> CollectiveError {
    CollectiveError::Aborted("ring aborted (the group changed)".into())
}

/// Where a rank accepts its ring neighbour. Bind it before registering so the
/// address can be announced; it can form any number of rings, one at a time.
pub struct RingListener {
    listener: TcpListener,
}

impl RingListener {
    /// Binds `addr` (`host:port`, port 0 for any free port).
    pub fn bind(addr: &str) -> io::Result<RingListener> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(RingListener { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Forms the ring of `addresses.len()` ranks (listening addresses, by
    /// rank) as `rank`, for `generation`. Peers may start at different times:
    /// connecting is retried, and accepting waited for, until `timeout`.
    pub fn connect(
        &self,
        rank: usize,
        addresses: &[String],
        generation: u64,
        timeout: Duration,
    ) -> Result<RingCollective, CollectiveError> {
        let world = addresses.len();
        if rank >= world {
            return Err(form_error(format!(
                "rank {rank} is outside a ring of {world} addresses"
            )));
        }
        let aborted = Arc::new(AtomicBool::new(false));
        if world == 1 {
            return Ok(RingCollective {
                rank,
                world,
                links: None,
                aborted,
                broken: None,
            });
        }
        let next = (rank + 1) % world;
        let prev = (rank + world - 1) % world;
        let deadline = Instant::now() + timeout;
        let hello = Hello {
            generation,
            rank: rank as u32,
            world: world as u32,
        };
        let (outgoing, incoming) = self.link_up(addresses, next, prev, &hello, deadline)?;
        tracing::debug!(rank, world, generation, "ring connected");
        Ok(RingCollective {
            rank,
            world,
            links: Some(Links {
                next: Link {
                    stream: outgoing,
                    rank: next,
                    address: addresses[next].clone(),
                },
                prev: Link {
                    stream: incoming,
                    rank: prev,
                    address: addresses[prev].clone(),
                },
            }),
            aborted,
            broken: None,
        })
    }

    /// Connects to rank `next` while accepting rank `prev`, until
    /// `deadline`; when one side fails, the other gives up.
    fn link_up(
        &self,
        addresses: &[String],
        next: usize,
        prev: usize,
        hello: &Hello,
        deadline: Instant,
    ) -> Result<(TcpStream, TcpStream), CollectiveError> {
        let give_up = AtomicBool::new(false);
        let (outgoing, incoming) = std::thread::scope(|scope| {
            let connecting = scope.spawn(|| {
                let result = connect_next(&addresses[next], next, hello, deadline, &give_up);
                if result.is_err() {
                    give_up.store(true, Ordering::SeqCst);
                }
                result
            });
            let incoming = self.accept_prev(&addresses[prev], prev, hello, deadline, &give_up);
            if incoming.is_err() {
                give_up.store(true, Ordering::SeqCst);
            }
            let outgoing = connecting
                .join()
                .unwrap_or_else(|_| Err(form_error("the connecting thread panicked".to_string())));
            (outgoing, incoming)
        });
        // Prefer the error that is not a consequence of the other side giving up.
        match (outgoing, incoming) {
            (Ok(o), Ok(i)) => Ok((o, i)),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(o), Err(i)) => Err(if o.to_string().contains("gave up") {
                i
            } else {
                o
            }),
        }
    }

    /// Waits for the handshake of rank `prev`; strays and other generations
    /// are answered with the reason and turned away.
    fn accept_prev(
        &self,
        address: &str,
        prev: usize,
        hello: &Hello,
        deadline: Instant,
        give_up: &AtomicBool,
    ) -> Result<TcpStream, CollectiveError> {
        let mut last_rejected: Option<String> = None;
        loop {
            if give_up.load(Ordering::SeqCst) {
                return Err(form_error(format!(
                    "rank {}: gave up waiting for rank {prev} ({address})",
                    hello.rank
                )));
            }
            if Instant::now() >= deadline {
                let mut message = format!(
                    "rank {}: rank {prev} ({address}) did not connect in time",
                    hello.rank
                );
                if let Some(reason) = last_rejected {
                    message.push_str(&format!("; turned away a connection: {reason}"));
                }
                return Err(form_error(message));
            }
            let (mut stream, from) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(form_error(format!(
                        "rank {}: accepting on the ring listener: {e}",
                        hello.rank
                    )));
                }
            };
            match check_incoming(&mut stream, prev, hello) {
                Ok(()) => return Ok(stream),
                Err(reason) => {
                    tracing::warn!(%from, reason, "ring: turned away a connection");
                    // Tell the sender why (best effort), then close.
                    let _ = write_reply(&mut stream, hello, Some(&reason));
                    let _ = stream.shutdown(Shutdown::Both);
                    last_rejected = Some(format!("{from}: {reason}"));
                }
            }
        }
    }
}

/// Reads and checks the hello of a connection that should come from `prev`.
fn check_incoming(stream: &mut TcpStream, prev: usize, ours: &Hello) -> Result<(), String> {
    let setup = || -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(HELLO_TIMEOUT))
    };
    setup().map_err(|e| format!("socket setup: {e}"))?;
    let mut bytes = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut bytes)
        .map_err(|e| format!("no handshake: {e}"))?;
    let theirs = Hello::decode(&bytes).ok_or("not a premem ring peer (wrong magic bytes)")?;
    if theirs.generation != ours.generation {
        return Err(format!(
            "generation {} but this rank is at generation {}",
            theirs.generation, ours.generation
        ));
    }
    if theirs.world != ours.world {
        return Err(format!(
            "world size {} but this ring has {}",
            theirs.world, ours.world
        ));
    }
    if theirs.rank as usize != prev {
        return Err(format!(
            "sent by rank {}, expected rank {prev}",
            theirs.rank
        ));
    }
    // A connection that waited in the backlog after its sender gave up has
    // its end-of-stream queued behind the hello: turn it away.
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("socket setup: {e}"))?;
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe) {
        Ok(0) => return Err("the sender has already gone".into()),
        Ok(_) => return Err("unexpected bytes after the handshake".into()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(format!("after the handshake: {e}")),
    }
    stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(None))
        .map_err(|e| format!("socket setup: {e}"))?;
    write_reply(stream, ours, None).map_err(|e| format!("answering the handshake: {e}"))?;
    Ok(())
}

/// Connects to rank `next` at `address` and handshakes, retrying until the
/// deadline (the peer may not be listening yet, or still be in another
/// generation).
fn connect_next(
    address: &str,
    next: usize,
    hello: &Hello,
    deadline: Instant,
    give_up: &AtomicBool,
) -> Result<TcpStream, CollectiveError> {
    let rank = hello.rank;
    let retry = Retry::new(
        format!("rank {rank}: connecting to rank {next} at {address}"),
        RetryParams::PEER,
    )
    .until(Some(deadline))
    .unless_stopped(give_up, Duration::ZERO);
    let attempt = || {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match try_connect(address, hello, remaining) {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(rejected)) => Err(format!("it refused the handshake: {rejected}")),
            Err(e) => Err(e.to_string()),
        }
    };
    let connected = attempt
        .retry(retry.backoff())
        .sleep(std::thread::sleep)
        .notify(|e, wait| tracing::debug!(rank, next, error = e, ?wait, "ring: retrying"))
        .call();
    connected.map_err(|last_error| {
        form_error(if give_up.load(Ordering::SeqCst) {
            format!("rank {rank}: gave up connecting to rank {next} at {address}")
        } else {
            format!(
                "rank {rank}: could not connect to rank {next} at {address} in time: {last_error}"
            )
        })
    })
}

/// One attempt: `Err` for I/O errors, `Ok(Err(reason))` when the peer
/// refused the handshake.
fn try_connect(
    address: &str,
    hello: &Hello,
    remaining: Duration,
) -> io::Result<Result<TcpStream, String>> {
    let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
    })?;
    let remaining = remaining.max(Duration::from_millis(1));
    let mut stream = TcpStream::connect_timeout(&addr, remaining.min(CONNECT_TIMEOUT))?;
    stream.set_nodelay(true)?;
    // The peer answers once it accepts, which may be late (it may still be
    // rendezvousing): wait for the answer as long as the deadline allows.
    stream.set_read_timeout(Some(remaining))?;
    stream.write_all(&hello.encode())?;
    let mut bytes = [0u8; HELLO_LEN + 1 + 4];
    stream.read_exact(&mut bytes)?;
    let theirs = Hello::decode(&bytes[..HELLO_LEN]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a premem ring peer (wrong magic bytes)",
        )
    })?;
    let accepted = bytes[HELLO_LEN] == 1;
    let reason_len = u32::from_le_bytes(bytes[HELLO_LEN + 1..].try_into().expect("4 bytes"));
    if !accepted {
        let mut reason = vec![0u8; reason_len.min(4096) as usize];
        stream.read_exact(&mut reason)?;
        return Ok(Err(String::from_utf8_lossy(&reason).into_owned()));
    }
    if theirs.generation != hello.generation || theirs.world != hello.world {
        return Ok(Err(format!(
            "it answered as generation {} of {} ranks",
            theirs.generation, theirs.world
        )));
    }
    stream.set_read_timeout(None)?;
    Ok(Ok(stream))
}

/// The reply to a hello: our hello, accepted (1) or not (0), and the reason.
fn write_reply(stream: &mut TcpStream, ours: &Hello, rejected: Option<&str>) -> io::Result<()> {
    let mut bytes = ours.encode().to_vec();
    bytes.push(u8::from(rejected.is_none()));
    let reason = rejected.unwrap_or("").as_bytes();
    bytes.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    bytes.extend_from_slice(reason);
    stream.write_all(&bytes)
}

struct Hello {
    generation: u64,
    rank: u32,
    world: u32,
}

impl Hello {
    fn encode(&self) -> [u8; HELLO_LEN] {
        let mut bytes = [0u8; HELLO_LEN];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&self.generation.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.rank.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.world.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Hello> {
        if bytes.len() != HELLO_LEN || &bytes[..8] != MAGIC {
            return None;
        }
        Some(Hello {
            generation: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
            rank: u32::from_le_bytes(bytes[16..20].try_into().ok()?),
            world: u32::from_le_bytes(bytes[20..24].try_into().ok()?),
        })
    }
}

struct Link {
    stream: TcpStream,
    rank: usize,
    address: String,
}

impl Link {
    fn name(&self) -> String {
        format!("rank {} at {}", self.rank, self.address)
    }
}

struct Links {
    next: Link,
    prev: Link,
}

/// One rank's end of a formed ring.
pub struct RingCollective {
    rank: usize,
    world: usize,
    /// None at world size 1.
    links: Option<Links>,
    aborted: Arc<AtomicBool>,
    /// Set by the first failure: the byte streams are out of step after it.
    broken: Option<String>,
}

/// Makes a blocked (or the next) collective of a ring fail at once.
#[derive(Clone)]
pub struct RingAborter {
    aborted: Arc<AtomicBool>,
    /// Duplicates of the ring's sockets (shutting one down shuts the socket).
    streams: Arc<Vec<TcpStream>>,
}

impl std::fmt::Debug for RingAborter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingAborter")
            .field("aborted", &self.aborted.load(Ordering::SeqCst))
            .finish()
    }
}

impl RingAborter {
    /// Shuts both sockets of the ring down; its collectives fail from now on.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        for stream in self.streams.iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }
}

impl RingCollective {
    /// A handle that aborts this ring from another thread.
    pub fn aborter(&self) -> RingAborter {
        let streams = self
            .links
            .iter()
            .flat_map(|l| [&l.next.stream, &l.prev.stream])
            .filter_map(|s| s.try_clone().ok())
            .collect();
        RingAborter {
            aborted: self.aborted.clone(),
            streams: Arc::new(streams),
        }
    }

    fn check_usable(&self) -> Result<(), CollectiveError> {
        if self.aborted.load(Ordering::SeqCst) {
            return Err(aborted());
        }
        if let Some(reason) = &self.broken {
            return Err(CollectiveError::Broken(format!(
                "ring unusable after an earlier error: {reason}"
            )));
        }
        Ok(())
    }

    /// Records a failure, shuts the sockets (so the neighbours fail too) and
    /// says what happened.
    fn fail(&mut self, error: CollectiveError) -> CollectiveError {
        let error = if self.aborted.load(Ordering::SeqCst) {
            aborted()
        } else {
            error
        };
        if let Some(links) = &self.links {
            let _ = links.next.stream.shutdown(Shutdown::Both);
            let _ = links.prev.stream.shutdown(Shutdown::Both);
        }
        self.broken = Some(error.to_string());
        error
    }

    /// Sums `data` over all ranks, in place.
    pub fn all_reduce_f32(&mut self, data: &mut [f32]) -> Result<(), CollectiveError> {
        self.check_usable()?;
        let Some(links) = &self.links else {
            return Ok(());
        };
        let result = ring_all_reduce(links, self.rank, self.world, data);
        result.map_err(|e| self.fail(e))
    }

    /// Overwrites `bytes` with rank `root`'s, on every rank.
    pub fn broadcast_bytes(
        &mut self,
        bytes: &mut [u8],
        root: usize,
    ) -> Result<(), CollectiveError> {
        self.check_usable()?;
        if root >= self.world {
            return Err(CollectiveError::Tensor(format!(
                "ring: broadcast root {root} is outside a ring of {} ranks",
                self.world
            )));
        }
        let Some(links) = &self.links else {
            return Ok(());
        };
        let result = ring_broadcast(links, self.rank, self.world, bytes, root);
        result.map_err(|e| self.fail(e))
    }
}

impl Drop for RingCollective {
    fn drop(&mut self) {
        // An aborter may hold duplicates of the sockets: shut them down so
        // the neighbours see the end of the ring now.
        if let Some(links) = &self.links {
            let _ = links.next.stream.shutdown(Shutdown::Both);
            let _ = links.prev.stream.shutdown(Shutdown::Both);
        }
    }
}

/// The half-open range of chunk `c` of `n` elements split into `w` chunks.
fn chunk(n: usize, w: usize, c: usize) -> std::ops::Range<usize> {
    (n * c / w)..(n * (c + 1) / w)
}

fn header(op: u32, len: u64) -> [u8; 12] {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&op.to_le_bytes());
    bytes[4..].copy_from_slice(&len.to_le_bytes());
    bytes
}

fn send_error(link: &Link, e: io::Error) -> CollectiveError {
    io_error(format!("sending to {}: {e}", link.name()))
}

fn recv_error(link: &Link, e: io::Error) -> CollectiveError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io_error(format!("{} closed the connection", link.name()))
    } else {
        io_error(format!("receiving from {}: {e}", link.name()))
    }
}

/// Reads a message header from `link` and checks it is `op` of `len` bytes.
fn expect_header(link: &Link, op: u32, len: usize) -> Result<(), CollectiveError> {
    let mut bytes = [0u8; 12];
    (&link.stream)
        .read_exact(&mut bytes)
        .map_err(|e| recv_error(link, e))?;
    let got_op = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let got_len = u64::from_le_bytes(bytes[4..].try_into().expect("8 bytes"));
    if got_op != op {
        return Err(CollectiveError::Mismatch(format!(
            "ring: {} sent {} while this rank expected {}: the ranks disagree on the sequence of collectives",
            link.name(),
            op_name(got_op),
            op_name(op)
        )));
    }
    if got_len != len as u64 {
        return Err(CollectiveError::Mismatch(format!(
            "ring: {} sent {got_len} bytes of {} where this rank expected {len}: the tensors differ across ranks",
            link.name(),
            op_name(op)
        )));
    }
    Ok(())
}

/// Sends `out` to next while receiving `input.len()` bytes from prev.
fn exchange(links: &Links, op: u32, out: &[u8], input: &mut [u8]) -> Result<(), CollectiveError> {
    let (next, prev) = (&links.next, &links.prev);
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let mut stream = &next.stream;
            let result = stream
                .write_all(&header(op, out.len() as u64))
                .and_then(|_| stream.write_all(out))
                .map_err(|e| send_error(next, e));
            if result.is_err() {
                // Unblock the receive below: the ring is over.
                let _ = prev.stream.shutdown(Shutdown::Both);
            }
            result
        });
        let received = expect_header(prev, op, input.len()).and_then(|_| {
            (&prev.stream)
                .read_exact(input)
                .map_err(|e| recv_error(prev, e))
        });
        if received.is_err() {
            // Unblock the send above (next may not be reading).
            let _ = next.stream.shutdown(Shutdown::Both);
        }
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io_error("the sending thread panicked".to_string())));
        // Report the cause, not the shutdown it caused on the other side.
        match (sent, received) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(s), Err(r)) => Err(if is_local_shutdown(&r) { s } else { r }),
        }
    })
}

/// A receive that failed because this rank shut the socket after a failed send.
fn is_local_shutdown(error: &CollectiveError) -> bool {
    matches!(error, CollectiveError::Io(m) if m.contains("closed the connection"))
}

fn encode(values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn ring_all_reduce(
    links: &Links,
    rank: usize,
    world: usize,
    data: &mut [f32],
) -> Result<(), CollectiveError> {
    let n = data.len();
    let mut out = Vec::new();
    let mut input = Vec::new();
    // Reduce-scatter: at the end rank r owns chunk (r + 1).
    reduce_scatter_steps(links, rank, world, data, |c| chunk(n, world, c), 0)?;
    // All-gather: pass the finished chunks around, overwriting.
    for s in 0..world - 1 {
        let send = chunk(n, world, (rank + 1 + world - s) % world);
        let recv = chunk(n, world, (rank + world - s) % world);
        encode(&data[send], &mut out);
        input.resize(recv.len() * 4, 0);
        exchange(links, OP_ALL_GATHER, &out, &mut input)?;
        for (x, bytes) in data[recv].iter_mut().zip(input.chunks_exact(4)) {
            *x = f32::from_le_bytes(bytes.try_into().expect("4 bytes"));
        }
    }
    Ok(())
}

/// The reduce-scatter half of a ring all-reduce over the `world` parts
/// `part(0..world)` of `data`: at step s, rank r sends part
/// (r - s - shift) and adds what it receives into part (r - s - shift - 1).
/// At the end rank r holds the sum of part (r + 1 - shift), added up in
/// ring order from rank r + 1 round to rank r: the same inputs always give
/// the same bits.
fn reduce_scatter_steps(
    links: &Links,
    rank: usize,
    world: usize,
    data: &mut [f32],
    part: impl Fn(usize) -> std::ops::Range<usize>,
    shift: usize,
) -> Result<(), CollectiveError> {
    let mut out = Vec::new();
    let mut input = Vec::new();
    for s in 0..world - 1 {
        let send = part((rank + 2 * world - s - shift) % world);
        let recv = part((rank + 2 * world - s - shift - 1) % world);
        encode(&data[send], &mut out);
        input.resize(recv.len() * 4, 0);
        exchange(links, OP_REDUCE_SCATTER, &out, &mut input)?;
        for (x, bytes) in data[recv].iter_mut().zip(input.chunks_exact(4)) {
            *x += f32::from_le_bytes(bytes.try_into().expect("4 bytes"));
        }
    }
    Ok(())
}

/// Reduce-scatter over `world` equal pieces of `data`: rank r ends with the
/// sum of piece r (started at rank r + 1, ended at rank r).
fn ring_reduce_scatter(
    links: &Links,
    rank: usize,
    world: usize,
    data: &mut [f32],
) -> Result<(), CollectiveError> {
    let piece = data.len() / world;
    reduce_scatter_steps(links, rank, world, data, |p| p * piece..(p + 1) * piece, 1)
}

/// All-gather over `world` equal pieces of `bytes`: rank r starts with
/// piece r and passes each finished piece on, overwriting.
fn ring_all_gather(
    links: &Links,
    rank: usize,
    world: usize,
    bytes: &mut [u8],
) -> Result<(), CollectiveError> {
    let piece = bytes.len() / world;
    let at = |p: usize| p * piece..(p + 1) * piece;
    let (mut out, mut input) = (Vec::new(), vec![0u8; piece]);
    for s in 0..world - 1 {
        let (send, recv) = (
            at((rank + world - s) % world),
            at((rank + 2 * world - s - 1) % world),
        );
        out.clear();
        out.extend_from_slice(&bytes[send]);
        exchange(links, OP_ALL_GATHER, &out, &mut input)?;
        bytes[recv].copy_from_slice(&input);
    }
    Ok(())
}

fn ring_broadcast(
    links: &Links,
    rank: usize,
    world: usize,
    bytes: &mut [u8],
    root: usize,
) -> Result<(), CollectiveError> {
    // Position along the chain root -> root + 1 -> ... -> root + world - 1.
    let position = (rank + world - root) % world;
    let receives = position > 0;
    let forwards = position < world - 1;
    let (next, prev) = (&links.next, &links.prev);
    let send = |data: &[u8]| {
        (&next.stream)
            .write_all(data)
            .map_err(|e| send_error(next, e))
    };
    if receives {
        expect_header(prev, OP_BROADCAST, bytes.len())?;
    }
    if forwards {
        send(&header(OP_BROADCAST, bytes.len() as u64))?;
    }
    for block in bytes.chunks_mut(BLOCK) {
        if receives {
            (&prev.stream)
                .read_exact(block)
                .map_err(|e| recv_error(prev, e))?;
        }
        if forwards {
            send(block)?;
        }
    }
    Ok(())
}

/// A CPU copy of `tensor`'s elements, as raw bytes.
fn tensor_bytes(tensor: &Tensor) -> Result<Vec<u8>, CollectiveError> {
    let kind = tensor.f_kind().map_err(tensor_error)?;
    let numel = tensor.numel();
    let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
    tensor
        .f_copy_data_u8(&mut bytes, numel)
        .map_err(tensor_error)?;
    Ok(bytes)
}

/// Writes `bytes` (elements of `tensor`'s kind) into `tensor`.
fn write_back(tensor: &mut Tensor, bytes: &[u8]) -> Result<(), CollectiveError> {
    let source = Tensor::f_from_data_size(bytes, &tensor.size(), tensor.kind())
        .and_then(|t| t.f_to_device(tensor.device()))
        .map_err(tensor_error)?;
    tch::no_grad(|| tensor.f_copy_(&source)).map_err(tensor_error)
}

fn tensor_error(e: tch::TchError) -> CollectiveError {
    CollectiveError::Tensor(e.to_string())
}

impl Collective for RingCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        let (kind, device) = (tensor.kind(), tensor.device());
        if kind != Kind::Float || device != Device::Cpu {
            return Err(CollectiveError::Tensor(format!(
                "the ring all-reduce takes CPU float32 tensors, got {kind:?} on {device:?}"
            )));
        }
        self.check_usable()?;
        if self.world == 1 {
            return Ok(());
        }
        let mut values: Vec<f32> = Vec::<f32>::try_from(&tensor.reshape([-1]))
            .map_err(|e| CollectiveError::Tensor(format!("reading the tensor: {e}")))?;
        self.all_reduce_f32(&mut values)?;
        write_back(tensor, &f32_bytes(&values))
    }

    fn broadcast(&mut self, tensor: &mut Tensor, root: usize) -> Result<(), CollectiveError> {
        self.check_usable()?;
        if self.world == 1 {
            return Ok(());
        }
        let mut bytes = tensor_bytes(tensor)?;
        self.broadcast_bytes(&mut bytes, root)?;
        if self.rank != root {
            write_back(tensor, &bytes)?;
        }
        Ok(())
    }

    fn reduce_scatter_sum(
        &mut self,
        input: &Tensor,
        output: &mut Tensor,
    ) -> Result<(), CollectiveError> {
        check_cpu_f32("reduce-scatter", input)?;
        check_cpu_f32("reduce-scatter", output)?;
        let piece = output.numel();
        check_pieces("reduce-scatter", input, piece * self.world)?;
        self.check_usable()?;
        let mut values: Vec<f32> = Vec::<f32>::try_from(&input.reshape([-1]))
            .map_err(|e| CollectiveError::Tensor(format!("reading the tensor: {e}")))?;
        if let Some(links) = &self.links {
            let result = ring_reduce_scatter(links, self.rank, self.world, &mut values);
            result.map_err(|e| self.fail(e))?;
        }
        let mine = &values[self.rank * piece..(self.rank + 1) * piece];
        write_back(output, &f32_bytes(mine))
    }

    fn all_gather(&mut self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        self.check_usable()?;
        if self.world == 1 {
            return Ok(());
        }
        let whole = tensor.numel().next_multiple_of(self.world);
        check_pieces("all-gather", tensor, whole)?;
        let mut bytes = tensor_bytes(tensor)?;
        let Some(links) = &self.links else {
            return Ok(());
        };
        let result = ring_all_gather(links, self.rank, self.world, &mut bytes);
        result.map_err(|e| self.fail(e))?;
        write_back(tensor, &bytes)
    }
}

fn check_cpu_f32(op: &str, tensor: &Tensor) -> Result<(), CollectiveError> {
    let (kind, device) = (tensor.kind(), tensor.device());
    if kind != Kind::Float || device != Device::Cpu {
        return Err(CollectiveError::Tensor(format!(
            "the ring {op} takes CPU float32 tensors, got {kind:?} on {device:?}"
        )));
    }
    Ok(())
}

/// Refuses a tensor that is not `numel` elements (one equal piece per rank).
fn check_pieces(op: &str, tensor: &Tensor, numel: usize) -> Result<(), CollectiveError> {
    if tensor.numel() != numel {
        return Err(CollectiveError::Tensor(format!(
            "ring {op}: {} elements, expected {numel} (one equal piece per rank)",
            tensor.numel()
        )));
    }
    Ok(())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(values, &mut out);
    out
}

/// Runs `f(rank, collective)` on `world` connected ranks, one thread each
/// (the unit tests of this crate).
#[cfg(test)]
pub(crate) fn with_ring<T: Send>(
    world: usize,
    f: impl Fn(usize, &mut RingCollective) -> T + Sync,
) -> Vec<T> {
    let listeners: Vec<RingListener> = (0..world)
        .map(|_| RingListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(rank, listener)| {
                let (addresses, f) = (&addresses, &f);
                scope.spawn(move || {
                    let mut ring = listener
                        .connect(rank, addresses, 7, Duration::from_secs(10))
                        .unwrap();
                    f(rank, &mut ring)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(rank: usize, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + rank * 104_729) % 1000) as f32 * 0.001_37 - 0.5)
            .collect()
    }

    #[test]
    fn all_reduce_sums_bit_identically_on_every_rank() {
        for world in [2, 3] {
            // Sizes smaller than, equal to and larger than the world size.
            for n in [1, 3, 10, 1001] {
                let results = with_ring(world, |rank, ring| {
                    let mut t = Tensor::from_slice(&input(rank, n)).view([n as i64]);
                    ring.all_reduce_sum(&mut t).unwrap();
                    let first = Vec::<f32>::try_from(&t).unwrap();
                    // Same inputs again: same bits.
                    let mut again = Tensor::from_slice(&input(rank, n));
                    ring.all_reduce_sum(&mut again).unwrap();
                    assert_eq!(first, Vec::<f32>::try_from(&again).unwrap());
                    first
                });
                for r in &results[1..] {
                    let same = r
                        .iter()
                        .zip(&results[0])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "world {world}, n {n}: ranks differ");
                }
                for (i, got) in results[0].iter().enumerate() {
                    let want: f32 = (0..world).map(|r| input(r, n)[i]).sum();
                    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn reduce_scatter_and_all_gather_split_and_join_equal_pieces() {
        for world in [2, 3] {
            let piece = 5;
            let results = with_ring(world, |rank, ring| {
                let input = Tensor::from_slice(&input(rank, piece * world));
                let mut mine = Tensor::zeros([piece as i64], (Kind::Float, Device::Cpu));
                ring.reduce_scatter_sum(&input, &mut mine).unwrap();
                // bf16 pieces, each rank's filled with rank + 1.
                let mut joined = Tensor::zeros([3 * world as i64], (Kind::BFloat16, Device::Cpu));
                let _ = joined
                    .narrow(0, 3 * rank as i64, 3)
                    .fill_(rank as f64 + 1.0);
                ring.all_gather(&mut joined).unwrap();
                let bad = ring.reduce_scatter_sum(
                    &input,
                    &mut Tensor::zeros([2], (Kind::Float, Device::Cpu)),
                );
                assert!(
                    bad.unwrap_err()
                        .to_string()
                        .contains("one equal piece per rank")
                );
                (
                    Vec::<f32>::try_from(&mine).unwrap(),
                    Vec::<f32>::try_from(&joined.to_kind(Kind::Float)).unwrap(),
                )
            });
            let want_joined: Vec<f32> = (0..world).flat_map(|r| [r as f32 + 1.0; 3]).collect();
            for (rank, (mine, joined)) in results.iter().enumerate() {
                for (j, got) in mine.iter().enumerate() {
                    let want: f32 = (0..world)
                        .map(|r| input(r, piece * world)[rank * piece + j])
                        .sum();
                    assert!(
                        (got - want).abs() < 1e-5,
                        "world {world} rank {rank}: {got} vs {want}"
                    );
                }
                assert_eq!(joined, &want_joined, "world {world} rank {rank}");
            }
        }
    }

    #[test]
    fn all_reduce_refuses_other_kinds() {
        let results = with_ring(2, |_, ring| {
            let mut t = Tensor::from_slice(&[1i64, 2]);
            ring.all_reduce_sum(&mut t).unwrap_err().to_string()
        });
        assert!(results[0].contains("float32"), "{}", results[0]);
    }

    #[test]
    fn broadcast_copies_the_root_for_any_kind() {
        for world in [2, 3] {
            for root in 0..world {
                let results = with_ring(world, |rank, ring| {
                    // Larger than one block, to exercise the pipeline.
                    let n = BLOCK as i64 / 2 + 3;
                    let mut t = Tensor::arange(n, (Kind::Int64, Device::Cpu)) * (rank as i64 + 1);
                    ring.broadcast(&mut t, root).unwrap();
                    let mut b = Tensor::from_slice(&[rank as f32 + 0.5, 2.0])
                        .to_kind(Kind::BFloat16)
                        .view([2, 1]);
                    ring.broadcast(&mut b, root).unwrap();
                    (
                        Vec::<i64>::try_from(&t).unwrap(),
                        Vec::<f32>::try_from(&b.to_kind(Kind::Float).view([-1])).unwrap(),
                    )
                });
                let want: Vec<i64> = (0..BLOCK as i64 / 2 + 3)
                    .map(|i| i * (root as i64 + 1))
                    .collect();
                for (ints, floats) in results {
                    assert!(ints == want, "world {world} root {root}");
                    assert_eq!(floats, vec![root as f32 + 0.5, 2.0]);
                }
            }
        }
    }

    #[test]
    fn broadcast_into_a_parameter_needs_no_grad() {
        with_ring(2, |rank, ring| {
            let mut p = Tensor::from_slice(&[rank as f32; 4]).set_requires_grad(true);
            ring.broadcast(&mut p, 1).unwrap();
            assert_eq!(Vec::<f32>::try_from(&p.detach()).unwrap(), vec![1.0; 4]);
            assert!(p.requires_grad());
        });
    }

    #[test]
    fn world_size_one_needs_no_peer() {
        let listener = RingListener::bind("127.0.0.1:0").unwrap();
        let mut ring = listener
            .connect(0, &["unused:1".to_string()], 1, Duration::from_millis(10))
            .unwrap();
        let mut t = Tensor::from_slice(&[1.5f32, 2.5]);
        ring.all_reduce_sum(&mut t).unwrap();
        ring.broadcast(&mut t, 0).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.5, 2.5]);
    }

    #[test]
    fn a_dead_peer_is_an_error_not_a_hang() {
        let results = with_ring(3, |rank, ring| {
            if rank == 2 {
                return None;
            }
            // Rank 2 returns (and drops its end) at once.
            std::thread::sleep(Duration::from_millis(50));
            let mut t = Tensor::from_slice(&[1.0f32; 100]);
            let error = ring.all_reduce_sum(&mut t).unwrap_err().to_string();
            // The ring stays failed.
            assert!(ring.all_reduce_sum(&mut t).is_err());
            Some(error)
        });
        for error in results.into_iter().flatten() {
            assert!(error.contains("rank "), "{error}");
        }
    }

    #[test]
    fn a_peer_gone_mid_broadcast_names_it() {
        let results = with_ring(2, |rank, ring| {
            if rank == 1 {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
            let mut t = Tensor::zeros([4], (Kind::Float, Device::Cpu));
            Some(ring.broadcast(&mut t, 1).unwrap_err().to_string())
        });
        let error = results[0].as_ref().unwrap();
        assert!(
            error.contains("rank 1 at 127.0.0.1:") && error.contains("closed the connection"),
            "{error}"
        );
    }

    #[test]
    fn abort_unblocks_a_waiting_collective() {
        let results = with_ring(2, |rank, ring| {
            if rank == 1 {
                // Never joins the collective; aborts rank 0's from here.
                std::thread::sleep(Duration::from_millis(300));
                return None;
            }
            let aborter = ring.aborter();
            let started = Instant::now();
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    aborter.abort();
                });
                let mut t = Tensor::from_slice(&[1.0f32; 10]);
                let error = ring.all_reduce_sum(&mut t).unwrap_err().to_string();
                Some((error, started.elapsed()))
            })
        });
        let (error, elapsed) = results[0].clone().unwrap();
        assert!(error.contains("aborted"), "{error}");
        assert!(elapsed < Duration::from_millis(290), "{elapsed:?}");
    }

    #[test]
    fn another_generation_is_turned_away() {
        let listeners: Vec<RingListener> = (0..2)
            .map(|_| RingListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let errors: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = listeners
                .iter()
                .enumerate()
                .map(|(rank, listener)| {
                    let addresses = &addresses;
                    scope.spawn(move || {
                        listener
                            .connect(rank, addresses, 3 + rank as u64, Duration::from_millis(700))
                            .err()
                            .expect("generations differ")
                            .to_string()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            errors.iter().any(|e| e.contains("generation")),
            "{errors:?}"
        );
    }

    /// Issue 18, finding 5: a fake ring address (one that takes the
    /// connection and never answers) fails the ring within the ring
    /// timeout, not the coordinator's 600 s.
    #[test]
    fn a_peer_that_never_answers_fails_the_ring_within_its_timeout() {
        let listener = RingListener::bind("127.0.0.1:0").unwrap();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addresses = vec![
            listener.local_addr().unwrap().to_string(),
            silent.local_addr().unwrap().to_string(),
        ];
        let started = Instant::now();
        let error = listener
            .connect(0, &addresses, 1, Duration::from_secs(1))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}: {error}");
        assert!(error.contains("rank 1"), "{error}");
    }

    #[test]
    fn a_stray_connection_is_turned_away() {
        let listeners: Vec<RingListener> = (0..2)
            .map(|_| RingListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        // Something else talks to rank 0's listener first.
        let mut stray = TcpStream::connect(&addresses[0]).unwrap();
        stray
            .write_all(b"GET / HTTP/1.1\r\nHost: ring\r\n\r\n")
            .unwrap();
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = listeners
                .iter()
                .enumerate()
                .map(|(rank, listener)| {
                    let addresses = &addresses;
                    scope.spawn(move || {
                        let mut ring = listener
                            .connect(rank, addresses, 1, Duration::from_secs(10))
                            .unwrap();
                        let mut t = Tensor::from_slice(&[rank as f32 + 1.0]);
                        ring.all_reduce_sum(&mut t).unwrap();
                        t.double_value(&[0])
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(results, vec![3.0, 3.0]);
    }
}
