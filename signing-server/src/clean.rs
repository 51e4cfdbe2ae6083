//! Client-supplied text on its way to a client, a log line or the audit
//! log: one line, control characters escaped, bounded.

/// Longest message sent to a client (and logged), in characters.
const MAX_MESSAGE: usize = 300;

/// One line: control characters escaped, at most [`MAX_MESSAGE`] characters.
pub fn clean(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 3));
    for (n, c) in message.chars().enumerate() {
        if n >= MAX_MESSAGE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
}
