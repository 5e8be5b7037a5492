//! Text from outside (process names, anything read from the host) made safe
//! for a terminal: control characters, backslashes and invalid UTF-8 are
//! written visibly as escapes (`\x1b`, `\\`, `\xff`), so no name can move
//! the cursor, retitle the window or forge an output line.

use std::{borrow::Cow, fmt::Write as _};

/// `bytes` with every control character, backslash and invalid UTF-8 byte
/// escaped; borrowed when nothing needed escaping (the common case).
pub fn escape(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && !text.chars().any(needs_escape)
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if needs_escape(c) && (c as u32) < 0x100 => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if needs_escape(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// [`escape`] of a `&str` (for text that is valid UTF-8 already).
pub fn escape_str(text: &str) -> Cow<'_, str> {
    escape(text.as_bytes())
}

/// Characters a terminal would act on or that would make the text
/// ambiguous: C0 and C1 controls, DEL, the backslash, and the Unicode
/// line and paragraph separators and bidirectional overrides.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` cut to at most `width` characters, the last one replaced by `…`
/// when it was longer: a column never grows past its width.
pub fn fit(text: &str, width: usize) -> Cow<'_, str> {
    if text.chars().count() <= width {
        return Cow::Borrowed(text);
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed() {
        assert!(matches!(escape(b"nginx"), Cow::Borrowed("nginx")));
        assert!(matches!(escape("café".as_bytes()), Cow::Borrowed("café")));
    }

    #[test]
    fn controls_and_invalid_bytes_are_visible() {
        assert_eq!(escape(b"a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape(b"\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
        assert_eq!(escape(b"a\nFAKE 1.2.3.4\r"), "a\\x0aFAKE 1.2.3.4\\x0d");
        assert_eq!(escape(b"x\xff\xfey"), "x\\xff\\xfey");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape("\u{9b}".as_bytes()), "\\x9b");
        assert_eq!(escape("\u{202e}evil".as_bytes()), "\\u{202e}evil");
        assert_eq!(escape(b"\x7f"), "\\x7f");
    }

    #[test]
    fn escaped_text_has_no_control_characters() {
        for b in 0..=255u8 {
            let input = [b'a', b, b'z'];
            let out = escape(&input);
            assert!(!out.chars().any(|c| c.is_control()), "{b:#x}: {out:?}");
        }
    }

    #[test]
    fn fit_cuts_to_the_width() {
        assert_eq!(fit("short", 15), "short");
        assert_eq!(fit("\\x1b\\x1b\\x1b\\x1b", 10), "\\x1b\\x1b\\…");
        assert_eq!(fit("\\x1b\\x1b\\x1b\\x1b", 10).chars().count(), 10);
    }
}
