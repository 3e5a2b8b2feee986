//! JSON for token headers and payloads, read strictly.
//!
//! A member name that appears twice in one object is refused at every depth:
//! RFC 7515 §5.2 allows a parser to refuse or to keep the last, and parsers
//! that disagree on which one wins are how signed claims get misread.
//! Nesting is bounded by serde_json's recursion limit (128).
//!
//! The check is a pass of its own that builds nothing: member names are
//! borrowed from the input (only names written with escapes are copied), so
//! the typed structs read afterwards with `serde_json::from_slice` can trust
//! that no member they see had a twin.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

/// Objects with more members than this keep their names in a set; smaller
/// ones are searched linearly, which is faster at the sizes tokens have
/// (a Keycloak access token has about 20 claims).
const LINEAR_NAMES: usize = 32;

/// What a strictly read object holds under one top-level member name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Member<'a> {
    /// No such member.
    Absent,
    /// A string (borrowed from the input unless written with escapes).
    String(Cow<'a, str>),
    /// Any other value, `null` included.
    Other,
}

/// A strictly read object.
#[derive(Debug)]
pub(crate) struct Read<'a> {
    /// Its top-level member of the name asked for.
    pub(crate) member: Member<'a>,
    /// At most how many heap bytes `serde_json` takes to hold it as a tree.
    pub(crate) tree_bytes: usize,
}

/// Checks that `bytes` are one JSON object with no duplicate member names at
/// any depth and no non-finite number, and returns its top-level member `name`.
/// `None` when the bytes are not such an object.
pub(crate) fn read_object<'a>(bytes: &'a [u8], name: &str) -> Option<Read<'a>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut names = Names {
        list: Vec::with_capacity(LINEAR_NAMES),
        tree_bytes: 0,
    };
    let member = de
        .deserialize_map(Object {
            names: &mut names,
            capture: name,
        })
        .ok()?;
    de.end().ok()?;
    Some(Read {
        member,
        tree_bytes: names.tree_bytes,
    })
}

/// The names of the objects being read, each with its [`tag`]: each open
/// object owns the names from where it started to the end, and drops them
/// when it closes, so the whole document shares one buffer. Beside them, what
/// the document would cost as a tree.
struct Names<'de> {
    list: Vec<(u64, Cow<'de, str>)>,
    tree_bytes: usize,
}

/// Heap bytes of a string of `len` bytes, with the allocator's overhead.
fn string_bytes(len: usize) -> usize {
    len.max(8) + 24
}

/// Heap bytes of a `serde_json::Map` (a B-tree) of `members` entries: a leaf
/// holds up to 11 (about 640 bytes with `String` keys and `Value`s); larger
/// maps have nodes at least half full, some of them internal (with edges).
fn map_bytes(members: usize) -> usize {
    match members {
        0 => 0,
        1..=11 => 640,
        _ => 740 * (1 + members / 5),
    }
}

/// Heap bytes of a `Vec<Value>` of `items` grown by pushes (32-byte values).
fn array_bytes(items: usize) -> usize {
    if items == 0 {
        0
    } else {
        32 * items.next_power_of_two().max(4) + 16
    }
}

/// The length and first bytes of a name: names with different tags differ,
/// so most comparisons are one integer's (many claim names are three letters).
/// Computed in registers: a byte buffer read back as a word stalls the CPU.
fn tag(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let len = u64::from(bytes.len().to_le_bytes()[0]);
    bytes
        .iter()
        .take(7)
        .fold(len, |tag, &b| (tag << 8) | u64::from(b))
}

/// The top-level object: checked like any other, and one member kept.
struct Object<'s, 'de> {
    names: &'s mut Names<'de>,
    capture: &'s str,
}

impl<'de> Visitor<'de> for Object<'_, 'de> {
    type Value = Member<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object without duplicate member names")
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Member<'de>, A::Error> {
        visit_object(access, self.names, Some(self.capture))
    }
}

/// Any value, checked; a string is returned when `keep` is set.
struct Checked<'s, 'de> {
    names: &'s mut Names<'de>,
    keep: bool,
}

impl<'de> DeserializeSeed<'de> for Checked<'_, 'de> {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_, 'de> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON without duplicate member names")
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.is_finite() {
            Ok(None)
        } else {
            Err(E::custom("not a finite number"))
        }
    }

    fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.names.tree_bytes += string_bytes(v.len());
        Ok(self.keep.then_some(Cow::Borrowed(v)))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        self.names.tree_bytes += string_bytes(v.len());
        Ok(self.keep.then(|| Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
        self.names.tree_bytes += string_bytes(v.len());
        Ok(self.keep.then_some(Cow::Owned(v)))
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let names = self.names;
        let mut items = 0;
        while seq
            .next_element_seed(Checked {
                names: &mut *names,
                keep: false,
            })?
            .is_some()
        {
            items += 1;
        }
        names.tree_bytes += array_bytes(items);
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        visit_object(access, self.names, None)?;
        Ok(None)
    }
}

/// Reads the members of an object, refusing a name seen before in it, and
/// returns its member `capture`, if asked for.
fn visit_object<'de, A: MapAccess<'de>>(
    mut access: A,
    names: &mut Names<'de>,
    capture: Option<&str>,
) -> Result<Member<'de>, A::Error> {
    let start = names.list.len();
    let mut members = 0;
    // Past `LINEAR_NAMES` members the names move here, so that a large object
    // is not quadratic; nested objects then use the shared buffer from `start`.
    let mut set: Option<HashSet<Cow<'de, str>>> = None;
    let mut member = Member::Absent;
    let capture = capture.map(|c| (tag(c), c));
    while let Some(name) = access.next_key_seed(Name)? {
        members += 1;
        names.tree_bytes += string_bytes(name.len());
        let tag = tag(&name);
        let keep = capture.is_some_and(|(t, c)| t == tag && c == name);
        let fresh = match &mut set {
            Some(set) => set.insert(name),
            None => {
                if names.list[start..]
                    .iter()
                    .any(|(t, n)| *t == tag && *n == name)
                {
                    false
                } else {
                    names.list.push((tag, name));
                    if names.list.len() - start > LINEAR_NAMES {
                        set = Some(names.list.drain(start..).map(|(_, n)| n).collect());
                    }
                    true
                }
            }
        };
        if !fresh {
            return Err(A::Error::custom("duplicate member name"));
        }
        let value = access.next_value_seed(Checked {
            names: &mut *names,
            keep,
        })?;
        if keep {
            member = value.map_or(Member::Other, Member::String);
        }
    }
    names.list.truncate(start);
    names.tree_bytes += map_bytes(members);
    Ok(member)
}

/// A member name, borrowed from the input when it has no escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_object(bytes: &[u8]) -> bool {
        read_object(bytes, "iss").is_some()
    }

    #[test]
    fn duplicate_names_are_refused_at_any_depth() {
        assert!(!is_object(br#"{"iss":"a","iss":"b"}"#));
        assert!(!is_object(
            br#"{"realm_access":{"roles":[],"roles":["admin"]}}"#
        ));
        assert!(!is_object(br#"{"a":[{"x":1,"x":2}]}"#));
        assert!(!is_object(br#"{"a":{"b":{"c":1,"d":2,"c":3}}}"#));
        assert!(!is_object(br#"{"iss":{"x":1,"x":2}}"#));
    }

    #[test]
    fn the_same_name_in_different_objects_is_not_a_duplicate() {
        assert!(is_object(
            br#"{"a":{"x":1,"a":{"x":2}},"b":{"x":3},"x":[{"x":4},{"x":5}]}"#
        ));
    }

    #[test]
    fn names_that_differ_only_in_escapes_are_duplicates() {
        assert!(!is_object(br#"{"a":1,"\u0061":2}"#));
        assert!(!is_object(br#"{"\u0061":1,"a":2}"#));
        assert!(!is_object(br#"{"x":{"a\/b":1,"a/b":2}}"#));
    }

    #[test]
    fn a_large_object_with_distinct_names_is_accepted_and_duplicates_in_it_refused() {
        let members: Vec<String> = (0..10_000).map(|i| format!("\"k{i}\":{i}")).collect();
        let object = format!("{{{}}}", members.join(","));
        assert!(is_object(object.as_bytes()));
        let twice = format!("{{{},\"k5\":0}}", members.join(","));
        assert!(!is_object(twice.as_bytes()));
        let escaped = format!("{{{},\"\\u006b9999\":0}}", members.join(","));
        assert!(!is_object(escaped.as_bytes()));
        let nested = format!("{{\"a\":{{{}}},\"k1\":{{\"k1\":1}}}}", members.join(","));
        assert!(is_object(nested.as_bytes()));
    }

    #[test]
    fn objects_are_read_and_other_values_are_not() {
        assert!(is_object(
            br#"{"a":1,"b":[true,null,"s",1.5],"c":{"d":-2}}"#
        ));
        for not_object in [
            &b"[]"[..],
            b"1",
            b"\"s\"",
            b"null",
            b"",
            b"{",
            b"{\"a\":1}x",
            b"{\"a\":1e400}",
        ] {
            assert!(!is_object(not_object), "{not_object:?}");
        }
    }

    #[test]
    fn the_named_member_is_returned_as_a_string_or_other_value() {
        let read = |json: &'static str| read_object(json.as_bytes(), "iss").map(|r| r.member);
        assert_eq!(read(r#"{"a":{"iss":1}}"#), Some(Member::Absent));
        assert_eq!(
            read(r#"{"iss":"https://x"}"#),
            Some(Member::String(Cow::Borrowed("https://x")))
        );
        assert_eq!(
            read(r#"{"iss":"https:\/\/x"}"#),
            Some(Member::String(Cow::Owned("https://x".to_owned())))
        );
        for other in [
            r#"{"iss":null}"#,
            r#"{"iss":["x"]}"#,
            r#"{"iss":{"a":"x"}}"#,
        ] {
            assert_eq!(read(other), Some(Member::Other), "{other}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(500), "]".repeat(500));
        assert!(!is_object(deep.as_bytes()));
        let shallow = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(is_object(shallow.as_bytes()));
    }
}
