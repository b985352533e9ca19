//! Packing a plan into change batches within Route53's limits, keeping every record group's
//! changes (record and marker, delete and create) in one batch so that each group changes
//! atomically. Pure.

use super::{Change, plan::Unit};

/// Route53's limits per ChangeResourceRecordSets call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// ResourceRecord elements (an UPSERT would count twice; we never send one).
    pub records: usize,
    /// Characters of values.
    pub chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            records: 1000,
            chars: 32_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the changes of {key} alone exceed a Route53 change batch ({records} records, {chars} characters)"
)]
pub struct TooLarge {
    pub key: String,
    pub records: usize,
    pub chars: usize,
}

fn size(changes: &[Change]) -> (usize, usize) {
    changes.iter().fold((0, 0), |(r, c), change| {
        let set = change.set();
        (r + set.values.len(), c + set.value_chars())
    })
}

/// Packs units into as few batches as fit (first fit, in plan order).
pub fn batches(units: &[Unit], limits: Limits) -> Result<Vec<Vec<Change>>, TooLarge> {
    Ok(pack(units, limits)?
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .flat_map(|u| u.changes.iter().cloned())
                .collect()
        })
        .collect())
}

/// The units of each batch (first fit, in plan order): a unit is never split.
pub fn pack(units: &[Unit], limits: Limits) -> Result<Vec<Vec<&Unit>>, TooLarge> {
    let mut out: Vec<(Vec<&Unit>, usize, usize)> = Vec::new();
    for unit in units {
        let (records, chars) = size(&unit.changes);
        if records > limits.records || chars > limits.chars {
            return Err(TooLarge {
                key: unit.key.to_string(),
                records,
                chars,
            });
        }
        match out
            .iter_mut()
            .find(|(_, r, c)| r + records <= limits.records && c + chars <= limits.chars)
        {
            Some((batch, r, c)) => {
                batch.push(unit);
                *r += records;
                *c += chars;
            }
            None => out.push((vec![unit], records, chars)),
        }
    }
    Ok(out.into_iter().map(|(b, _, _)| b).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::route53::RecordSet;

    fn unit(i: usize, values: usize, len: usize) -> Unit {
        let set = RecordSet::new(
            &format!("n{i}.example.com."),
            "TXT",
            60,
            (0..values)
                .map(|v| format!("\"{v:0len$}\"", len = len.saturating_sub(2).max(1)))
                .collect(),
        );
        Unit {
            key: set.key(),
            changes: vec![Change::Create(set)],
        }
    }

    #[test]
    fn a_group_too_large_for_one_batch_is_refused() {
        let err = batches(&[unit(0, 1001, 3)], Limits::default()).expect_err("too large");
        assert_eq!(err.records, 1001);
    }

    proptest! {
        /// Batching keeps every change, keeps each group whole, and respects the limits.
        #[test]
        fn batches_keep_every_change_within_limits(
            shapes in prop::collection::vec((1usize..40, 3usize..60), 0..60),
            records in 40usize..200,
            chars in 2_500usize..5_000,
        ) {
            let limits = Limits { records, chars };
            let units: Vec<Unit> = shapes.iter().enumerate().map(|(i, (v, l))| unit(i, *v, *l)).collect();
            let out = batches(&units, limits).expect("each unit fits");
            let flat: Vec<&Change> = out.iter().flatten().collect();
            let all: Vec<&Change> = units.iter().flat_map(|u| &u.changes).collect();
            prop_assert_eq!(flat.len(), all.len());
            for c in &all {
                prop_assert!(flat.contains(c));
            }
            for batch in &out {
                let (r, c) = size(batch);
                prop_assert!(r <= limits.records && c <= limits.chars);
            }
            for u in &units {
                let holding = out.iter().filter(|b| b.iter().any(|c| u.changes.contains(c))).count();
                prop_assert_eq!(holding, 1, "a group is split across batches");
            }
        }
    }
}
