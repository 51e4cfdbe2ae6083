//! Client-supplied text on its way to a client, a log line or the audit
//! log: one line, every character that is not printable escaped, bounded.

/// Longest message sent to a client (and logged), in characters.
const MAX_MESSAGE: usize = 300;

/// One line: control characters and every other character that is not
/// printable ([`invisible`]) escaped, at most [`MAX_MESSAGE`] characters.
pub fn clean(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 3));
    for (n, c) in message.chars().enumerate() {
        if n >= MAX_MESSAGE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else if invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that are not controls but print nothing or change how the
/// rest of a line reads: line and paragraph separators (U+2028, U+2029),
/// bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E,
/// U+2066-U+2069), zero-width and other format characters (Unicode's `Cf`:
/// U+00AD, U+180E, U+200B-U+200D, U+2060-U+206F, U+FEFF, U+FFF9-U+FFFB,
/// the tags U+E0000-U+E007F), noncharacters and private use (nothing to
/// print).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{E000}'..='\u{F8FF}'
            | '\u{FDD0}'..='\u{FDEF}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{FFFE}'..='\u{FFFF}'
            | '\u{110BD}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
            | '\u{F0000}'..='\u{10FFFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_clean_bounded_line() {
        assert_eq!(clean("a\nb\x1b[31m\0"), "a\\nb\\u{1b}[31m\\u{0}");
        let long = clean(&"x".repeat(10_000));
        assert!(long.chars().count() <= MAX_MESSAGE + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn separators_bidi_and_zero_width_characters_are_escaped() {
        assert_eq!(
            clean("a\u{2028}b\u{2029}c\u{85}"),
            "a\\u{2028}b\\u{2029}c\\u{85}"
        );
        // `evil{U+202E}txt.exe` would read "evilexe.txt".
        assert_eq!(clean("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        for c in [
            '\u{061C}',
            '\u{200B}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{E0041}',
            '\u{E000}',
        ] {
            let out = clean(&format!("x{c}y"));
            assert!(!out.contains(c), "{c:?} reached {out:?}");
            assert!(out.starts_with("x\\u{") && out.ends_with("}y"), "{out}");
        }
        // Printable text, in any script, is kept as it is.
        assert_eq!(clean("Größe ファイル ملف ✓"), "Größe ファイル ملف ✓");
    }
}
