//! When a certificate is valid: `notBefore` and `notAfter` read from its DER (RFC 5280 section
//! 4.1.2.5), for the expiry metric, status and the verification cache; verification itself is
//! rustls'.

/// `notAfter` of a DER certificate, in seconds since the Unix epoch.
pub fn not_after(der: &[u8]) -> Option<i64> {
    validity(der).map(|(_, not_after)| not_after)
}

/// (`notBefore`, `notAfter`) of a DER certificate, in seconds since the Unix epoch.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    //   serialNumber INTEGER, signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE {
    //   notBefore Time, notAfter Time }, ... } ... }
    let (certificate, _) = element(der, 0x30)?;
    let (tbs, _) = element(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?;
    }
    for _ in 0..3 {
        rest = skip(rest)?; // serial number, signature algorithm, issuer
    }
    let (validity, _) = element(rest, 0x30)?;
    let not_before = time(validity)?;
    let not_after = time(skip(validity)?)?;
    Some((not_before, not_after))
}

/// The content of the element at the start of `input`, which must have `tag`; and what follows.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let (len, header) = length(&input[1..])?;
    let start = 1 + header;
    let end = start.checked_add(len)?;
    Some((input.get(start..end)?, input.get(end..)?))
}

/// What follows the element at the start of `input`, whatever its tag.
fn skip(input: &[u8]) -> Option<&[u8]> {
    let (len, header) = length(input.get(1..)?)?;
    input.get((1 + header).checked_add(len)?..)
}

/// A DER length: (value, bytes it took).
fn length(input: &[u8]) -> Option<(usize, usize)> {
    let first = *input.first()?;
    if first < 0x80 {
        return Some((usize::from(first), 1));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return None;
    }
    let mut len = 0usize;
    for byte in input.get(1..=count)? {
        len = (len << 8) | usize::from(*byte);
    }
    Some((len, 1 + count))
}

/// UTCTime (YYMMDDHHMMSSZ, 1950..2049) or GeneralizedTime (YYYYMMDDHHMMSSZ).
fn time(input: &[u8]) -> Option<i64> {
    let tag = *input.first()?;
    let (content, _) = element(input, tag)?;
    let text = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let digits = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 14) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| digits(&rest[i..i + 2]));
    let (month, day) = (month?, day?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(
        crate::clock::days_from_civil(year, month, day) * 86_400
            + hour? * 3_600
            + minute? * 60
            + second?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_is_read_from_real_certificates() {
        // UTCTime (before 2050) and GeneralizedTime.
        for year in [2023, 2052] {
            let mut params =
                rcgen::CertificateParams::new(vec!["a.test".to_string()]).expect("params");
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
            let key = rcgen::KeyPair::generate().expect("key");
            let der = params.self_signed(&key).expect("cert").der().to_vec();
            let expected = crate::clock::days_from_civil(i64::from(year), 1, 1) * 86_400;
            assert_eq!(not_after(&der), Some(expected), "{year}");
        }
        assert_eq!(crate::clock::days_from_civil(1970, 1, 1), 0);
        assert_eq!(crate::clock::days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(not_after(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(not_after(&[]), None);
    }
}
