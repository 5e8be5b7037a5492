//! JSON encoding of the per-socket records `watch --json` writes for every
//! transition: each record's fields are declared once ([`fields!`]) and
//! written straight into a line buffer, keys as constants, integers with
//! itoa, floats with zmij and strings that may need escaping with
//! serde_json, so the bytes are those serde_json would write.
//!
//! Why not serde's generic path: it writes every key through serde_json's
//! string escaper, several small writes each, and profiles of a traced
//! connection storm put that path at about half of the tracer's CPU. Rare
//! records (summaries, totals) still use serde.

use std::{
    borrow::Cow,
    io::Write,
    net::{IpAddr, Ipv4Addr},
};

/// A value that writes itself as JSON.
pub trait Value {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// Writes `text`, which needs no escaping (names, digits, times), as a
/// JSON string.
pub fn plain_str(text: &[u8], out: &mut Vec<u8>) {
    debug_assert!(
        !text.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\'),
        "{:?} needs escaping",
        String::from_utf8_lossy(text)
    );
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// Names from tcpstate's own tables (states, roles, families): ASCII that
/// needs no escaping, written as they are.
impl Value for &'static str {
    fn write_json(&self, out: &mut Vec<u8>) {
        plain_str(self.as_bytes(), out);
    }
}

/// Text from outside (a process name): escaped by serde_json.
impl Value for Cow<'_, str> {
    fn write_json(&self, out: &mut Vec<u8>) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self.as_ref());
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write_json(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
integers!(u16, u32, u64);

impl Value for f64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        // As serde_json: no JSON number for infinities and NaN.
        if self.is_finite() {
            out.extend_from_slice(zmij::Buffer::new().format_finite(*self).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
    }
}

impl Value for bool {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl<T: Value> Value for Option<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => v.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

impl Value for IpAddr {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        match self {
            IpAddr::V4(a) => dotted(*a, out),
            // Writing into a Vec cannot fail.
            IpAddr::V6(a) => drop(write!(out, "{a}")),
        }
        out.push(b'"');
    }
}

/// `a.b.c.d`, as `Ipv4Addr`'s `Display` writes it, without its padding
/// machinery: at most 15 bytes, written digit by digit into one slice.
fn dotted(a: Ipv4Addr, out: &mut Vec<u8>) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in a.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.extend_from_slice(&text[..len]);
}

/// Fields written into an enclosing JSON object, each after a comma.
pub trait Fields {
    fn write_fields(&self, out: &mut Vec<u8>);
}

/// Declares a struct and implements [`Fields`] for it: one field list,
/// written in declaration order.
macro_rules! fields {
    (
        $(#[$meta:meta])*
        struct $name:ident $(<$lt:lifetime>)? { $($field:ident: $ty:ty,)* }
    ) => {
        $(#[$meta])*
        struct $name $(<$lt>)? { $($field: $ty,)* }

        impl $(<$lt>)? $crate::render::encode::Fields for $name $(<$lt>)? {
            fn write_fields(&self, out: &mut Vec<u8>) {
                $(
                    out.extend_from_slice(concat!(",\"", stringify!($field), "\":").as_bytes());
                    $crate::render::encode::Value::write_json(&self.$field, out);
                )*
            }
        }
    };
}
pub(crate) use fields;

/// Writes one JSON object as a line: `type` first, then `fields`.
pub fn line(r#type: &'static str, fields: &impl Fields, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":");
    r#type.write_json(out);
    fields.write_fields(out);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    /// What serde_json writes for `v`.
    fn serde(v: &impl Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    fn ours(v: &impl Value) -> String {
        let mut out = Vec::new();
        v.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        for f in [
            0.0,
            0.001,
            12.3,
            1532.0,
            60000.0,
            1e21,
            123456789.123456,
            -0.5,
        ] {
            assert_eq!(ours(&f), serde(&f), "{f}");
        }
        assert_eq!(ours(&f64::NAN), "null");
        assert_eq!(ours(&f64::INFINITY), "null");
        for n in [0u64, 9, 10, 4026531840, u64::MAX] {
            assert_eq!(ours(&n), serde(&n));
        }
        assert_eq!(ours(&u16::MAX), "65535");
        assert_eq!(ours(&u32::MAX), "4294967295");
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.255.0",
            "100.90.9.109",
            "255.255.255.255",
            "::1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            let a: IpAddr = a.parse().unwrap();
            assert_eq!(ours(&a), serde(&a));
        }
        for s in ["curl", "a\"b\\c\u{e9}", "tab\there", "\u{1}\u{1f}", ""] {
            assert_eq!(ours(&Cow::Borrowed(s)), serde(&s));
        }
        assert_eq!(ours(&"ESTABLISHED"), "\"ESTABLISHED\"");
        assert_eq!(ours(&Some(true)), "true");
        assert_eq!(ours(&None::<bool>), "null");
        assert_eq!(ours(&false), "false");
    }

    fields! {
        struct Pair<'a> {
            name: Option<Cow<'a, str>>,
            port: u16,
        }
    }

    #[test]
    fn a_line_is_one_object_with_the_type_first() {
        let mut out = Vec::new();
        let pair = Pair {
            name: Some("x\"y".into()),
            port: 80,
        };
        line("pair", &pair, &mut out);
        assert_eq!(
            out,
            b"{\"type\":\"pair\",\"name\":\"x\\\"y\",\"port\":80}\n"
        );
    }
}
