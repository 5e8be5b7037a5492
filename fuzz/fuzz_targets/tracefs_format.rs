//! Tracepoint `format` files from tracefs, and the checks made on a parsed one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpstate::kernel::tracefs::Format;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(format) = Format::parse("x", text) {
        let _ = format.offset::<u64>("skaddr");
        let _ = format.end();
    }
});
