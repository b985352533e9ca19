//! The file's shape before its values: unknown keys (with the closest known one), values of
//! the wrong type and missing required keys, each at its exact path
//! (`record[0].endpoints[1].adress`). What does not fit is taken out (a missing key gets an
//! empty placeholder) so that validation still reports every other problem in the same pass.

use serde::de::DeserializeOwned;

use super::{
    Problem,
    raw::{
        RawAdmin, RawCheck, RawCluster, RawDns, RawDnssec, RawDnssecKey, RawDrill, RawEndpoint,
        RawProber, RawRecord, RawRoute53, RawRoute53Target, RawRrl, RawServer, RawState,
    },
};

/// What the shape check found, and the paths of placeholders it put in (validation problems
/// at those paths would only repeat that the key is missing).
#[derive(Default)]
pub struct Shape {
    pub problems: Vec<Problem>,
    pub placeholders: Vec<String>,
}

/// Checks `table` (a whole configuration) and makes it fit `RawConfig`.
pub fn check(table: &mut toml::Table) -> Shape {
    let mut shape = Shape::default();
    let sections = [
        "cluster", "prober", "check", "dns", "admin", "record", "route53", "server", "drill",
        "state",
    ];
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let Some(value) = table.get_mut(&key) else {
            continue;
        };
        match key.as_str() {
            "cluster" => shape.fit::<RawCluster>(&key, value),
            "admin" => shape.fit::<RawAdmin>(&key, value),
            "route53" => shape.fit::<RawRoute53>(&key, value),
            "drill" => shape.fit::<RawDrill>(&key, value),
            "state" => shape.fit::<RawState>(&key, value),
            "dns" => {
                if let Some(rrl) = value.as_table_mut().and_then(|t| t.get_mut("rrl")) {
                    shape.fit::<RawRrl>("dns.rrl", rrl);
                }
                if let Some(signed) = value.as_table_mut().and_then(|t| t.get_mut("dnssec")) {
                    match signed.as_table_mut() {
                        Some(zones) => {
                            for (zone, settings) in zones.iter_mut() {
                                let path = format!("dns.dnssec.{zone:?}");
                                if let Some(keys) =
                                    settings.as_table_mut().and_then(|t| t.get_mut("keys"))
                                {
                                    shape.each::<RawDnssecKey>(
                                        &format!("{path}.keys"),
                                        keys,
                                        |_, _, _| {},
                                    );
                                }
                                shape.fit::<RawDnssec>(&path, settings);
                            }
                        }
                        None => {
                            shape.add(
                                "dns.dnssec",
                                "must be tables, written [dns.dnssec.\"example.com\"]".into(),
                            );
                            *signed = toml::Value::Table(toml::Table::new());
                        }
                    }
                }
                shape.fit::<RawDns>(&key, value);
            }
            "prober" => shape.each::<RawProber>(&key, value, |_, _, _| {}),
            "server" => shape.each::<RawServer>(&key, value, |_, _, _| {}),
            "record" => shape.each::<RawRecord>(&key, value, |shape, path, record| {
                if let Some(endpoints) = record.get_mut("endpoints") {
                    shape.each::<RawEndpoint>(
                        &format!("{path}.endpoints"),
                        endpoints,
                        |_, _, _| {},
                    );
                }
                if let Some(target) = record.get_mut("route53") {
                    shape.fit::<RawRoute53Target>(&format!("{path}.route53"), target);
                }
            }),
            "check" => match value.as_table_mut() {
                Some(checks) => {
                    for (name, check) in checks.iter_mut() {
                        shape.fit::<RawCheck>(&format!("check.{name}"), check);
                    }
                }
                None => {
                    shape.add(&key, "must be tables, written [check.NAME]".into());
                    table.remove(&key);
                }
            },
            other => {
                shape.add(other, unknown(other, &sections, "section"));
                table.remove(&key);
            }
        }
    }
    shape
}

impl Shape {
    fn add(&mut self, path: &str, message: String) {
        self.problems.push(Problem {
            path: path.to_string(),
            message,
            line: None,
        });
    }

    /// `value` must be a list of tables of `T` (`[[key]]`); `inner` first checks what each
    /// element holds below it.
    fn each<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: &mut toml::Value,
        inner: impl Fn(&mut Self, &str, &mut toml::Table),
    ) {
        let Some(items) = value.as_array_mut() else {
            self.add(
                key,
                format!("must be a list of tables, written [[{key}]] or [{{ ... }}, ...]"),
            );
            *value = toml::Value::Array(Vec::new());
            return;
        };
        for (i, item) in items.iter_mut().enumerate() {
            let path = format!("{key}[{i}]");
            if let Some(table) = item.as_table_mut() {
                inner(self, &path, table);
            }
            self.fit::<T>(&path, item);
        }
    }

    /// Makes `value` fit `T` at `path`: unknown keys and wrongly typed values are reported and
    /// taken out, missing required keys reported and given an empty placeholder.
    fn fit<T: DeserializeOwned>(&mut self, path: &str, value: &mut toml::Value) {
        let Some(table) = value.as_table_mut() else {
            if let Err(message) = fits::<T>(value) {
                self.add(path, message);
            }
            // Not a table where one is needed: nothing in it can be used.
            *value = toml::Value::Table(toml::Table::new());
            if let Err(message) = fits::<T>(value) {
                self.add(path, message);
            }
            return;
        };
        let known = fields::<T>();
        let keys: Vec<String> = table.keys().cloned().collect();
        for key in keys {
            if !known.is_empty() && !known.contains(&key.as_str()) {
                self.add(&format!("{path}.{key}"), unknown(&key, known, "key"));
                table.remove(&key);
            }
        }
        // Type errors and missing keys, one at a time (serde stops at the first).
        let mut taken_out: Vec<String> = Vec::new();
        for _ in 0..=2 * known.len() {
            let Err(message) = fits::<T>(&toml::Value::Table(table.clone())) else {
                return;
            };
            if let Some(missing) = missing_field(&message) {
                // A required key taken out for its type was reported already.
                if !taken_out.contains(&missing) {
                    self.add(
                        &format!("{path}.{missing}"),
                        "missing: this key is required".into(),
                    );
                }
                self.placeholders.push(format!("{path}.{missing}"));
                table.insert(missing, toml::Value::String(String::new()));
                continue;
            }
            // The key whose removal changes the error is the one it is about.
            let culprit = table.keys().find(|key| {
                let mut without = table.clone();
                without.remove(*key);
                fits::<T>(&toml::Value::Table(without))
                    .err()
                    .is_none_or(|other| other != message)
            });
            match culprit.cloned() {
                Some(key) => {
                    self.add(&format!("{path}.{key}"), message);
                    table.remove(&key);
                    taken_out.push(key);
                }
                None => {
                    self.add(path, message);
                    table.clear();
                    return;
                }
            }
        }
    }
}

fn fits<T: DeserializeOwned>(value: &toml::Value) -> Result<(), String> {
    value
        .clone()
        .try_into::<T>()
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// `missing field `name`` -> `name`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn unknown(key: &str, known: &[&str], what: &str) -> String {
    let close = known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    match close {
        Some((_, k)) => format!("unknown {what}; did you mean `{k}`?"),
        None => format!("unknown {what}; expected one of {}", known.join(", ")),
    }
}

/// Edit distance (Levenshtein), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// The field names serde knows for struct `T` (asked through a deserializer that only
/// records them).
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("fields only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(serde::de::Error::custom("fields only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut recorder = Fields(None);
    let _ = T::deserialize(&mut recorder);
    recorder.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut table: toml::Table = toml::from_str(text).expect("toml");
        let shape = check(&mut table);
        // What is left fits.
        toml::Value::Table(table)
            .try_into::<super::super::raw::RawConfig>()
            .expect("the cleaned table fits");
        shape.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_misfit_is_reported_at_its_path_with_a_suggestion() {
        let got = problems(
            "[clustr]\nquorum = 2\n[[prober]]\nregoin = \"a\"\n[[record]]\nname = \"www\"\nttl = \"x\"\n\
             endpoints = [{ address = \"192.0.2.1\" }, { adress = \"192.0.2.2\", weight = \"heavy\" }]\n\
             [admin]\nlisten = 8053\n",
        );
        for expected in [
            "clustr: unknown section; did you mean `cluster`?",
            "prober[0].regoin: unknown key; did you mean `region`?",
            "prober[0].region: missing: this key is required",
            "record[0].ttl: invalid type: string \"x\", expected i64",
            "record[0].endpoints[1].adress: unknown key; did you mean `address`?",
            "record[0].endpoints[1].address: missing: this key is required",
            "record[0].endpoints[1].weight: invalid type: string \"heavy\", expected i64",
            "admin.listen: invalid type: integer `8053`, expected a string",
        ] {
            assert!(got.iter().any(|p| p == expected), "{expected}\nin {got:#?}");
        }
        assert!(
            !got.iter().any(|p| p.starts_with("record[0]:")),
            "no problem reported at the whole record: {got:#?}"
        );
    }

    #[test]
    fn field_names_come_from_the_types() {
        assert!(fields::<RawEndpoint>().contains(&"check_address"));
        assert!(
            fields::<RawRecord>().contains(&"type"),
            "renamed fields as written"
        );
        assert_eq!(distance("adress", "address"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
