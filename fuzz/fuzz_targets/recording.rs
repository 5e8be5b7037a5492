//! A recording for `diagnose --input`: read into evidence, diagnosed, and
//! the report laid out as text and as the HTML page with its charts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpstate::{
    diagnose::{findings, recording},
    render::{Report, html, report},
};

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = recording::read(data, 60.0) else {
        return;
    };
    let found = findings::diagnose(&ev, 0.5);
    let r = Report::new(&found, &ev, "recording", None);
    let _ = report::render(&r);
    let _ = html::page(&r, &ev, &findings::pools(&ev, 0.5));
});
