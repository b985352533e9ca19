//! The RFC 1035 section 5 zone-file format, read into wire-form records: entries over lines
//! and parentheses, comments, quoted strings, every escape (`\X`, `\DDD`), `$ORIGIN`, `$TTL`,
//! `$INCLUDE` (inside the zones directory only), TTL units, the RFC 3597 generic syntax
//! (`TYPE65534 \# 4 0a000001`, for any type) and the presentation form of the types real
//! zones hold. Every problem is an error naming the file and line; nothing is dropped.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

#[cfg(test)]
use super::wire;
use super::wire::MAX_NAME;

/// Bytes of one zone file (and of each included file) at most.
const MAX_FILE: u64 = 1 << 30;
/// `$INCLUDE` nesting at most.
const MAX_INCLUDE_DEPTH: usize = 8;
/// The TTL of a record when neither it nor `$TTL` nor an earlier record gives one (as Knot).
const DEFAULT_TTL: u32 = 3600;

/// One record read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Wire form, as written (case kept).
    pub owner: &'a [u8],
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
    /// Where it was written.
    pub file: &'a Path,
    pub line: usize,
}

/// A problem, at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// A token of an entry: its text as written (escapes kept, quotes removed), whether it was
/// quoted, its line.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a [u8],
    quoted: bool,
    line: usize,
}

/// An entry: its tokens, whether it started with blank space (the owner is the previous one).
struct Entry<'a> {
    tokens: Vec<Token<'a>>,
    blank_owner: bool,
    line: usize,
}

/// Splits a file's text into entries, handing each to `out` as soon as it is complete (a
/// large zone is never held as tokens all at once; one entry's token list is reused).
fn entries<'a, E>(
    text: &'a [u8],
    out: &mut dyn FnMut(&Entry<'a>) -> Result<(), E>,
    lexical: impl Fn(usize, String) -> E,
) -> Result<(), E> {
    let mut i = 0;
    let mut line = 1;
    let mut depth = 0usize;
    let mut entry = Entry {
        tokens: Vec::with_capacity(16),
        blank_owner: false,
        line: 1,
    };
    let mut start_of_line = true;
    while i < text.len() {
        let c = text[i];
        if std::mem::take(&mut start_of_line) && depth == 0 {
            if !entry.tokens.is_empty() {
                out(&entry)?;
            }
            entry.tokens.clear();
            entry.blank_owner = c == b' ' || c == b'\t';
            entry.line = line;
        }
        match c {
            b'\n' => {
                line += 1;
                i += 1;
                start_of_line = true;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b';' => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                if depth == 0 {
                    return Err(lexical(line, "')' without '('".into()));
                }
                depth -= 1;
                i += 1;
            }
            b'"' => {
                let start_line = line;
                let start = i + 1;
                i += 1;
                loop {
                    let Some(&b) = text.get(i) else {
                        return Err(lexical(start_line, "a quoted string is not closed".into()));
                    };
                    match b {
                        b'"' => break,
                        b'\\' => {
                            if text.get(i + 1) == Some(&b'\n') {
                                line += 1;
                            }
                            i += 2;
                        }
                        b'\n' => {
                            line += 1;
                            i += 1;
                        }
                        _ => i += 1,
                    }
                }
                entry.tokens.push(Token {
                    text: &text[start..i],
                    quoted: true,
                    line: start_line,
                });
                i += 1;
            }
            _ => {
                let start = i;
                while let Some(&b) = text.get(i) {
                    match b {
                        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"' => break,
                        b'\\' => i += 2,
                        _ => i += 1,
                    }
                }
                let end = i.min(text.len());
                entry.tokens.push(Token {
                    text: &text[start..end],
                    quoted: false,
                    line,
                });
            }
        }
    }
    if depth > 0 {
        return Err(lexical(
            line,
            "'(' without ')' before the end of the file".into(),
        ));
    }
    if !entry.tokens.is_empty() {
        out(&entry)?;
    }
    Ok(())
}

/// Decodes the escapes of a token into bytes (`\X` is X, `\DDD` the byte DDD).
fn unescape(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            let (byte, used) = escape_at(text, i)?;
            out.push(byte);
            i += used;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The byte of the escape at `i` (a backslash) and how many bytes it takes.
fn escape_at(text: &[u8], i: usize) -> Result<(u8, usize), String> {
    match text.get(i + 1..i + 4) {
        Some(d) if d.iter().all(u8::is_ascii_digit) => {
            let value =
                u32::from(d[0] - b'0') * 100 + u32::from(d[1] - b'0') * 10 + u32::from(d[2] - b'0');
            u8::try_from(value).map(|b| (b, 4)).map_err(|_| {
                format!(
                    "\\{} is not a byte (\\000 to \\255)",
                    String::from_utf8_lossy(d)
                )
            })
        }
        _ => match text.get(i + 1) {
            Some(b) if b.is_ascii_digit() => Err("a \\DDD escape needs three digits".into()),
            Some(&b) => Ok((b, 2)),
            None => Err("a backslash at the end of a token".into()),
        },
    }
}

/// A domain name as written, relative to `origin` unless it ends with an unescaped dot.
fn name(text: &[u8], origin: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() + origin.len() + 1);
    name_into(text, origin, &mut out)?;
    Ok(out)
}

/// Appends the wire form of the name `text` (relative to `origin`) to `out`.
fn name_into(text: &[u8], origin: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let shown = || String::from_utf8_lossy(text).into_owned();
    if text == b"@" {
        out.extend_from_slice(origin);
        return Ok(());
    }
    if text == b"." {
        out.push(0);
        return Ok(());
    }
    let start = out.len();
    // The length byte of the label being written.
    let mut label_at = out.len();
    out.push(0);
    let mut absolute = false;
    let mut i = 0;
    let close = |out: &mut Vec<u8>, label_at: usize| -> Result<(), String> {
        let len = out.len() - label_at - 1;
        if len == 0 {
            return Err(format!("{:?} has an empty label", shown()));
        }
        if len > 63 {
            return Err(format!("{:?} has a label longer than 63 bytes", shown()));
        }
        out[label_at] = len as u8;
        Ok(())
    };
    while i < text.len() {
        match text[i] {
            b'\\' => {
                let (byte, used) = escape_at(text, i)?;
                out.push(byte);
                i += used;
            }
            b'.' => {
                close(out, label_at)?;
                i += 1;
                if i == text.len() {
                    absolute = true;
                } else {
                    label_at = out.len();
                    out.push(0);
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if absolute {
        out.push(0);
    } else {
        close(out, label_at)?;
        out.extend_from_slice(origin);
    }
    if out.len() - start > MAX_NAME {
        return Err(format!("{:?} is longer than 255 bytes", shown()));
    }
    Ok(())
}

/// An absolute name in presentation form (ending with a dot), escapes allowed.
pub fn absolute_name(text: &[u8]) -> Option<Vec<u8>> {
    name(text, &[0]).ok()
}

/// A TTL: seconds, or with units (`1h30m`, `2d`, `1w`).
fn ttl(text: &[u8]) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    if text.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(text).ok()?.parse().ok();
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for &c in text {
        match c {
            b'0'..=b'9' => {
                number = Some(
                    number
                        .unwrap_or(0)
                        .checked_mul(10)?
                        .checked_add(u64::from(c - b'0'))?,
                );
            }
            _ => {
                let unit = match c.to_ascii_lowercase() {
                    b's' => 1,
                    b'm' => 60,
                    b'h' => 3600,
                    b'd' => 86_400,
                    b'w' => 604_800,
                    _ => return None,
                };
                total = total.checked_add(number.take()?.checked_mul(unit)?)?;
                if total > u64::from(u32::MAX) {
                    return None;
                }
            }
        }
    }
    if number.is_some() {
        return None;
    }
    u32::try_from(total).ok()
}

/// The type of a mnemonic or `TYPEnnn`.
pub fn type_code(text: &str) -> Option<u16> {
    if let Some(prefix) = text.get(..4)
        && prefix.eq_ignore_ascii_case("TYPE")
        && text.len() > 4
    {
        return text[4..].parse().ok();
    }
    TYPES
        .iter()
        .find(|(mnemonic, _, _)| mnemonic.eq_ignore_ascii_case(text))
        .map(|(_, code, _)| *code)
}

/// The mnemonic of a type, or `TYPEnnn` (RFC 3597).
pub fn type_name(rtype: u16) -> String {
    TYPES
        .iter()
        .find(|(_, code, _)| *code == rtype)
        .map_or_else(
            || format!("TYPE{rtype}"),
            |(mnemonic, _, _)| (*mnemonic).to_string(),
        )
}

/// How a field of RDATA is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    U8,
    U16,
    U32,
    /// A 32-bit duration with optional units (SOA timers).
    Ttl,
    Name,
    Ipv4,
    Ipv6,
    /// One character-string (at most 255 bytes, length-prefixed).
    Str,
    /// One or more character-strings to the end.
    Strs,
    /// Base64 over the remaining tokens.
    Base64,
    /// Hex over the remaining tokens (at least one digit).
    Hex,
    /// Hex, or `-` for empty, with a length byte (NSEC3 salts).
    Salt,
    /// Base32hex with a length byte (NSEC3 next hashed owner).
    Base32,
    /// Type mnemonics to the end, as an RFC 4034 section 4.1.2 bitmap.
    Bitmap,
    /// A type mnemonic as 16 bits (RRSIG type covered).
    Type,
    /// An algorithm number or mnemonic (8 bits).
    Algorithm,
    /// YYYYMMDDHHmmSS or seconds (RRSIG times).
    Time,
    /// A CAA tag: letters and digits, length-prefixed.
    Tag,
    /// Bytes to the end without a length (CAA value, URI target): one string.
    Raw,
    /// Hex groups separated by '-' (EUI-48: 6 bytes, EUI-64: 8 bytes).
    Eui(usize),
    /// RFC 1876 location.
    Loc,
    /// SVCB/HTTPS parameters (RFC 9460) to the end.
    SvcParams,
}

use Field::*;

/// The types read in presentation form: mnemonic, code, fields. Any other type (and these
/// too) may be written in the generic form `\# <length> <hex>`.
const TYPES: &[(&str, u16, &[Field])] = &[
    ("A", 1, &[Ipv4]),
    ("NS", 2, &[Name]),
    ("MD", 3, &[Name]),
    ("MF", 4, &[Name]),
    ("CNAME", 5, &[Name]),
    ("SOA", 6, &[Name, Name, U32, Ttl, Ttl, Ttl, Ttl]),
    ("MB", 7, &[Name]),
    ("MG", 8, &[Name]),
    ("MR", 9, &[Name]),
    ("NULL", 10, &[]),
    ("PTR", 12, &[Name]),
    ("HINFO", 13, &[Str, Str]),
    ("MINFO", 14, &[Name, Name]),
    ("MX", 15, &[U16, Name]),
    ("TXT", 16, &[Strs]),
    ("RP", 17, &[Name, Name]),
    ("AFSDB", 18, &[U16, Name]),
    ("X25", 19, &[Str]),
    ("RT", 21, &[U16, Name]),
    ("AAAA", 28, &[Ipv6]),
    ("LOC", 29, &[Loc]),
    ("SRV", 33, &[U16, U16, U16, Name]),
    ("NAPTR", 35, &[U16, U16, Str, Str, Str, Name]),
    ("KX", 36, &[U16, Name]),
    ("CERT", 37, &[U16, U16, Algorithm, Base64]),
    ("DNAME", 39, &[Name]),
    ("DS", 43, &[U16, Algorithm, U8, Hex]),
    ("SSHFP", 44, &[U8, U8, Hex]),
    (
        "RRSIG",
        46,
        &[Type, Algorithm, U8, U32, Time, Time, U16, Name, Base64],
    ),
    ("NSEC", 47, &[Name, Bitmap]),
    ("DNSKEY", 48, &[U16, U8, Algorithm, Base64]),
    ("DHCID", 49, &[Base64]),
    ("NSEC3", 50, &[U8, U8, U16, Salt, Base32, Bitmap]),
    ("NSEC3PARAM", 51, &[U8, U8, U16, Salt]),
    ("TLSA", 52, &[U8, U8, U8, Hex]),
    ("SMIMEA", 53, &[U8, U8, U8, Hex]),
    ("CDS", 59, &[U16, Algorithm, U8, Hex]),
    ("CDNSKEY", 60, &[U16, U8, Algorithm, Base64]),
    ("OPENPGPKEY", 61, &[Base64]),
    ("CSYNC", 62, &[U32, U16, Bitmap]),
    ("ZONEMD", 63, &[U32, U8, U8, Hex]),
    ("SVCB", 64, &[U16, Name, SvcParams]),
    ("HTTPS", 65, &[U16, Name, SvcParams]),
    ("SPF", 99, &[Strs]),
    ("EUI48", 108, &[Eui(6)]),
    ("EUI64", 109, &[Eui(8)]),
    ("URI", 256, &[U16, U16, Raw]),
    ("CAA", 257, &[U8, Tag, Raw]),
];

const ALGORITHMS: &[(&str, u8)] = &[
    ("RSAMD5", 1),
    ("DH", 2),
    ("DSA", 3),
    ("RSASHA1", 5),
    ("DSA-NSEC3-SHA1", 6),
    ("RSASHA1-NSEC3-SHA1", 7),
    ("RSASHA256", 8),
    ("RSASHA512", 10),
    ("ECC-GOST", 12),
    ("ECDSAP256SHA256", 13),
    ("ECDSAP384SHA384", 14),
    ("ED25519", 15),
    ("ED448", 16),
    ("INDIRECT", 252),
    ("PRIVATEDNS", 253),
    ("PRIVATEOID", 254),
];

/// Reads the RDATA of `rtype` from `tokens`.
fn rdata(rtype: u16, tokens: &[Token<'_>], origin: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if tokens
        .first()
        .is_some_and(|t| !t.quoted && t.text == b"\\#")
    {
        out.extend(generic(&tokens[1..])?);
        return Ok(());
    }
    let Some((mnemonic, _, fields)) = TYPES.iter().find(|(_, code, _)| *code == rtype) else {
        return Err(format!(
            "TYPE{rtype} has no presentation form here; write its data as \\# <length> <hex> (RFC 3597)"
        ));
    };
    if *mnemonic == "NULL" {
        return Err("NULL records can only be written as \\# <length> <hex> (RFC 3597)".into());
    }
    let mut rest = tokens;
    for field in fields.iter() {
        let take_all = matches!(field, Strs | Base64 | Hex | Bitmap | Loc | SvcParams | Raw);
        if take_all {
            let used = field_rest(*field, rest, out, mnemonic)?;
            rest = &rest[used..];
            continue;
        }
        let Some((token, more)) = rest.split_first() else {
            return Err(format!(
                "{mnemonic} needs more data ({} fields)",
                fields.len()
            ));
        };
        one_field(*field, token, origin, out).map_err(|e| format!("{mnemonic}: {e}"))?;
        rest = more;
    }
    if let Some(extra) = rest.first() {
        return Err(format!(
            "{mnemonic}: unexpected {:?} after the record data",
            String::from_utf8_lossy(extra.text)
        ));
    }
    Ok(())
}

/// RFC 3597 section 5: `\# <length> <hex>...`.
fn generic(tokens: &[Token<'_>]) -> Result<Vec<u8>, String> {
    let Some((len, hex_tokens)) = tokens.split_first() else {
        return Err("\\# needs a length".into());
    };
    let len: usize = std::str::from_utf8(len.text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or("\\# needs a length in decimal")?;
    let data = hex(hex_tokens)?;
    if data.len() != len {
        return Err(format!("\\# says {len} bytes but {} are given", data.len()));
    }
    Ok(data)
}

fn text_of<'a>(token: &Token<'a>) -> Result<&'a str, String> {
    std::str::from_utf8(token.text).map_err(|_| "not text".to_string())
}

fn number<T: TryFrom<u64>>(token: &Token<'_>) -> Result<T, String> {
    let text = text_of(token)?;
    text.parse::<u64>()
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{text:?} is not a number of the right size"))
}

/// One character-string: at most 255 bytes (RFC 1035 section 3.3).
fn char_string(token: &Token<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let bytes = unescape(token.text)?;
    if bytes.len() > 255 {
        return Err(format!(
            "a character-string of {} bytes; at most 255 are allowed (split it into several strings)",
            bytes.len()
        ));
    }
    out.push(bytes.len() as u8);
    out.extend_from_slice(&bytes);
    Ok(())
}

fn one_field(
    field: Field,
    token: &Token<'_>,
    origin: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match field {
        U8 => out.push(number(token)?),
        U16 => out.extend_from_slice(&number::<u16>(token)?.to_be_bytes()),
        U32 => out.extend_from_slice(&number::<u32>(token)?.to_be_bytes()),
        Ttl => {
            let t = ttl(token.text).ok_or_else(|| {
                format!(
                    "{:?} is not a duration",
                    String::from_utf8_lossy(token.text)
                )
            })?;
            out.extend_from_slice(&t.to_be_bytes());
        }
        Name => name_into(token.text, origin, out)?,
        Ipv4 => {
            let ip: Ipv4Addr = text_of(token)?.parse().map_err(|_| {
                format!("{:?} is not an IPv4 address", text_of(token).unwrap_or(""))
            })?;
            out.extend_from_slice(&ip.octets());
        }
        Ipv6 => {
            let ip: Ipv6Addr = text_of(token)?.parse().map_err(|_| {
                format!("{:?} is not an IPv6 address", text_of(token).unwrap_or(""))
            })?;
            out.extend_from_slice(&ip.octets());
        }
        Str => char_string(token, out)?,
        Algorithm => {
            let text = text_of(token)?;
            let value = text.parse::<u8>().ok().or_else(|| {
                ALGORITHMS
                    .iter()
                    .find(|(m, _)| m.eq_ignore_ascii_case(text))
                    .map(|(_, v)| *v)
            });
            out.push(value.ok_or_else(|| format!("{text:?} is not an algorithm"))?);
        }
        Type => {
            let text = text_of(token)?;
            let code = type_code(text).ok_or_else(|| format!("{text:?} is not a type"))?;
            out.extend_from_slice(&code.to_be_bytes());
        }
        Time => {
            let text = text_of(token)?;
            let seconds = if text.len() == 14 && text.bytes().all(|b| b.is_ascii_digit()) {
                date_time(text).ok_or_else(|| format!("{text:?} is not a time"))?
            } else {
                text.parse::<u32>()
                    .map_err(|_| format!("{text:?} is not a time (YYYYMMDDHHmmSS)"))?
            };
            out.extend_from_slice(&seconds.to_be_bytes());
        }
        Tag => {
            let tag = unescape(token.text)?;
            if tag.is_empty() || tag.len() > 255 || !tag.iter().all(u8::is_ascii_alphanumeric) {
                return Err(format!(
                    "{:?} is not a CAA tag",
                    String::from_utf8_lossy(&tag)
                ));
            }
            out.push(tag.len() as u8);
            out.extend(tag);
        }
        Salt => {
            if token.text == b"-" {
                out.push(0);
            } else {
                let salt = hex(std::slice::from_ref(token))?;
                if salt.len() > 255 {
                    return Err("a salt longer than 255 bytes".into());
                }
                out.push(salt.len() as u8);
                out.extend(salt);
            }
        }
        Base32 => {
            let hash = base32hex(text_of(token)?)?;
            out.push(hash.len() as u8);
            out.extend(hash);
        }
        Eui(len) => {
            let text = text_of(token)?;
            let bytes: Vec<u8> = text
                .split('-')
                .map(|g| u8::from_str_radix(g, 16).map_err(|_| format!("{text:?} is not an EUI")))
                .collect::<Result<_, _>>()?;
            if bytes.len() != len || text.split('-').any(|g| g.len() != 2) {
                return Err(format!("{text:?} is not an EUI of {len} bytes (xx-xx-...)"));
            }
            out.extend(bytes);
        }
        Strs | Base64 | Hex | Bitmap | Loc | SvcParams | Raw => unreachable!("whole-rest fields"),
    }
    Ok(())
}

/// A field that takes the remaining tokens; returns how many it used.
fn field_rest(
    field: Field,
    tokens: &[Token<'_>],
    out: &mut Vec<u8>,
    mnemonic: &str,
) -> Result<usize, String> {
    let fail = |e: String| format!("{mnemonic}: {e}");
    match field {
        Strs => {
            if tokens.is_empty() {
                return Err(fail("needs at least one character-string".into()));
            }
            for t in tokens {
                char_string(t, out).map_err(fail)?;
            }
        }
        Base64 => {
            let text: String = tokens
                .iter()
                .map(|t| String::from_utf8_lossy(t.text).into_owned())
                .collect();
            out.extend(base64(&text).map_err(fail)?);
        }
        Hex => {
            if tokens.is_empty() {
                return Err(fail("needs hexadecimal data".into()));
            }
            out.extend(hex(tokens).map_err(fail)?);
        }
        Bitmap => {
            let mut types = Vec::new();
            for t in tokens {
                let text = text_of(t).map_err(fail)?;
                types.push(type_code(text).ok_or_else(|| fail(format!("{text:?} is not a type")))?);
            }
            out.extend(type_bitmap(&mut types));
        }
        Raw => {
            let [token] = tokens else {
                return Err(fail("needs exactly one (quoted) string".into()));
            };
            out.extend(unescape(token.text).map_err(fail)?);
        }
        Loc => out.extend(loc(tokens).map_err(fail)?),
        SvcParams => out.extend(svc_params(tokens).map_err(fail)?),
        _ => unreachable!("single fields"),
    }
    Ok(tokens.len())
}

fn hex(tokens: &[Token<'_>]) -> Result<Vec<u8>, String> {
    let text: Vec<u8> = tokens.iter().flat_map(|t| t.text.iter().copied()).collect();
    if !text.len().is_multiple_of(2) {
        return Err("an odd number of hexadecimal digits".into());
    }
    text.chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{:?} is not hexadecimal", String::from_utf8_lossy(pair)))
        })
        .collect()
}

fn base64(text: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let trimmed = text.trim_end_matches('=');
    if !text.len().is_multiple_of(4) || text.len() - trimmed.len() > 2 {
        return Err("not valid base64 (length)".into());
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in trimmed.bytes() {
        acc = (acc << 6) | value(c).ok_or_else(|| format!("{:?} is not base64", char::from(c)))?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn base32hex(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut acc = 0u64;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c.to_ascii_uppercase() {
            b'0'..=b'9' => c - b'0',
            c @ b'A'..=b'V' => c - b'A' + 10,
            _ => return Err(format!("{text:?} is not base32hex")),
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// RFC 4034 section 4.1.2: windows of up to 32 bytes of type bits (sorts and dedups `types`).
pub fn type_bitmap(types: &mut Vec<u16>) -> Vec<u8> {
    types.sort_unstable();
    types.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < types.len() {
        let window = (types[i] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut used = 0;
        while i < types.len() && (types[i] >> 8) as u8 == window {
            let low = (types[i] & 0xff) as usize;
            bits[low / 8] |= 0x80 >> (low % 8);
            used = used.max(low / 8 + 1);
            i += 1;
        }
        out.push(window);
        out.push(used as u8);
        out.extend_from_slice(&bits[..used]);
    }
    out
}

/// Seconds since 1970 of YYYYMMDDHHmmSS (UTC), modulo 2^32 (RFC 4034 section 3.2).
fn date_time(text: &str) -> Option<u32> {
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = crate::clock::days_from_civil(y, m, d);
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss).rem_euclid(1 << 32) as u32)
}

/// RFC 1876 section 3: `d [m [s]] N|S d [m [s]] E|W alt[m] [size[m] [hp[m] [vp[m]]]]`.
fn loc(tokens: &[Token<'_>]) -> Result<Vec<u8>, String> {
    let words: Vec<String> = tokens
        .iter()
        .map(|t| String::from_utf8_lossy(t.text).into_owned())
        .collect();
    let mut i = 0;
    let mut angle = |hemispheres: [&str; 2], max: u32| -> Result<u32, String> {
        let mut parts = [0f64; 3];
        let mut n = 0;
        while n < 3 {
            let w = words.get(i).ok_or("LOC is incomplete")?;
            if hemispheres.iter().any(|h| w.eq_ignore_ascii_case(h)) {
                break;
            }
            parts[n] = w.parse().map_err(|_| format!("{w:?} is not a number"))?;
            n += 1;
            i += 1;
        }
        let h = words.get(i).ok_or("LOC is incomplete")?;
        let sign = if h.eq_ignore_ascii_case(hemispheres[0]) {
            1i64
        } else if h.eq_ignore_ascii_case(hemispheres[1]) {
            -1
        } else {
            return Err(format!(
                "{h:?} is not {} or {}",
                hemispheres[0], hemispheres[1]
            ));
        };
        i += 1;
        let ms = ((parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]) * 1000.0).round() as i64;
        if parts[0] > f64::from(max)
            || parts[1] >= 60.0
            || parts[2] >= 60.0
            || ms > i64::from(max) * 3_600_000
        {
            return Err("LOC angle out of range".into());
        }
        Ok((i64::from(1u32 << 31) + sign * ms) as u32)
    };
    let latitude = angle(["N", "S"], 90)?;
    let longitude = angle(["E", "W"], 180)?;
    let meters = |w: &str| -> Result<f64, String> {
        w.trim_end_matches(['m', 'M'])
            .parse::<f64>()
            .map_err(|_| format!("{w:?} is not a distance"))
    };
    let altitude = meters(words.get(i).ok_or("LOC needs an altitude")?)?;
    i += 1;
    let centimeters = ((altitude * 100.0).round() as i64).saturating_add(10_000_000);
    let altitude =
        u32::try_from(centimeters).map_err(|_| "LOC altitude out of range".to_string())?;
    let precision = |w: Option<&String>, default: f64| -> Result<u8, String> {
        let m = w.map_or(Ok(default), |w| meters(w))?;
        let mut mantissa = (m * 100.0).round() as u64;
        let mut exponent = 0u8;
        while mantissa >= 10 {
            mantissa /= 10;
            exponent += 1;
        }
        if exponent > 9 {
            return Err("LOC precision out of range".into());
        }
        Ok(((mantissa as u8) << 4) | exponent)
    };
    let size = precision(words.get(i), 1.0)?;
    let horizontal = precision(words.get(i + 1), 10_000.0)?;
    let vertical = precision(words.get(i + 2), 10.0)?;
    if words.len() > i + 3 {
        return Err("LOC has extra data".into());
    }
    let mut out = vec![0, size, horizontal, vertical];
    out.extend_from_slice(&latitude.to_be_bytes());
    out.extend_from_slice(&longitude.to_be_bytes());
    out.extend_from_slice(&altitude.to_be_bytes());
    Ok(out)
}

/// The addresses of an `ipv4hint` or `ipv6hint`, concatenated.
fn hints(
    list: &[String],
    parse: impl Fn(&str) -> Option<Vec<u8>>,
    what: &str,
) -> Result<Vec<u8>, String> {
    list.iter()
        .map(|a| parse(a).ok_or_else(|| format!("{a:?} is not {what}")))
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.concat())
}

/// RFC 9460 section 2.1: `key=value` parameters, sorted by key in the wire form.
fn svc_params(tokens: &[Token<'_>]) -> Result<Vec<u8>, String> {
    const KEYS: &[&str] = &[
        "mandatory",
        "alpn",
        "no-default-alpn",
        "port",
        "ipv4hint",
        "ech",
        "ipv6hint",
    ];
    let key_of = |k: &str| -> Option<u16> {
        KEYS.iter()
            .position(|x| *x == k)
            .map(|p| p as u16)
            .or_else(|| k.strip_prefix("key").and_then(|n| n.parse().ok()))
    };
    let mut params: Vec<(u16, Vec<u8>)> = Vec::new();
    for token in tokens {
        let text = String::from_utf8_lossy(token.text).into_owned();
        let (key, value) = match text.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.trim_matches('"').to_string())),
            None => (text.clone(), None),
        };
        let code = key_of(&key).ok_or_else(|| format!("{key:?} is not a SvcParamKey"))?;
        let list = |v: &Option<String>| -> Result<Vec<String>, String> {
            v.as_ref()
                .map(|v| v.split(',').map(str::to_string).collect())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        let data = match code {
            0 => list(&value)?
                .iter()
                .map(|k| {
                    key_of(k)
                        .map(|c| c.to_be_bytes())
                        .ok_or(format!("{k:?} is not a key"))
                })
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            1 => {
                let mut d = Vec::new();
                for id in list(&value)? {
                    if id.is_empty() || id.len() > 255 {
                        return Err("an alpn id of 1 to 255 bytes".into());
                    }
                    d.push(id.len() as u8);
                    d.extend(id.bytes());
                }
                d
            }
            2 => {
                if value.is_some() {
                    return Err("no-default-alpn takes no value".into());
                }
                Vec::new()
            }
            3 => list(&value)?
                .first()
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or("port needs a number")?
                .to_be_bytes()
                .to_vec(),
            4 => hints(
                &list(&value)?,
                |a| a.parse::<Ipv4Addr>().ok().map(|a| a.octets().to_vec()),
                "IPv4",
            )?,
            5 => base64(value.as_deref().ok_or("ech needs a value")?)?,
            6 => hints(
                &list(&value)?,
                |a| a.parse::<Ipv6Addr>().ok().map(|a| a.octets().to_vec()),
                "IPv6",
            )?,
            _ => value.map(|v| v.into_bytes()).unwrap_or_default(),
        };
        if params.iter().any(|(k, _)| *k == code) {
            return Err(format!("{key} is given twice"));
        }
        params.push((code, data));
    }
    params.sort_by_key(|(k, _)| *k);
    let mut out = Vec::new();
    for (key, data) in params {
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    Ok(out)
}

/// Reads `path` (and the files it includes), the zone `origin` (wire form), calling `add` for
/// every record. Included files must be inside `root`. A bad entry is reported and reading
/// goes on with the next (every problem of a file in one pass, as Knot's and NSD's checkers
/// do), up to `MAX_ERRORS`; a lexical error (an unclosed quote or parenthesis) ends its file.
pub fn read(
    path: &Path,
    text: &[u8],
    origin: &[u8],
    root: &Path,
    add: &mut dyn FnMut(Record<'_>) -> Result<(), String>,
) -> Result<(), Vec<ParseError>> {
    let mut state = State {
        origin: origin.to_vec(),
        default_ttl: None,
        last_ttl: None,
        owner: Vec::new(),
        rdata: Vec::new(),
    };
    let mut errors = Vec::new();
    read_file(path, text, &mut state, root, 0, add, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A file's problems are listed up to this many; then reading stops.
const MAX_ERRORS: usize = 100;

struct State {
    origin: Vec<u8>,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    /// The last owner (empty before the first record).
    owner: Vec<u8>,
    /// The RDATA being read (reused from record to record).
    rdata: Vec<u8>,
}

/// Reads one file's entries, adding each problem to `errors`; stops at `MAX_ERRORS`.
fn read_file(
    path: &Path,
    text: &[u8],
    state: &mut State,
    root: &Path,
    depth: usize,
    add: &mut dyn FnMut(Record<'_>) -> Result<(), String>,
    errors: &mut Vec<ParseError>,
) {
    let fail = |line: usize, message: String| ParseError {
        file: path.to_path_buf(),
        line,
        message,
    };
    let read = entries(
        text,
        &mut |entry| {
            if errors.len() >= MAX_ERRORS {
                return Err(None);
            }
            if let Err(e) = read_entry(path, entry, state, root, depth, add, errors) {
                errors.push(e);
                if errors.len() >= MAX_ERRORS {
                    errors.push(fail(
                        entry.line,
                        format!("{MAX_ERRORS} problems: reading stops here"),
                    ));
                    return Err(None);
                }
            }
            Ok(())
        },
        |line, message| Some(fail(line, message)),
    );
    if let Err(Some(lexical)) = read {
        errors.push(lexical);
    }
}

/// One entry: a directive, or a record handed to `add`.
fn read_entry(
    path: &Path,
    entry: &Entry<'_>,
    state: &mut State,
    root: &Path,
    depth: usize,
    add: &mut dyn FnMut(Record<'_>) -> Result<(), String>,
    errors: &mut Vec<ParseError>,
) -> Result<(), ParseError> {
    let fail = |line: usize, message: String| ParseError {
        file: path.to_path_buf(),
        line,
        message,
    };
    {
        let line = entry.line;
        let first = &entry.tokens[0];
        if !entry.blank_owner && !first.quoted && first.text.starts_with(b"$") {
            let directive = String::from_utf8_lossy(first.text).to_ascii_uppercase();
            let args = &entry.tokens[1..];
            match directive.as_str() {
                "$ORIGIN" => {
                    let [arg] = args else {
                        return Err(fail(line, "$ORIGIN takes one name".into()));
                    };
                    let origin = name(arg.text, &state.origin).map_err(|m| fail(line, m))?;
                    state.origin = origin;
                }
                "$TTL" => {
                    let [arg] = args else {
                        return Err(fail(line, "$TTL takes one duration".into()));
                    };
                    state.default_ttl = Some(ttl(arg.text).ok_or_else(|| {
                        fail(
                            line,
                            format!("{:?} is not a duration", String::from_utf8_lossy(arg.text)),
                        )
                    })?);
                }
                "$INCLUDE" => {
                    let (file, origin) = match args {
                        [f] => (f, None),
                        [f, o] => (f, Some(o)),
                        _ => {
                            return Err(fail(
                                line,
                                "$INCLUDE takes a file and an optional origin".into(),
                            ));
                        }
                    };
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(fail(
                            line,
                            format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH}"),
                        ));
                    }
                    let included = path.parent().unwrap_or(Path::new(".")).join(
                        String::from_utf8_lossy(&unescape(file.text).map_err(|m| fail(line, m))?)
                            .as_ref(),
                    );
                    let inside = |p: &Path| {
                        let (Ok(p), Ok(r)) = (p.canonicalize(), root.canonicalize()) else {
                            return false;
                        };
                        p.starts_with(r)
                    };
                    if !inside(&included) {
                        return Err(fail(
                            line,
                            format!(
                                "$INCLUDE {}: only files inside the zones directory {} may be included",
                                included.display(),
                                root.display()
                            ),
                        ));
                    }
                    let size = std::fs::metadata(&included)
                        .map_err(|e| fail(line, format!("$INCLUDE {}: {e}", included.display())))?
                        .len();
                    if size > MAX_FILE {
                        return Err(fail(
                            line,
                            format!("$INCLUDE {}: larger than 1 GiB", included.display()),
                        ));
                    }
                    let body = std::fs::read(&included)
                        .map_err(|e| fail(line, format!("$INCLUDE {}: {e}", included.display())))?;
                    let mut inner = State {
                        origin: match origin {
                            Some(o) => name(o.text, &state.origin).map_err(|m| fail(line, m))?,
                            None => state.origin.clone(),
                        },
                        default_ttl: state.default_ttl,
                        last_ttl: state.last_ttl,
                        owner: state.owner.clone(),
                        rdata: Vec::new(),
                    };
                    read_file(&included, &body, &mut inner, root, depth + 1, add, errors);
                    // RFC 1035 section 5.1: the origin and owner go back after the include.
                }
                "$GENERATE" => {
                    return Err(fail(
                        line,
                        "$GENERATE is not supported; write the records out".into(),
                    ));
                }
                other => return Err(fail(line, format!("unknown directive {other}"))),
            }
            return Ok(());
        }
        let mut tokens: &[Token<'_>] = &entry.tokens;
        if entry.blank_owner {
            if state.owner.is_empty() {
                return Err(fail(line, "the first record has no owner name".into()));
            }
        } else {
            let (owner, rest) = tokens.split_first().expect("entries are not empty");
            tokens = rest;
            state.owner.clear();
            name_into(owner.text, &state.origin, &mut state.owner)
                .map_err(|m| fail(owner.line, m))?;
        }
        // [TTL] [class] type, TTL and class in either order.
        let mut record_ttl = None;
        let mut class_seen = false;
        let rtype = loop {
            let Some((token, rest)) = tokens.split_first() else {
                return Err(fail(line, "a record needs a type".into()));
            };
            tokens = rest;
            let text = token.text;
            let shown = || String::from_utf8_lossy(text).into_owned();
            if record_ttl.is_none() && text.first().is_some_and(u8::is_ascii_digit) {
                record_ttl = Some(
                    ttl(text).ok_or_else(|| fail(line, format!("{:?} is not a TTL", shown())))?,
                );
                continue;
            }
            let is = |word: &[u8]| text.eq_ignore_ascii_case(word);
            let class_like = is(b"IN")
                || is(b"CH")
                || is(b"HS")
                || is(b"CS")
                || text
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"CLASS"));
            if !class_seen && class_like {
                if !is(b"IN") && !is(b"CLASS1") {
                    return Err(fail(
                        line,
                        format!("class {}: only class IN zones are served", shown()),
                    ));
                }
                class_seen = true;
                continue;
            }
            break std::str::from_utf8(text)
                .ok()
                .and_then(type_code)
                .ok_or_else(|| fail(line, format!("{:?} is not a record type", shown())))?;
        };
        let record_ttl = match record_ttl {
            Some(t) => {
                state.last_ttl = Some(t);
                t
            }
            None => state.default_ttl.or(state.last_ttl).unwrap_or(DEFAULT_TTL),
        };
        let mut data = std::mem::take(&mut state.rdata);
        data.clear();
        rdata(rtype, tokens, &state.origin, &mut data).map_err(|m| fail(line, m))?;
        if data.len() > usize::from(u16::MAX) {
            return Err(fail(
                line,
                "the record data is longer than 65535 bytes".into(),
            ));
        }
        add(Record {
            owner: &state.owner,
            rtype,
            ttl: record_ttl,
            rdata: &data,
            file: path,
            line,
        })
        .map_err(|m| fail(line, m))?;
        state.rdata = data;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as read, owned.
    #[derive(Debug)]
    struct Owned {
        owner: Vec<u8>,
        rtype: u16,
        ttl: u32,
        rdata: Vec<u8>,
        line: usize,
    }

    fn parse(text: &str) -> Result<Vec<Owned>, ParseError> {
        let mut out = Vec::new();
        read(
            Path::new("z/example.zone"),
            text.as_bytes(),
            &wire::from_dotted("example").expect("origin"),
            Path::new("z"),
            &mut |r| {
                out.push(Owned {
                    owner: r.owner.to_vec(),
                    rtype: r.rtype,
                    ttl: r.ttl,
                    rdata: r.rdata.to_vec(),
                    line: r.line,
                });
                Ok(())
            },
        )
        .map_err(|mut errors| errors.swap_remove(0))?;
        Ok(out)
    }

    fn one(text: &str) -> Owned {
        let mut records = parse(text).expect("parses");
        assert_eq!(records.len(), 1, "{records:?}");
        records.remove(0)
    }

    #[test]
    fn entries_owners_ttls_and_classes() {
        let r = parse("$TTL 1h\n@ IN SOA ns h ( 1 2\n 3 4 ; comment\n 5 )\n  NS ns.example.\nwww 60 IN A 192.0.2.1\n    IN 30 AAAA ::1\nmail A 192.0.2.2\n")
            .expect("zone");
        assert_eq!(r.len(), 5);
        assert_eq!((r[0].rtype, r[0].ttl, r[0].line), (6, 3600, 2));
        assert_eq!(r[1].owner, wire::from_dotted("example").expect("n"));
        assert_eq!((r[2].ttl, r[3].ttl, r[3].rtype), (60, 30, 28));
        assert_eq!(r[4].ttl, 3600, "$TTL applies to a record without one");
        assert_eq!(r[4].line, 8);
    }

    #[test]
    fn escapes_in_names_and_strings() {
        let r = one("a\\.b\\032c.example. 1 TXT \"\\195\\169\" x\\\"y \"semi;colon\"\n");
        assert_eq!(
            r.owner,
            [
                &[5, b'a', b'.', b'b', b' ', b'c'][..],
                &wire::from_dotted("example").expect("n")
            ]
            .concat()
        );
        assert_eq!(
            r.rdata,
            [
                2, 195, 169, 3, b'x', b'"', b'y', 10, b's', b'e', b'm', b'i', b';', b'c', b'o',
                b'l', b'o', b'n'
            ]
            .to_vec()
        );
        let r = one("_dmarc._tcp.-lead.x_y 1 A 192.0.2.1\n");
        assert_eq!(wire::to_text(&r.owner), "_dmarc._tcp.-lead.x_y.example.");
        let r = one("\\@\\(\\;\\\\ 1 TXT a\n");
        assert_eq!(&r.owner[..5], &[4, b'@', b'(', b';', b'\\']);
    }

    #[test]
    fn generic_syntax_for_any_type() {
        assert_eq!(
            one("x 1 TYPE65534 \\# 4 0a000001\n").rdata,
            vec![10, 0, 0, 1]
        );
        assert_eq!(one("x 1 A \\# 4 0A000001\n").rdata, vec![10, 0, 0, 1]);
        assert_eq!(one("x 1 TYPE1 192.0.2.1\n").rdata, vec![192, 0, 2, 1]);
        assert!(
            parse("x 1 TYPE65534 \\# 3 0a000001\n")
                .unwrap_err()
                .message
                .contains("says 3")
        );
        assert!(
            parse("x 1 TYPE65534 1.2.3.4\n")
                .unwrap_err()
                .message
                .contains("RFC 3597")
        );
    }

    #[test]
    fn types_real_zones_hold() {
        assert_eq!(
            one("x 1 DNAME y\n").rdata,
            wire::from_dotted("y.example").expect("n")
        );
        assert_eq!(
            one("x 1 CAA 0 issue \"letsencrypt.org\"\n").rdata[..7],
            [0, 5, b'i', b's', b's', b'u', b'e']
        );
        assert_eq!(
            one("x 1 SSHFP 1 1 0123ABcd\n").rdata,
            vec![1, 1, 1, 0x23, 0xab, 0xcd]
        );
        assert_eq!(
            one("x 1 DS 12345 ECDSAP256SHA256 2 AABB\n").rdata,
            vec![0x30, 0x39, 13, 2, 0xaa, 0xbb]
        );
        assert_eq!(
            one("x 1 DNSKEY 257 3 13 AQID\n").rdata,
            vec![1, 1, 3, 13, 1, 2, 3]
        );
        assert_eq!(
            one("x 1 NSEC y A MX RRSIG\n").rdata[11..],
            [0, 6, 0x40, 1, 0, 0, 0, 2]
        );
        assert_eq!(
            one("x 1 EUI48 00-00-5e-00-53-2a\n").rdata,
            vec![0, 0, 0x5e, 0, 0x53, 0x2a]
        );
        // RFC 1876 example: 42 21 54 N 71 06 18 W -24m 30m.
        let loc = one("x 1 LOC 42 21 54 N 71 06 18 W -24m 30m\n").rdata;
        assert_eq!(loc[..4], [0, 0x33, 0x16, 0x13]);
        assert_eq!(
            u32::from_be_bytes(loc[4..8].try_into().expect("4")),
            2_299_997_648
        );
        assert_eq!(
            u32::from_be_bytes(loc[12..16].try_into().expect("4")),
            9_997_600
        );
        let https = one("x 1 HTTPS 1 . alpn=h2,h3 port=443 ipv4hint=192.0.2.1\n").rdata;
        assert_eq!(https[..3], [0, 1, 0]);
        assert_eq!(https[3..5], [0, 1], "alpn first");
        assert_eq!(
            one("x 1 RRSIG A 13 2 300 20240101000000 20231201000000 1 example. AQID\n").rdata
                [8..12],
            1_704_067_200u32.to_be_bytes()
        );
    }

    #[test]
    fn huge_numbers_are_errors_not_overflows() {
        for text in [
            "99999999999999999999999h",
            "9999999999999w",
            "1w99999999999999999999s",
        ] {
            assert_eq!(ttl(text.as_bytes()), None, "{text}");
        }
        assert_eq!(ttl(b"1h30m"), Some(5400));
        assert!(
            parse("l 1 LOC 1 N 1 E 1e300m\n").is_err(),
            "an altitude out of range"
        );
        let e = parse("a 99999999999999999999999h A 192.0.2.1\n").expect_err("overflow");
        assert!(e.message.contains("not a TTL"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let long = format!("x 1 TXT \"{}\"\n", "a".repeat(256));
        let e = parse(&format!("a 1 A 192.0.2.1\n{long}")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("at most 255"), "{e}");
        assert_eq!(e.to_string().split(':').nth(1), Some("2"));
        for (text, what) in [
            ("a 1 A 300.1.1.1\n", "IPv4"),
            ("a 1 MX ten b\n", "number"),
            ("a 1 CH TXT x\n", "class IN"),
            ("a 1 BOGUS x\n", "record type"),
            ("a..b 1 A 192.0.2.1\n", "empty label"),
            ("a 1 A 192.0.2.1 extra\n", "unexpected"),
            ("a 1 TXT \"open\n", "not closed"),
            ("a 1 SOA ( ns h 1 2 3 4 5\n", "without ')'"),
            ("$GENERATE 1-2 a$ A 1.2.3.$\n", "not supported"),
            (" 1 A 192.0.2.1\n", "no owner"),
            ("a 1 TXT \\300\n", "not a byte"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.message.contains(what), "{text}: {e}");
        }
    }

    #[test]
    fn includes_stay_inside_the_root() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("part.inc"), "inc 1 A 192.0.2.9\n").expect("write");
        let mut n = 0;
        let origin = wire::from_dotted("example").expect("origin");
        let zone = dir.path().join("example.zone");
        read(
            &zone,
            b"$INCLUDE part.inc\nafter 1 A 192.0.2.1\n",
            &origin,
            dir.path(),
            &mut |_| {
                n += 1;
                Ok(())
            },
        )
        .expect("include");
        assert_eq!(n, 2);
        let e = read(
            &zone,
            b"$INCLUDE /etc/passwd\n",
            &origin,
            dir.path(),
            &mut |_| Ok(()),
        )
        .expect_err("outside");
        assert!(e[0].message.contains("inside the zones directory"), "{e:?}");
    }

    #[test]
    fn every_bad_entry_of_a_file_is_reported_in_one_pass() {
        let origin = wire::from_dotted("example").expect("origin");
        let mut added = Vec::new();
        let text = b"a 1 A 192.0.2.1\nb 1 A 1.2.3\nc 1 BOGUS x\n$TTL forever\nd 1 A 192.0.2.4\ne 1 TXT \"open\n";
        let errors = read(
            Path::new("z/example.zone"),
            text,
            &origin,
            Path::new("z"),
            &mut |r| {
                added.push(r.line);
                Ok(())
            },
        )
        .expect_err("bad entries");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 6], "{errors:?}");
        // The good records around them were read.
        assert_eq!(added, vec![1, 5]);
        // A file of nothing but bad lines stops at the cap, saying so.
        let many = "x 1 A 1.2.3\n".repeat(MAX_ERRORS + 50);
        let errors = read(
            Path::new("z/example.zone"),
            many.as_bytes(),
            &origin,
            Path::new("z"),
            &mut |_| Ok(()),
        )
        .expect_err("bad entries");
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        assert!(
            errors[MAX_ERRORS].message.contains("reading stops"),
            "{errors:?}"
        );
    }
}
