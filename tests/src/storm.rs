//! A loopback connection storm: many short connections, the server closing
//! first, as fast as the machine allows. Used by the benchmark and by the
//! TIME_WAIT agreement tests.

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// What one storm did.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    pub conns: u64,
    pub failures: u64,
    pub elapsed: Duration,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.conns as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `conns` connections to a fresh listener on `addr` from `threads`
/// client threads; the server accepts and closes at once.
pub fn run(addr: SocketAddr, conns: u64, threads: u64) -> std::io::Result<Report> {
    let listener = TcpListener::bind(addr)?;
    let server_addr = listener.local_addr()?;
    let server = thread::spawn(move || {
        for _ in 0..conns {
            match listener.accept() {
                // The server closes first: it will hold the TIME_WAIT.
                Ok((stream, _)) => drop(stream),
                Err(_) => break,
            }
        }
    });
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..threads)
        .map(|i| {
            let n = conns / threads + u64::from(i < conns % threads);
            let failures = Arc::clone(&failures);
            thread::spawn(move || {
                let mut buf = [0u8; 1];
                for _ in 0..n {
                    match TcpStream::connect(server_addr) {
                        // Wait for the server's FIN, then close.
                        Ok(mut s) => while matches!(s.read(&mut buf), Ok(n) if n > 0) {},
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let elapsed = started.elapsed();
    let failures = failures.load(Ordering::Relaxed);
    if failures > 0 {
        // Unblock the server's remaining accepts.
        for _ in 0..failures {
            let _ = TcpStream::connect(server_addr);
        }
    }
    let _ = server.join();
    Ok(Report {
        conns: conns - failures,
        failures,
        elapsed,
    })
}
