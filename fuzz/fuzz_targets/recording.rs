//! A recording for `diagnose --input`: read into evidence, diagnosed, and
//! the report laid out as text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpstate::{
    diagnose::{findings, recording},
    render::{Report, report},
};

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = recording::read(data, 60.0) else {
        return;
    };
    let found = findings::diagnose(&ev, 0.5);
    let _ = report::render(&Report::new(&found, &ev, "recording", None));
});
