use super::*;

const B: &str = "XyZ-boundary-123";

fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in parts {
        out.extend_from_slice(format!("--{B}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
    out
}

/// Feeds `input` in pieces of `step` bytes; returns the parts with their data.
fn parse(input: &[u8], step: usize) -> Result<Vec<(PartHead, Vec<u8>)>, FormError> {
    let mut p = Parser::new(B, Limits::default())?;
    let mut parts: Vec<(PartHead, Vec<u8>)> = Vec::new();
    let mut chunks = input.chunks(step.max(1));
    let mut eof = false;
    loop {
        match p.next(eof)? {
            Event::NeedMore => match chunks.next() {
                Some(c) => p.push(c),
                None => eof = true,
            },
            Event::Part(h) => parts.push((h, Vec::new())),
            Event::Data(d) => parts
                .last_mut()
                .expect("data inside a part")
                .1
                .extend_from_slice(&d),
            Event::PartEnd => {}
            Event::End => return Ok(parts),
        }
        assert!(p.buffered() <= 16 * 1024 + input.len().min(64 * 1024));
    }
}

#[test]
fn reads_fields_and_a_file_whatever_the_chunking() {
    // File data holding CR LF, dashes and most of a delimiter.
    let file: &[u8] = b"\r\n--XyZ-boundary-12\r\n--\r\n-- binary \x00\xff end";
    let input = body(&[
        ("token", None, b"abc"),
        ("sha256", None, b""),
        ("filedata", Some("a b\\\".exe"), file),
    ]);
    for step in [1, 2, 3, 7, 17, 64, input.len()] {
        let parts = parse(&input, step).unwrap();
        assert_eq!(parts.len(), 3, "step {step}");
        assert_eq!(parts[0].0.name, "token");
        assert_eq!(parts[0].1, b"abc");
        assert_eq!(parts[1].1, b"");
        assert_eq!(parts[2].0.name, "filedata");
        assert_eq!(parts[2].0.filename.as_deref(), Some("a b\".exe"));
        assert_eq!(parts[2].1, file, "step {step}");
    }
}

#[test]
fn a_preamble_and_padding_are_allowed() {
    let mut input = b"this is a preamble\r\n".to_vec();
    let rest = body(&[("nonce", None, b"1")]).replacen(
        format!("--{B}\r\n").as_bytes(),
        format!("--{B} \t\r\n").as_bytes(),
    );
    input.extend_from_slice(&rest);
    let parts = parse(&input, 5).unwrap();
    assert_eq!(parts[0].1, b"1");
}

trait Replacen {
    fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl Replacen for Vec<u8> {
    fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let i = memchr::memmem::find(self, from).expect("present");
        let mut out = self[..i].to_vec();
        out.extend_from_slice(to);
        out.extend_from_slice(&self[i + from.len()..]);
        out
    }
}

#[test]
fn an_endless_part_header_is_refused_without_buffering_it() {
    let mut p = Parser::new(B, Limits { head: 1024 }).unwrap();
    p.push(format!("--{B}\r\nContent-Disposition: form-data; name=\"").as_bytes());
    let piece = [b'A'; 100];
    let mut refused = None;
    for _ in 0..1000 {
        match p.next(false) {
            Ok(Event::NeedMore) => p.push(&piece),
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
        assert!(p.buffered() < 1024 + 200, "buffered {}", p.buffered());
    }
    assert_eq!(refused, Some(FormError::HeadTooLong(1024)));
}

#[test]
fn an_endless_preamble_is_refused() {
    let mut p = Parser::new(B, Limits { head: 512 }).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        match p.next(false) {
            Ok(Event::NeedMore) => p.push(&[b'-'; 64]),
            Err(FormError::HeadTooLong(512)) => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused);
}

#[test]
fn a_long_preamble_is_refused_even_with_its_boundary_in_the_same_piece() {
    let mut input = vec![b'x'; 9000];
    input.extend_from_slice(&body(&[("a", None, b"1")]));
    let mut p = Parser::new(B, Limits::default()).unwrap();
    p.push(&input);
    assert_eq!(p.next(true), Err(FormError::HeadTooLong(8192)));
    // 8 KiB of it is fine.
    let mut input = vec![b'x'; 8192];
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(&body(&[("a", None, b"1")]));
    assert_eq!(parse(&input, input.len()).unwrap().len(), 1);
}

#[test]
fn every_parsed_byte_is_counted() {
    let input = body(&[("a", None, b"12345"), ("", None, b"")]);
    let mut p = Parser::new(B, Limits::default()).unwrap();
    p.push(&input);
    let mut seen = Vec::new();
    loop {
        match p.next(true).unwrap() {
            Event::End => break,
            e => seen.push((e, p.consumed())),
        }
    }
    let head = format!("--{B}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n").len() as u64;
    assert!(
        matches!(seen[0], (Event::Part(_), n) if n == head),
        "{seen:?}"
    );
    assert!(
        matches!(seen[1], (Event::Data(_), n) if n == head + 5),
        "{seen:?}"
    );
    // Up to the closing boundary's `--`: all of it.
    let (_, last) = seen.last().unwrap();
    assert_eq!(*last, (input.len() - "--\r\n".len()) as u64);
}

#[test]
fn malformed_bodies_are_errors_not_panics() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "no boundary"),
        (b"--XyZ-boundary-123", "ends after a boundary"),
        (b"--XyZ-boundary-123xx", "followed by other text"),
        (b"--XyZ-boundary-123\r\nNoColon\r\n\r\n", "no colon"),
        (b"--XyZ-boundary-123\r\n\r\nx", "no Content-Disposition"),
        (
            b"--XyZ-boundary-123\r\nContent-Disposition: attachment; name=a\r\n\r\n",
            "not form-data",
        ),
        (
            b"--XyZ-boundary-123\r\nContent-Disposition: form-data\r\n\r\n",
            "no name",
        ),
        (
            b"--XyZ-boundary-123\r\nContent-Disposition: form-data; name=a\r\n\r\nabc",
            "ends inside a part",
        ),
        (
            b"--XyZ-boundary-123\r\nContent-Disposition: form-data; name=a",
            "inside a part header",
        ),
        (
            b"--XyZ-boundary-123\r\nContent-Disposition: form-data; name=\xff\r\n\r\n",
            "not UTF-8",
        ),
    ];
    for (input, want) in cases {
        for step in [1, 4, 1000] {
            let e = parse(input, step).expect_err(want);
            assert!(e.to_string().contains(want), "{want}: got {e}");
        }
    }
}

#[test]
fn boundaries_from_content_types() {
    assert_eq!(
        boundary("multipart/form-data; boundary=abc").as_deref(),
        Some("abc")
    );
    assert_eq!(
        boundary("Multipart/Form-Data ; charset=x; Boundary=\"a;b c\"").as_deref(),
        Some("a;b c")
    );
    assert_eq!(boundary("application/x-www-form-urlencoded"), None);
    assert_eq!(boundary("multipart/form-data"), None);
    assert!(Parser::new("", Limits::default()).is_err());
    assert!(Parser::new(&"x".repeat(71), Limits::default()).is_err());
}

#[test]
fn the_stream_reader_yields_the_same_events() {
    let input = body(&[
        ("token", None, b"t"),
        ("filedata", Some("f"), b"0123456789"),
    ]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = input
        .chunks(3)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut form = Form::new(futures_util::stream::iter(chunks), B, Limits::default()).unwrap();
        let mut data = Vec::new();
        let mut names = Vec::new();
        loop {
            match form.next().await.unwrap() {
                Event::Part(h) => names.push(h.name),
                Event::Data(d) => data.extend_from_slice(&d),
                Event::PartEnd => {}
                Event::End => break,
                Event::NeedMore => panic!("Form never answers NeedMore"),
            }
        }
        assert_eq!(names, ["token", "filedata"]);
        assert_eq!(data, b"t0123456789");
    });
}
