//! `storm`: a loopback connection storm (see `tcpstate_tests::storm`),
//! printing one JSON object with what it did.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Connections to make.
    #[arg(long, default_value_t = 20_000)]
    conns: u64,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Listen address (port 0: any).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: std::net::SocketAddr,
}

fn main() {
    let args = Args::parse();
    match tcpstate_tests::storm::run(args.addr, args.conns, args.threads.max(1)) {
        Ok(r) => println!(
            "{}",
            serde_json::json!({
                "conns": r.conns,
                "failures": r.failures,
                "secs": r.elapsed.as_secs_f64(),
                "rate": r.rate(),
            })
        ),
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::exit(1);
        }
    }
}
