//! The PROXY protocol header reader (signing-server/src/proxy.rs): whatever a
//! balancer sends, the reader asks for bytes only up to the header's end and
//! within its bounds, and the header ends in a source or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signing_server::proxy::{next_step, parse, Step, V1_MAX, V2_MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let mut read = 0usize;
    loop {
        let got = data.get(..read).unwrap_or(data);
        match next_step(got) {
            Ok(Step::Read(n)) => {
                assert!(n > 0, "a read of nothing would loop");
                read += n;
                assert!(read <= 16 + V2_MAX_PAYLOAD.max(V1_MAX), "past the bounds");
                if read > data.len() {
                    return; // the connection ended inside the header
                }
            }
            Ok(Step::Done) => {
                let _ = parse(got);
                return;
            }
            Err(_) => return,
        }
    }
});
