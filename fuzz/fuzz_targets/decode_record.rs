//! Ring-buffer records: whatever bytes the kernel side hands over, decoding
//! returns an event or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tcpstate::kernel::decode::decode(data);
});
