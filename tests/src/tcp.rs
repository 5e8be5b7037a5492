//! Real TCP connections on loopback with known close patterns.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use socket2::{Domain, SockRef, Socket, Type};

/// How a test connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// The client closes first; the server closes after reading EOF.
    ClientFirst,
    /// The server closes first; the client closes after reading EOF.
    ServerFirst,
    /// The client closes with SO_LINGER 0: an RST, no FIN.
    ClientReset,
    /// The server closes with SO_LINGER 0.
    ServerReset,
}

/// The ports of one finished connection.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub server_port: u16,
    pub client_port: u16,
}

/// A listener on `addr` with a kernel-chosen port.
pub fn listen(addr: IpAddr) -> TcpListener {
    TcpListener::bind(SocketAddr::new(addr, 0)).expect("bind listener")
}

/// Runs one connection to `listener` with `pattern`, all in this process.
pub fn connect(listener: &TcpListener, pattern: Pattern) -> Conn {
    try_connect(listener, pattern).expect("connect")
}

/// [`connect`], with `connect()`'s failure returned (`EADDRNOTAVAIL` once
/// the local ports toward the listener are used up, say).
pub fn try_connect(listener: &TcpListener, pattern: Pattern) -> std::io::Result<Conn> {
    let server_addr = listener.local_addr().expect("listener address");
    let client = TcpStream::connect(server_addr)?;
    Ok(exchange(listener, client, pattern))
}

/// Like [`connect`], but the client sets SO_REUSEADDR and binds `local`
/// first: a fixed source port, or one still held by a TIME_WAIT socket that
/// also had SO_REUSEADDR.
pub fn connect_from(listener: &TcpListener, local: SocketAddr, pattern: Pattern) -> Conn {
    let server_addr = listener.local_addr().expect("listener address");
    let client = Socket::new(Domain::for_address(local), Type::STREAM, None).expect("socket");
    client.set_reuse_address(true).expect("SO_REUSEADDR");
    client.bind(&local.into()).expect("bind client");
    client.connect(&server_addr.into()).expect("connect");
    exchange(listener, client.into(), pattern)
}

/// Accepts `client`'s connection, exchanges a few bytes, closes with `pattern`.
fn exchange(listener: &TcpListener, mut client: TcpStream, pattern: Pattern) -> Conn {
    let server_addr = listener.local_addr().expect("listener address");
    let (mut server, _) = listener.accept().expect("accept");
    let client_port = client.local_addr().expect("client address").port();
    client.write_all(b"ping").expect("client write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).expect("server read");
    server.write_all(b"pong").expect("server write");
    client.read_exact(&mut buf).expect("client read");
    match pattern {
        Pattern::ClientFirst => close_then_peer(client, server),
        Pattern::ServerFirst => close_then_peer(server, client),
        Pattern::ClientReset => reset_then_peer(client, server),
        Pattern::ServerReset => reset_then_peer(server, client),
    }
    Conn {
        server_port: server_addr.port(),
        client_port,
    }
}

/// `first` closes with SO_LINGER 0 (an RST), `second` sees the reset and
/// closes.
fn reset_then_peer(first: TcpStream, mut second: TcpStream) {
    SockRef::from(&first)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(first);
    let mut buf = [0u8; 1];
    let _ = second.read(&mut buf);
    drop(second);
}

/// `first` closes, `second` reads EOF and closes.
fn close_then_peer(first: TcpStream, mut second: TcpStream) {
    drop(first);
    let mut rest = Vec::new();
    second.read_to_end(&mut rest).expect("read to EOF");
    drop(second);
}
