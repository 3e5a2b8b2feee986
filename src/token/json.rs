//! JSON for token headers and payloads, read strictly.
//!
//! A member name that appears twice in one object is refused at every depth:
//! RFC 7515 §5.2 allows a parser to refuse or to keep the last, and parsers
//! that disagree on which one wins are how signed claims get misread.
//! Nesting is bounded by serde_json's recursion limit (128).
//!
//! The check and the typed read are one pass that builds no tree: member
//! names are borrowed from the input (only names written with escapes are
//! copied); the members portcullis reads are read as their types as serde's
//! implementations for them would read them from `serde_json`, and every
//! other member is checked and skipped. A known member of the wrong type is
//! not an error of the pass: it is reported as [`Wrong`], so that the caller
//! can refuse it where it refused the typed read before, after the signature.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

use super::{Audience, Claims, Roles};

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
#[cfg(test)]
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
#[cfg(test)]
pub(crate) fn read_object<'a>(bytes: &'a [u8], name: &str) -> Option<Read<'a>> {
    let mut capture = Capture {
        tag: tag(name),
        name,
        member: Member::Absent,
    };
    let tree_bytes = read_with(bytes, &mut capture)?;
    Some(Read {
        member: capture.member,
        tree_bytes,
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

/// What one object's reader does with its members: those it names a slot for
/// are handed to `read`; every other is checked and skipped.
trait Members<'de> {
    /// The slot of the member `name` (whose [`tag`] is `tag`), if it is read.
    fn wants(&mut self, tag: u64, name: &str) -> Option<u8>;

    /// Reads the value of the member given slot `slot`.
    fn read<A: MapAccess<'de>>(
        &mut self,
        slot: u8,
        access: &mut A,
        names: &mut Names<'de>,
    ) -> Result<(), A::Error>;
}

/// An object none of whose members is read: checked only.
struct Skip;

impl<'de> Members<'de> for Skip {
    fn wants(&mut self, _: u64, _: &str) -> Option<u8> {
        None
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        _: u8,
        access: &mut A,
        names: &mut Names<'de>,
    ) -> Result<(), A::Error> {
        skip_value(access, names)
    }
}

/// Checks and skips the next value of `access`.
fn skip_value<'de, A: MapAccess<'de>>(
    access: &mut A,
    names: &mut Names<'de>,
) -> Result<(), A::Error> {
    access.next_value_seed(Checked { names, keep: false })?;
    Ok(())
}

/// The top-level object, read by `members`.
struct Object<'s, 'de, M> {
    names: &'s mut Names<'de>,
    members: &'s mut M,
}

impl<'de, M: Members<'de>> Visitor<'de> for Object<'_, 'de, M> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object without duplicate member names")
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<(), A::Error> {
        visit_object(access, self.names, self.members)
    }
}

/// Reads `bytes` as one object with `members`; `None` when they are not an
/// object without duplicate names and non-finite numbers, and otherwise what
/// the object would take as a tree.
fn read_with<'de, M: Members<'de>>(bytes: &'de [u8], members: &mut M) -> Option<usize> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut names = Names {
        list: Vec::with_capacity(LINEAR_NAMES),
        tree_bytes: 0,
    };
    de.deserialize_map(Object {
        names: &mut names,
        members,
    })
    .ok()?;
    de.end().ok()?;
    Some(names.tree_bytes)
}

/// The top-level member of one name, kept.
#[cfg(test)]
struct Capture<'n, 'de> {
    tag: u64,
    name: &'n str,
    member: Member<'de>,
}

#[cfg(test)]
impl<'de> Members<'de> for Capture<'_, 'de> {
    fn wants(&mut self, tag: u64, name: &str) -> Option<u8> {
        (tag == self.tag && name == self.name).then_some(0)
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        _: u8,
        access: &mut A,
        names: &mut Names<'de>,
    ) -> Result<(), A::Error> {
        let value = access.next_value_seed(Checked { names, keep: true })?;
        self.member = value.map_or(Member::Other, Member::String);
        Ok(())
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
        finite(v)?;
        Ok(None)
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
        finish_array(&mut seq, self.names, 0)?;
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        visit_object(access, self.names, &mut Skip)?;
        Ok(None)
    }
}

/// Checks the rest of an array after `read` items, and counts the whole
/// array as a tree would hold it; returns how many items it had.
fn finish_array<'de, A: SeqAccess<'de>>(
    seq: &mut A,
    names: &mut Names<'de>,
    read: usize,
) -> Result<usize, A::Error> {
    let mut items = read;
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
    Ok(items)
}

/// Refuses a number that is not finite.
fn finite<E: Error>(v: f64) -> Result<(), E> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(E::custom("not a finite number"))
    }
}

/// Reads the members of an object with `members`, refusing a name seen
/// before in it.
fn visit_object<'de, A: MapAccess<'de>, M: Members<'de>>(
    mut access: A,
    names: &mut Names<'de>,
    members: &mut M,
) -> Result<(), A::Error> {
    let start = names.list.len();
    let mut count = 0;
    // Past `LINEAR_NAMES` members the names move here, so that a large object
    // is not quadratic; nested objects then use the shared buffer from `start`.
    let mut set: Option<HashSet<Cow<'de, str>>> = None;
    while let Some(name) = access.next_key_seed(Name)? {
        count += 1;
        names.tree_bytes += string_bytes(name.len());
        let tag = tag(&name);
        let slot = members.wants(tag, &name);
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
        match slot {
            Some(slot) => members.read(slot, &mut access, names)?,
            None => skip_value(&mut access, names)?,
        }
    }
    names.list.truncate(start);
    names.tree_bytes += map_bytes(count);
    Ok(())
}

// === typed reads ===

/// A well-formed value of a type other than the one a claim needs: reported
/// only where the typed claims are asked for, after the signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrong;

/// A value read as a type, or [`Wrong`].
type Fit<T> = Result<T, Wrong>;

/// A type a value is read as, by what serde's own implementation accepts
/// from `serde_json`: each kind of JSON value fits, or is [`Wrong`] (and is
/// then checked and skipped like any other value).
trait Kind<'de>: Sized {
    type Out;

    fn unit(self) -> Fit<Self::Out> {
        Err(Wrong)
    }

    /// An integer: `None` when it does not fit an `i64`.
    fn integer(self, _: Option<i64>) -> Fit<Self::Out> {
        Err(Wrong)
    }

    fn string(self, _: Cow<'de, str>) -> Fit<Self::Out> {
        Err(Wrong)
    }

    fn seq<A: SeqAccess<'de>>(
        self,
        seq: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Self::Out>, A::Error> {
        Checked { names, keep: false }.visit_seq(seq)?;
        Ok(Err(Wrong))
    }

    fn map<A: MapAccess<'de>>(
        self,
        access: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Self::Out>, A::Error> {
        visit_object(access, names, &mut Skip)?;
        Ok(Err(Wrong))
    }
}

/// Any value, checked, and read as `K`.
struct Typed<'s, 'de, K> {
    names: &'s mut Names<'de>,
    kind: K,
}

impl<'de, K: Kind<'de>> DeserializeSeed<'de> for Typed<'_, 'de, K> {
    type Value = Fit<K::Out>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, K: Kind<'de>> Visitor<'de> for Typed<'_, 'de, K> {
    type Value = Fit<K::Out>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON without duplicate member names")
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(Wrong))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.kind.integer(Some(v)))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.kind.integer(i64::try_from(v).ok()))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        finite(v)?;
        Ok(Err(Wrong))
    }

    fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.names.tree_bytes += string_bytes(v.len());
        Ok(self.kind.string(Cow::Borrowed(v)))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        self.names.tree_bytes += string_bytes(v.len());
        Ok(self.kind.string(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
        self.names.tree_bytes += string_bytes(v.len());
        Ok(self.kind.string(Cow::Owned(v)))
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(self.kind.unit())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.kind.seq(seq, self.names)
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        self.kind.map(access, self.names)
    }
}

/// Reads the next value of `access` as `kind`.
fn next_typed<'de, A: MapAccess<'de>, K: Kind<'de>>(
    access: &mut A,
    names: &mut Names<'de>,
    kind: K,
) -> Result<Fit<K::Out>, A::Error> {
    access.next_value_seed(Typed { names, kind })
}

/// `String`.
struct Text;

impl<'de> Kind<'de> for Text {
    type Out = String;

    fn string(self, v: Cow<'de, str>) -> Fit<String> {
        Ok(v.into_owned())
    }
}

/// `Cow<str>` borrowed from the input where it can be.
struct BorrowedText;

impl<'de> Kind<'de> for BorrowedText {
    type Out = Cow<'de, str>;

    fn string(self, v: Cow<'de, str>) -> Fit<Cow<'de, str>> {
        Ok(v)
    }
}

/// `Option<String>`.
struct OptText;

impl<'de> Kind<'de> for OptText {
    type Out = Option<String>;

    fn unit(self) -> Fit<Option<String>> {
        Ok(None)
    }

    fn string(self, v: Cow<'de, str>) -> Fit<Option<String>> {
        Ok(Some(v.into_owned()))
    }
}

/// `Option<i64>`: integers in its range (floats, even integral, are not).
struct OptTime;

impl<'de> Kind<'de> for OptTime {
    type Out = Option<i64>;

    fn unit(self) -> Fit<Option<i64>> {
        Ok(None)
    }

    fn integer(self, v: Option<i64>) -> Fit<Option<i64>> {
        v.map(Some).ok_or(Wrong)
    }
}

/// `Vec<String>`.
struct TextList;

impl<'de> Kind<'de> for TextList {
    type Out = Vec<String>;

    fn seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Vec<String>>, A::Error> {
        let mut all = Ok(Vec::new());
        let mut items = 0;
        while let Some(item) = seq.next_element_seed(Typed {
            names: &mut *names,
            kind: Text,
        })? {
            items += 1;
            match (&mut all, item) {
                (Ok(all), Ok(item)) => all.push(item),
                (all, _) => *all = Err(Wrong),
            }
        }
        names.tree_bytes += array_bytes(items);
        Ok(all)
    }
}

/// `Audience`, as its `Deserialize` reads it.
struct Aud;

impl<'de> Kind<'de> for Aud {
    type Out = Audience;

    fn unit(self) -> Fit<Audience> {
        Ok(Audience::None)
    }

    fn string(self, v: Cow<'de, str>) -> Fit<Audience> {
        Ok(Audience::One(v.into_owned()))
    }

    fn seq<A: SeqAccess<'de>>(
        self,
        seq: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Audience>, A::Error> {
        Ok(TextList.seq(seq, names)?.map(Audience::Many))
    }
}

/// `Roles`, as its derived `Deserialize` reads it: an object whose `roles`
/// (if any) is a list of strings, or an array holding nothing or that list.
struct RolesKind;

impl<'de> Kind<'de> for RolesKind {
    type Out = Roles;

    fn seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Roles>, A::Error> {
        let roles = seq.next_element_seed(Typed {
            names: &mut *names,
            kind: TextList,
        })?;
        let items = finish_array(&mut seq, names, usize::from(roles.is_some()))?;
        Ok(match roles {
            _ if items > 1 => Err(Wrong),
            None => Ok(Roles::default()),
            Some(roles) => roles.map(|roles| Roles { roles }),
        })
    }

    fn map<A: MapAccess<'de>>(
        self,
        access: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Roles>, A::Error> {
        let mut members = RolesMembers(Ok(Vec::new()));
        visit_object(access, names, &mut members)?;
        Ok(members.0.map(|roles| Roles { roles }))
    }
}

/// The members of a `Roles` object.
struct RolesMembers(Fit<Vec<String>>);

impl<'de> Members<'de> for RolesMembers {
    fn wants(&mut self, _: u64, name: &str) -> Option<u8> {
        (name == "roles").then_some(0)
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        _: u8,
        access: &mut A,
        names: &mut Names<'de>,
    ) -> Result<(), A::Error> {
        self.0 = next_typed(access, names, TextList)?;
        Ok(())
    }
}

/// `Option<Roles>`.
struct OptRoles;

impl<'de> Kind<'de> for OptRoles {
    type Out = Option<Roles>;

    fn unit(self) -> Fit<Option<Roles>> {
        Ok(None)
    }

    fn seq<A: SeqAccess<'de>>(
        self,
        seq: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Option<Roles>>, A::Error> {
        Ok(RolesKind.seq(seq, names)?.map(Some))
    }

    fn map<A: MapAccess<'de>>(
        self,
        access: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<Option<Roles>>, A::Error> {
        Ok(RolesKind.map(access, names)?.map(Some))
    }
}

/// `HashMap<String, Roles>`: an object only (not `null`).
struct Clients;

impl<'de> Kind<'de> for Clients {
    type Out = HashMap<String, Roles>;

    fn map<A: MapAccess<'de>>(
        self,
        access: A,
        names: &mut Names<'de>,
    ) -> Result<Fit<HashMap<String, Roles>>, A::Error> {
        let mut members = ClientsMembers {
            clients: Ok(HashMap::new()),
            name: String::new(),
        };
        visit_object(access, names, &mut members)?;
        Ok(members.clients)
    }
}

/// The members of `resource_access`, each a client's `Roles`.
struct ClientsMembers {
    clients: Fit<HashMap<String, Roles>>,
    /// The name of the member being read.
    name: String,
}

impl<'de> Members<'de> for ClientsMembers {
    fn wants(&mut self, _: u64, name: &str) -> Option<u8> {
        if self.clients.is_ok() {
            name.clone_into(&mut self.name);
        }
        Some(0)
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        _: u8,
        access: &mut A,
        names: &mut Names<'de>,
    ) -> Result<(), A::Error> {
        let roles = next_typed(access, names, RolesKind)?;
        match (&mut self.clients, roles) {
            (Ok(clients), Ok(roles)) => {
                clients.insert(std::mem::take(&mut self.name), roles);
            }
            (clients, _) => *clients = Err(Wrong),
        }
        Ok(())
    }
}

// === the payload ===

/// A payload read strictly in one pass.
#[derive(Debug)]
pub(crate) struct ReadClaims<'a> {
    /// Its `iss`.
    pub(crate) iss: Member<'a>,
    /// At most how many heap bytes `serde_json` takes to hold it as a tree.
    pub(crate) tree_bytes: usize,
    /// The claims portcullis reads, with `iss` left empty (it is in `iss`);
    /// [`Wrong`] when one of them is of the wrong type.
    pub(crate) claims: Fit<Claims>,
}

/// Checks that `bytes` are one JSON object with no duplicate member names at
/// any depth and no non-finite number, and reads its claims: what
/// `read_object(bytes, "iss")` and then `serde_json::from_slice::<Claims>`
/// would give, in one pass. `None` when the bytes are not such an object.
pub(crate) fn read_claims(bytes: &[u8]) -> Option<ReadClaims<'_>> {
    let mut members = ClaimsMembers {
        iss: Member::Absent,
        claims: Ok(Claims::default()),
    };
    let tree_bytes = read_with(bytes, &mut members)?;
    Some(ReadClaims {
        iss: members.iss,
        tree_bytes,
        claims: members.claims,
    })
}

struct ClaimsMembers<'de> {
    iss: Member<'de>,
    claims: Fit<Claims>,
}

const ISS: u8 = 0;
const SUB: u8 = 1;
const AUD: u8 = 2;
const EXP: u8 = 3;
const NBF: u8 = 4;
const IAT: u8 = 5;
const TYP: u8 = 6;
const AZP: u8 = 7;
const SCOPE: u8 = 8;
const PREFERRED_USERNAME: u8 = 9;
const REALM_ACCESS: u8 = 10;
const RESOURCE_ACCESS: u8 = 11;

impl<'de> Members<'de> for ClaimsMembers<'de> {
    fn wants(&mut self, _: u64, name: &str) -> Option<u8> {
        Some(match name {
            "iss" => ISS,
            "sub" => SUB,
            "aud" => AUD,
            "exp" => EXP,
            "nbf" => NBF,
            "iat" => IAT,
            "typ" => TYP,
            "azp" => AZP,
            "scope" => SCOPE,
            "preferred_username" => PREFERRED_USERNAME,
            "realm_access" => REALM_ACCESS,
            "resource_access" => RESOURCE_ACCESS,
            _ => return None,
        })
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        slot: u8,
        access: &mut A,
        names: &mut Names<'de>,
    ) -> Result<(), A::Error> {
        /// Reads the value as `kind` into the field `field` of the claims.
        macro_rules! field {
            ($kind:expr, $field:ident) => {{
                let value = next_typed(access, names, $kind)?;
                match (&mut self.claims, value) {
                    (Ok(claims), Ok(value)) => claims.$field = value,
                    (claims, _) => *claims = Err(Wrong),
                }
            }};
        }
        match slot {
            ISS => {
                let value = access.next_value_seed(Checked { names, keep: true })?;
                self.iss = value.map_or(Member::Other, Member::String);
            }
            SUB => field!(OptText, sub),
            AUD => field!(Aud, aud),
            EXP => field!(OptTime, exp),
            NBF => field!(OptTime, nbf),
            IAT => field!(OptTime, iat),
            TYP => field!(OptText, typ),
            AZP => field!(OptText, azp),
            SCOPE => field!(OptText, scope),
            PREFERRED_USERNAME => field!(OptText, preferred_username),
            REALM_ACCESS => field!(OptRoles, realm_access),
            RESOURCE_ACCESS => field!(Clients, resource_access),
            _ => skip_value(access, names)?,
        }
        Ok(())
    }
}

// === the header ===

/// A JWS header read strictly in one pass.
#[derive(Debug)]
pub(crate) struct ReadHeader<'a> {
    /// `alg`, or [`Wrong`] when it is absent or not a string.
    pub(crate) alg: Fit<Cow<'a, str>>,
    /// `kid`, or [`Wrong`] when it is neither a string nor `null`.
    pub(crate) kid: Fit<Option<String>>,
    /// Whether it has `crit`, in any form.
    pub(crate) crit: bool,
}

/// Checks that `bytes` are one JSON object as [`read_claims`] does, and reads
/// its `alg`, `kid` and `crit`. `None` when the bytes are not such an object.
pub(crate) fn read_header(bytes: &[u8]) -> Option<ReadHeader<'_>> {
    let mut header = ReadHeader {
        alg: Err(Wrong),
        kid: Ok(None),
        crit: false,
    };
    read_with(bytes, &mut header)?;
    Some(header)
}

impl<'de> Members<'de> for ReadHeader<'de> {
    fn wants(&mut self, _: u64, name: &str) -> Option<u8> {
        match name {
            "alg" => Some(0),
            "kid" => Some(1),
            "crit" => Some(2),
            _ => None,
        }
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        slot: u8,
        access: &mut A,
        names: &mut Names<'de>,
    ) -> Result<(), A::Error> {
        match slot {
            0 => self.alg = next_typed(access, names, BorrowedText)?,
            1 => self.kid = next_typed(access, names, OptText)?,
            _ => {
                self.crit = true;
                skip_value(access, names)?;
            }
        }
        Ok(())
    }
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

    /// JSON text for a value: any kind, often of a type a claim needs, with
    /// floats, integers beyond i64, escapes and (in objects) duplicate names.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("1767225900".to_owned()),
            Just("-5".to_owned()),
            Just("-0".to_owned()),
            Just("1.5e9".to_owned()),
            Just("1767225900.0".to_owned()),
            Just("9223372036854775807".to_owned()),
            Just("9223372036854775808".to_owned()),
            Just("-9223372036854775809".to_owned()),
            Just("1e400".to_owned()),
            Just("\"Bearer\"".to_owned()),
            Just("\"a\\/b\\u00e9\"".to_owned()),
            Just("\"\"".to_owned()),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            let name = prop_oneof![
                Just("roles"),
                Just("r\\u006fles"),
                Just("orders-api"),
                Just("account"),
                Just("x"),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((name, inner), 0..4).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(n, v)| format!("\"{n}\":{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    /// JSON text for a payload: known claims, others, and escaped names.
    fn payload() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just("iss"),
            Just("sub"),
            Just("aud"),
            Just("exp"),
            Just("nbf"),
            Just("iat"),
            Just("typ"),
            Just("azp"),
            Just("scope"),
            Just("preferred_username"),
            Just("preferred\\u005fusername"),
            Just("realm_access"),
            Just("resource_access"),
            Just("groups"),
            Just("ex"),
        ];
        let member = (name, value(), any::<bool>(), 0..6usize).prop_map(|(n, v, fit, i)| {
            // Often a value of the type the claim needs (or, for times, at
            // the edge of it), so that whole payloads of well-typed claims
            // are common.
            let fitting: &[&str] = match n {
                "exp" | "nbf" | "iat" => &[
                    "9223372036854775807",
                    "-9223372036854775808",
                    "0",
                    "9223372036854775808",
                    "1.5e9",
                    "-0",
                ],
                "aud" => &["null", "\"a\"", "[\"a\",\"b\\u0063\"]"],
                "realm_access" => &["[]", "[[\"a\"]]", "{\"roles\":[\"a\"],\"x\":{}}"],
                "resource_access" => &["{}", "{\"c\":{\"roles\":[]},\"d\":[]}", "{\"c\":{}}"],
                "groups" | "ex" => &["1"],
                _ => &["null", "\"s\"", "\"\\u0073\""],
            };
            let v = if fit {
                fitting[i % fitting.len()].to_owned()
            } else {
                v
            };
            format!("\"{n}\":{v}")
        });
        (any::<bool>(), proptest::collection::vec(member, 0..6)).prop_map(|(iss, mut members)| {
            if iss {
                members.insert(0, "\"iss\":\"i\"".to_owned());
            }
            format!("{{{}}}", members.join(","))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2048,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        #[test]
        fn the_one_pass_read_agrees_with_the_strict_pass_and_serde_json(json in payload()) {
            use proptest::prop_assert_eq;
            let one = read_claims(json.as_bytes());
            let strict = read_object(json.as_bytes(), "iss");
            prop_assert_eq!(one.is_some(), strict.is_some());
            let (Some(one), Some(strict)) = (one, strict) else {
                return Ok(());
            };
            prop_assert_eq!(&one.iss, &strict.member);
            prop_assert_eq!(one.tree_bytes, strict.tree_bytes);
            // serde_json's own read needs `iss` as a string; the one pass
            // leaves it to the caller.
            if let Member::String(iss) = &one.iss {
                let typed = serde_json::from_slice::<Claims>(json.as_bytes()).ok();
                let mut claims = one.claims.ok();
                if let Some(claims) = &mut claims {
                    claims.iss = iss.clone().into_owned();
                }
                prop_assert_eq!(claims, typed);
            }
        }
    }

    #[test]
    fn the_one_pass_read_keeps_claims_of_the_wrong_type_apart_from_errors() {
        let read = read_claims(br#"{"iss":"i","exp":"1","x":{"a":1}}"#).unwrap();
        assert_eq!(read.iss, Member::String(Cow::Borrowed("i")));
        assert_eq!(read.claims.unwrap_err(), Wrong);
        assert!(read_claims(br#"{"iss":"i","exp":{"a":1,"a":2}}"#).is_none());
        assert!(read_claims(br#"{"iss":"i","resource_access":{"c":{},"c":{}}}"#).is_none());
        assert!(read_claims(br#"{"iss":"i","realm_access":{"roles":[],"roles":[]}}"#).is_none());
        assert!(read_claims(br#"{"iss":"i","nbf":1e400}"#).is_none());
    }

    #[test]
    fn the_header_is_read_in_one_pass_as_its_types_need() {
        let read = read_header(br#"{"alg":"RS256","kid":"k","crit":null}"#).unwrap();
        assert_eq!(read.alg, Ok(Cow::Borrowed("RS256")));
        assert_eq!(read.kid, Ok(Some("k".to_owned())));
        assert!(read.crit);
        let read = read_header(br#"{"kid":null,"x":[1]}"#).unwrap();
        assert_eq!(read.alg, Err(Wrong));
        assert_eq!(read.kid, Ok(None));
        assert!(!read.crit);
        let read = read_header(br#"{"alg":1,"kid":2}"#).unwrap();
        assert_eq!((read.alg, read.kid), (Err(Wrong), Err(Wrong)));
        assert!(read_header(br#"{"alg":"RS256","x":{"a":1,"a":2}}"#).is_none());
    }
}
