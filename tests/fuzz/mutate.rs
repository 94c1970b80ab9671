//! The fuzzer's mutations: byte-level (truncations, bit flips, byte writes, splices, absurd
//! safetensors header lengths), structural (edits of any JSON or TOML node, including the JSON
//! nested in safetensors metadata strings) and, for text files (JSON, TOML), line-level edits
//! (deleted, doubled and swapped lines, keys renamed, values replaced by absurd literals,
//! invalid UTF-8). Every case's mutations are drawn with `arbitrary` from seeded random bytes.

use arbitrary::{Arbitrary, Unstructured};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use serde_json::Value;

use super::Container;

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Absurd {
    Zero,
    One,
    MinusOne,
    Small(u8),
    Odd(u16),
    U32Max,
    U32MaxPlus1,
    U53,
    U64Max,
    Huge,
    NegHuge,
    Half,
    Any(u64),
}

impl Absurd {
    fn value(self) -> Value {
        use serde_json::json;
        match self {
            Absurd::Zero => json!(0),
            Absurd::One => json!(1),
            Absurd::MinusOne => json!(-1),
            Absurd::Small(v) => json!(v),
            Absurd::Odd(v) => json!(v),
            Absurd::U32Max => json!(u32::MAX),
            Absurd::U32MaxPlus1 => json!(u32::MAX as u64 + 1),
            Absurd::U53 => json!((1u64 << 53) + 1),
            Absurd::U64Max => json!(u64::MAX),
            Absurd::Huge => json!(1e308),
            Absurd::NegHuge => json!(-1e308),
            Absurd::Half => json!(0.5),
            Absurd::Any(v) => json!(v),
        }
    }

    fn u64(self) -> u64 {
        match self {
            Absurd::Zero => 0,
            Absurd::One => 1,
            Absurd::MinusOne | Absurd::U64Max => u64::MAX,
            Absurd::Small(v) => v as u64,
            Absurd::Odd(v) => v as u64,
            Absurd::U32Max => u32::MAX as u64,
            Absurd::U32MaxPlus1 => u32::MAX as u64 + 1,
            Absurd::U53 => (1 << 53) + 1,
            Absurd::Huge | Absurd::NegHuge => 1 << 62,
            Absurd::Half => 7,
            Absurd::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub enum JsonOp {
    Number(Absurd),
    Null,
    Delete,
    Str(String),
    Bool(bool),
    EmptyArray,
    EmptyObject,
    /// Double an array (or append its first element) / copy a sibling value.
    Grow,
}

#[derive(Arbitrary, Clone, Debug)]
pub enum Mutation {
    Truncate {
        at: u32,
    },
    FlipBit {
        at: u32,
        bit: u8,
        in_header: bool,
    },
    SetByte {
        at: u32,
        value: u8,
        in_header: bool,
    },
    Delete {
        at: u32,
        len: u16,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    /// Safetensors: the 8-byte header length.
    HeaderLen(Absurd),
    /// Edit the JSON node with this index (modulo the node count).
    Json {
        node: u32,
        op: JsonOp,
    },
}

/// The byte range of a file's JSON: the safetensors header, or the whole file.
fn json_range(c: Container, b: &[u8]) -> Option<(usize, usize)> {
    match c {
        Container::Json | Container::Toml => Some((0, b.len())),
        Container::Safetensors => {
            let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
            let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
            (end <= b.len()).then_some((8, end))
        }
    }
}

fn pos(at: u32, lo: usize, hi: usize) -> usize {
    if hi <= lo {
        lo
    } else {
        lo + at as usize % (hi - lo)
    }
}

/// Nodes in traversal order; a string holding a JSON object or array counts its inner nodes.
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        Value::String(s) => nested(s).map_or(0, |n| count(&n)),
        _ => 0,
    }
}

fn nested(s: &str) -> Option<Value> {
    if !(s.starts_with('{') || s.starts_with('[')) {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// Apply `op` to node `*target` (counting down in [`count`]'s order); `Some(true)` asks the
/// caller to delete this node from its parent.
fn edit(v: &mut Value, target: &mut usize, op: &JsonOp) -> Option<bool> {
    if *target == 0 {
        let new = match op {
            JsonOp::Number(a) => a.value(),
            JsonOp::Null => Value::Null,
            JsonOp::Delete => return Some(true),
            JsonOp::Str(s) => Value::String(s.clone()),
            JsonOp::Bool(b) => Value::Bool(*b),
            JsonOp::EmptyArray => Value::Array(vec![]),
            JsonOp::EmptyObject => Value::Object(Default::default()),
            JsonOp::Grow => match &*v {
                Value::Array(a) if !a.is_empty() => {
                    let mut b = a.clone();
                    b.extend(a.iter().cloned());
                    Value::Array(b)
                }
                Value::Object(o) => {
                    let mut o = o.clone();
                    if let Some((k, x)) = o.iter().next().map(|(k, x)| (k.clone(), x.clone())) {
                        o.insert(format!("{k}.qcodes"), x);
                    }
                    Value::Object(o)
                }
                other => Value::Array(vec![other.clone(), other.clone()]),
            },
        };
        *v = new;
        return Some(false);
    }
    *target -= 1;
    match v {
        Value::Array(a) => {
            for i in 0..a.len() {
                if let Some(del) = edit(&mut a[i], target, op) {
                    if del {
                        a.remove(i);
                    }
                    return Some(false);
                }
            }
            None
        }
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let Some(x) = o.get_mut(&k) else { continue };
                if let Some(del) = edit(x, target, op) {
                    if del {
                        o.remove(&k);
                    }
                    return Some(false);
                }
            }
            None
        }
        Value::String(s) => {
            let mut n = nested(s)?;
            let r = edit(&mut n, target, op)?;
            *s = if r {
                String::new()
            } else {
                serde_json::to_string(&n).ok()?
            };
            Some(false)
        }
        _ => None,
    }
}

/// Apply one mutation to `b` (a file of container `c`).
pub fn apply(c: Container, b: &mut Vec<u8>, m: &Mutation) {
    let len = b.len();
    let header = json_range(c, b).unwrap_or((0, len));
    let region = |inside: bool| if inside { header } else { (0, len) };
    match m {
        Mutation::Truncate { at } => b.truncate(pos(*at, 0, len)),
        Mutation::FlipBit { at, bit, in_header } => {
            let (lo, hi) = region(*in_header);
            if hi > lo {
                b[pos(*at, lo, hi)] ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte {
            at,
            value,
            in_header,
        } => {
            let (lo, hi) = region(*in_header);
            if hi > lo {
                b[pos(*at, lo, hi)] = *value;
            }
        }
        Mutation::Delete { at, len: n } => {
            let s = pos(*at, 0, len);
            let e = (s + *n as usize).min(len);
            b.drain(s..e);
        }
        Mutation::Insert { at, bytes } => {
            let s = pos(*at, header.0, header.1.max(header.0 + 1).min(len));
            b.splice(s..s, bytes.iter().copied());
        }
        Mutation::HeaderLen(a) => {
            if c == Container::Safetensors && len >= 8 {
                b[..8].copy_from_slice(&a.u64().to_le_bytes());
            }
        }
        Mutation::Json { node, op } => {
            let Some((lo, hi)) = json_range(c, b) else {
                return;
            };
            let Some(mut v) = parse_doc(c, &b[lo..hi]) else {
                return;
            };
            let mut t = *node as usize % count(&v);
            if edit(&mut v, &mut t, op) == Some(true) {
                v = Value::Null; // the root itself was deleted
            }
            let Some(mut text) = write_doc(c, &v) else {
                return;
            };
            match c {
                Container::Json | Container::Toml => *b = text,
                Container::Safetensors => {
                    while text.len() % 8 != 0 {
                        text.push(b' ');
                    }
                    let mut out = (text.len() as u64).to_le_bytes().to_vec();
                    out.extend_from_slice(&text);
                    out.extend_from_slice(&b[hi..]);
                    *b = out;
                }
            }
        }
    }
}

/// A document of a text container as a JSON value (TOML through serde).
fn parse_doc(c: Container, b: &[u8]) -> Option<Value> {
    match c {
        Container::Toml => toml::from_str(std::str::from_utf8(b).ok()?).ok(),
        _ => serde_json::from_slice(b).ok(),
    }
}

/// The value written back in the container's syntax (`None` when TOML cannot hold it: a
/// null, a number beyond i64, a non-table root; the case then keeps its bytes).
fn write_doc(c: Container, v: &Value) -> Option<Vec<u8>> {
    match c {
        Container::Toml => toml::to_string(v).ok().map(String::into_bytes),
        _ => serde_json::to_vec(v).ok(),
    }
}

/// Literals a hand-edited text file may hold where a number belongs.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Literal {
    Number(Absurd),
    Nan,
    Inf,
    Empty,
    Unquoted,
    EmptyList,
    HugeString,
}

impl Literal {
    fn text(self) -> String {
        match self {
            Literal::Number(a) => a.value().to_string(),
            Literal::Nan => "nan".into(),
            Literal::Inf => "-inf".into(),
            Literal::Empty => String::new(),
            Literal::Unquoted => "w4 rtn".into(),
            Literal::EmptyList => "[]".into(),
            Literal::HugeString => format!("\"{}\"", "x".repeat(5000)),
        }
    }
}

/// Line-level edits of a text file (JSON or TOML), as a person editing it might make them.
#[derive(Arbitrary, Clone, Debug)]
pub enum TextOp {
    DeleteLine {
        line: u32,
    },
    DuplicateLine {
        line: u32,
    },
    SwapLines {
        a: u32,
        b: u32,
    },
    /// Replace what follows the line's `=` (TOML) or `:` (JSON).
    SetValue {
        line: u32,
        value: Literal,
    },
    /// Replace the key before it: a misspelling, or any string.
    RenameKey {
        line: u32,
        key: Option<String>,
    },
    /// Bytes that are not UTF-8, inside a line.
    InvalidUtf8 {
        at: u32,
        bytes: [u8; 2],
    },
}

/// One mutation of a case: bytes and structure for every container, lines for text.
#[derive(Clone, Debug)]
pub enum Mut {
    Bin(Mutation),
    Text(TextOp),
}

fn split_lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == b'\n').map(|l| l.to_vec()).collect()
}

/// Apply a line-level edit; `b` need not be valid UTF-8.
pub fn apply_text(b: &mut Vec<u8>, op: &TextOp) {
    let mut lines = split_lines(b);
    let n = lines.len();
    let at = |i: u32| i as usize % n;
    let sep_of = |l: &[u8]| l.iter().position(|&c| c == b'=' || c == b':');
    match op {
        TextOp::DeleteLine { line } => {
            lines.remove(at(*line));
        }
        TextOp::DuplicateLine { line } => {
            let l = lines[at(*line)].clone();
            lines.insert(at(*line), l);
        }
        TextOp::SwapLines { a, b: c } => lines.swap(at(*a), at(*c)),
        TextOp::SetValue { line, value } => {
            let l = &mut lines[at(*line)];
            if let Some(p) = sep_of(l) {
                // JSON keeps its trailing comma so that only the value is wrong.
                let comma = l.ends_with(b",");
                l.truncate(p + 1);
                l.push(b' ');
                l.extend_from_slice(value.text().as_bytes());
                if comma {
                    l.push(b',');
                }
            }
        }
        TextOp::RenameKey { line, key } => {
            let l = &mut lines[at(*line)];
            if let Some(p) = sep_of(l) {
                let new = match key {
                    Some(k) => k.as_bytes().to_vec(),
                    None => {
                        let mut k = l[..p].to_vec();
                        let q = k
                            .iter()
                            .rposition(|c| c.is_ascii_alphanumeric())
                            .unwrap_or(0);
                        k.insert(q.min(k.len()), b'x');
                        k
                    }
                };
                l.splice(..p, new);
            }
        }
        TextOp::InvalidUtf8 { at: i, bytes } => {
            let l = &mut lines[at(*i)];
            let p = pos(*i, 0, l.len());
            l.splice(p..p, [0xC0 | (bytes[0] & 0x01), bytes[1] | 0x80, 0xFF]);
        }
    }
    *b = lines.join(&b'\n');
}

/// Apply one mutation of either kind.
pub fn apply_mut(c: Container, b: &mut Vec<u8>, m: &Mut) {
    match m {
        Mut::Bin(m) => apply(c, b, m),
        Mut::Text(t) => apply_text(b, t),
    }
}

/// The mutations of case `case` under `seed` (1-3 of them), deterministically. Text files
/// draw line-level edits for about half of them.
pub fn mutations(seed: u64, case: u64, c: Container) -> Vec<Mut> {
    let mut rng = StdRng::seed_from_u64(seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut raw = vec![0u8; 512];
    rng.fill_bytes(&mut raw);
    let mut u = Unstructured::new(&raw);
    let n = u.int_in_range(1..=3).unwrap_or(1);
    let text = c != Container::Safetensors;
    (0..n)
        .filter_map(|_| {
            if text && u.arbitrary::<bool>().unwrap_or(false) {
                TextOp::arbitrary(&mut u).ok().map(Mut::Text)
            } else {
                Mutation::arbitrary(&mut u).ok().map(Mut::Bin)
            }
        })
        .collect()
}
