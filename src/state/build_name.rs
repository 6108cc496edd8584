//! A build's name: `YYYYMMDD-HHMMSS` in UTC, sorting by age. The one way from a build to
//! its directory and its records is `Layout` (plan.rs), given one of these.

use std::cmp::Ordering;
use std::fmt;

use time::OffsetDateTime;
use time::macros::format_description;

/// `YYYYMMDD-HHMMSS` in UTC, with `-2`, `-3`… when several builds land in one second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildName {
    stamp: String,
    seq: u32,
}

impl BuildName {
    pub(crate) fn parse(name: &str) -> Option<BuildName> {
        let (stamp, seq) = match name.get(15..) {
            Some("") => (name, 1),
            Some(rest) => (
                &name[..15],
                rest.strip_prefix('-')?.parse().ok().filter(|n| *n >= 2)?,
            ),
            None => return None,
        };
        let bytes = stamp.as_bytes();
        let shape_ok = bytes.len() == 15
            && bytes[8] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 8 || b.is_ascii_digit());
        // `-02` would parse as 2 but is not a name we make; keep names canonical.
        let canonical = seq == 1 || name.ends_with(&format!("-{seq}"));
        (shape_ok && canonical).then(|| BuildName {
            stamp: stamp.to_string(),
            seq,
        })
    }

    /// The name for a build made at `now`, after every build in `existing`. If the clock went
    /// back, the newest stamp is reused with a higher sequence, so names keep sorting by age.
    pub(crate) fn next(now: OffsetDateTime, existing: &[BuildName]) -> BuildName {
        let format = format_description!("[year][month][day]-[hour][minute][second]");
        let stamp = now.format(format).expect("a UTC time always formats");
        match existing.iter().max() {
            Some(newest) if newest.stamp >= stamp => BuildName {
                stamp: newest.stamp.clone(),
                seq: newest.seq + 1,
            },
            _ => BuildName { stamp, seq: 1 },
        }
    }
}

impl Ord for BuildName {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.stamp, self.seq).cmp(&(&other.stamp, other.seq))
    }
}

impl PartialOrd for BuildName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BuildName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            1 => f.write_str(&self.stamp),
            n => write!(f, "{}-{n}", self.stamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn name(s: &str) -> BuildName {
        BuildName::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn names_parse_and_print_back() {
        for s in ["20261126-032400", "20261126-032400-2", "20261126-032400-10"] {
            assert_eq!(name(s).to_string(), s);
        }
        for s in [
            "latest",
            "20261126-0324",
            "20261126-032400-1",
            "20261126-032400-02",
            "2026112x-032400",
            "20261126_032400",
        ] {
            assert_eq!(BuildName::parse(s), None, "{s}");
        }
    }

    #[test]
    fn names_sort_by_age_even_past_nine_in_one_second() {
        let mut names = [
            name("20261126-032400-10"),
            name("20261126-032401"),
            name("20261126-032400-2"),
            name("20261126-032400"),
        ];
        names.sort();
        let printed: Vec<_> = names.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "20261126-032400",
                "20261126-032400-2",
                "20261126-032400-10",
                "20261126-032401"
            ]
        );
    }

    #[test]
    fn next_name_is_the_utc_second_or_a_sequence_within_it() {
        let now = datetime!(2026-11-26 03:24:00 UTC);
        assert_eq!(BuildName::next(now, &[]).to_string(), "20261126-032400");
        assert_eq!(
            BuildName::next(now, &[name("20261126-032359")]).to_string(),
            "20261126-032400"
        );
        assert_eq!(
            BuildName::next(now, &[name("20261126-032400")]).to_string(),
            "20261126-032400-2"
        );
        assert_eq!(
            BuildName::next(now, &[name("20261126-032400"), name("20261126-032400-2")]).to_string(),
            "20261126-032400-3"
        );
    }

    #[test]
    fn a_clock_that_went_back_still_gives_the_newest_name() {
        let now = datetime!(2026-11-26 03:24:00 UTC);
        assert_eq!(
            BuildName::next(now, &[name("20261127-000000")]).to_string(),
            "20261127-000000-2"
        );
    }
}
