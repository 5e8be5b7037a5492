//! `diagnose --html` on real traffic, opened in a real headless browser
//! (Debian's chromium): the page loads without console errors, holds the
//! finding and its charts, and a screenshot of it is kept as an artefact
//! (`target/test-artifacts/diagnose-report.png`). Runs on the host only:
//! the kernel matrix's guests have no browser.

use std::{
    net::{IpAddr, Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use tcpstate_tests::{
    kernel::set_sysctl,
    netns::NetNs,
    require_root,
    tracer::{self, bin},
};

/// The browser, or a clear failure: `cargo xtask test` installs it.
fn chromium() -> PathBuf {
    let path = Path::new("/usr/bin/chromium");
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (cargo xtask test does)",
        path.display()
    );
    path.to_path_buf()
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artefact folder");
    dir
}

#[test]
fn the_html_report_opens_in_a_browser_with_its_charts() {
    require_root();
    let browser = chromium();
    let ns = NetNs::new("tcpstate-test-report");
    set_sysctl(&ns, "net.ipv4.ip_local_port_range", "40000 40499");
    set_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "0");
    let dir = artifacts();
    let page = dir.join("diagnose-report.html");
    let _ = std::fs::remove_file(&page);
    let netns = ns.inode().to_string();
    let mut child = Command::new(bin())
        .args(["diagnose", "--netns", &netns, "--duration", "3", "--html"])
        .arg(&page)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting tcpstate diagnose");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    tracer::wait_until_tracing(&mut stderr).expect("diagnose did not start");
    // A client closing first, 100 connections a second, for the window.
    ns.run(|| {
        let listener = TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
            }
        });
        let start = Instant::now();
        for i in 1..300u32 {
            drop(TcpStream::connect(addr).expect("connect"));
            let next = start + Duration::from_millis(10) * i;
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "critical expected");

    let html = std::fs::read_to_string(&page).expect("the HTML report");
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "external assets"
    );
    let url = format!("file://{}", page.display());
    let shot = dir.join("diagnose-report.png");
    let _ = std::fs::remove_file(&shot);
    let headless = |extra: &[&str]| {
        Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args([
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1100,3200",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("running chromium")
    };
    let dom = headless(&["--dump-dom"]);
    assert!(dom.status.success(), "chromium --dump-dom failed");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("CRITICAL port_exhaustion"), "{dom}");
    assert_eq!(dom.matches("<svg").count(), 4, "four charts");
    let run = headless(&[&format!("--screenshot={}", shot.display())]);
    assert!(run.status.success(), "chromium --screenshot failed");
    // The page's own messages: none is an error.
    let log = String::from_utf8_lossy(&run.stderr);
    for line in log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
    {
        assert!(
            !line.contains("ERROR") && !line.contains("Uncaught"),
            "{line}"
        );
    }
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "{} bytes",
        png.len()
    );
}
