//! The upload form reader (signing-server/src/form.rs): any body, fed in
//! pieces of any size, ends in events or an error, never a panic; the
//! reader never holds more than one part header plus one piece; the data it
//! hands out is never more than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signing_server::form::{Event, Limits, Parser};

const BOUNDARY: &str = "fuzz-boundary";

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let limits = Limits { head: 256 };
    let mut p = Parser::new(BOUNDARY, limits).expect("valid boundary");
    let mut pieces = body.chunks(step);
    let (mut eof, mut handed_out) = (false, 0usize);
    loop {
        match p.next(eof) {
            Ok(Event::NeedMore) => match pieces.next() {
                Some(piece) => p.push(piece),
                None => eof = true,
            },
            Ok(Event::Data(d)) => handed_out += d.len(),
            Ok(Event::Part(_) | Event::PartEnd) => {}
            Ok(Event::End) | Err(_) => break,
        }
        assert!(p.buffered() <= limits.head + step + 2 * BOUNDARY.len() + 8);
    }
    assert!(handed_out <= body.len());
});
