//! The numbers of deploy.yml: each one's range ([`Limit`]), and the visitor that reads any
//! YAML scalar at its key, so that every wrong value is refused with the key's name and range
//! at its line and column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The range of one number in deploy.yml. Every number has one, checked while the file is
/// read, so that no value a file can hold reaches a clock or a counter at run time: an
/// `Instant + Duration` of 2^64 seconds panics, and a panic after the switch would leave an
/// unchecked build live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limit {
    /// As written in deploy.yml, with its section: `healthcheck.timeout`.
    pub(crate) key: &'static str,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// Seconds (else a count).
    pub(crate) seconds: bool,
    /// Fractions allowed (else a whole number).
    pub(crate) fractional: bool,
    /// What the smallest value means, when that needs saying.
    pub(crate) min_means: Option<&'static str>,
}

/// A day: no deploy step should take longer, and no clock overflows adding it.
const DAY: f64 = 86_400.0;
const HOUR: f64 = 3_600.0;

pub(crate) const KEEP_BUILDS: Limit = Limit {
    key: "keep_builds",
    min: 1.0,
    max: 1000.0,
    seconds: false,
    fractional: false,
    min_means: Some("the live build only"),
};
pub(crate) const LOCK_TIMEOUT: Limit = Limit {
    key: "lock_timeout",
    min: 0.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: Some("do not wait"),
};
pub(crate) const COMMAND_TIMEOUT: Limit = Limit {
    key: "command_timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub(crate) const COMPOSER_TIMEOUT: Limit = Limit {
    key: "composer.timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub(crate) const HEALTHCHECK_RETRIES: Limit = Limit {
    key: "healthcheck.retries",
    min: 0.0,
    max: 100.0,
    seconds: false,
    fractional: false,
    min_means: Some("one attempt only"),
};
pub(crate) const HEALTHCHECK_INTERVAL: Limit = Limit {
    key: "healthcheck.interval",
    min: 0.0,
    max: HOUR,
    seconds: true,
    fractional: true,
    min_means: Some("retry at once"),
};
pub(crate) const HEALTHCHECK_TIMEOUT: Limit = Limit {
    key: "healthcheck.timeout",
    min: 0.001,
    max: DAY,
    seconds: true,
    fractional: true,
    min_means: None,
};

pub(crate) const BUILD_TIMEOUT: Limit = Limit {
    key: "build.timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub(crate) const HOSTS_AT_ONCE: Limit = Limit {
    key: "hosts_at_once",
    min: 1.0,
    max: 64.0,
    seconds: false,
    fractional: false,
    min_means: Some("one host after the other"),
};
pub(crate) const HOST_TIMEOUT: Limit = Limit {
    key: "host_timeout",
    min: 1.0,
    max: DAY,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub(crate) const PREFLIGHT_TIMEOUT: Limit = Limit {
    key: "preflight.timeout",
    min: 1.0,
    max: HOUR,
    seconds: true,
    fractional: false,
    min_means: None,
};
pub(crate) const SWITCH_WINDOW: Limit = Limit {
    key: "switch_window",
    min: 1.0,
    max: HOUR,
    seconds: true,
    fractional: false,
    min_means: None,
};

/// Every number deploy.yml holds (the tests go through them all).
#[cfg(test)]
pub(crate) const NUMBERS: [Limit; 12] = [
    KEEP_BUILDS,
    LOCK_TIMEOUT,
    COMMAND_TIMEOUT,
    COMPOSER_TIMEOUT,
    HEALTHCHECK_RETRIES,
    HEALTHCHECK_INTERVAL,
    HEALTHCHECK_TIMEOUT,
    BUILD_TIMEOUT,
    HOSTS_AT_ONCE,
    HOST_TIMEOUT,
    SWITCH_WINDOW,
    PREFLIGHT_TIMEOUT,
];

impl Limit {
    /// `a whole number of seconds from 0 (do not wait) to 86400 (24 hours)`.
    pub(crate) fn range(&self) -> String {
        let what = match (self.fractional, self.seconds) {
            (false, false) => "a whole number",
            (false, true) => "a whole number of seconds",
            (true, _) => "a number of seconds",
        };
        let min = match self.min_means {
            Some(means) => format!("{} ({means})", self.min),
            None => self.min.to_string(),
        };
        let max = if self.max == DAY {
            format!("{} (24 hours)", self.max)
        } else if self.max == HOUR {
            format!("{} (1 hour)", self.max)
        } else {
            self.max.to_string()
        };
        format!("{what} from {min} to {max}")
    }

    /// serde_yaml puts the key's path (`healthcheck.timeout: `) before the message itself.
    fn refuse<E: de::Error>(&self, got: impl fmt::Display) -> E {
        E::custom(format!("must be {}; got {got}", self.range()))
    }

    /// False for NaN too.
    pub(super) fn contains(&self, value: f64) -> bool {
        value >= self.min && value <= self.max
    }

    /// Reads the value at this key: any YAML scalar is looked at, so that every wrong one is
    /// refused with this key's name and range, at its line and column.
    fn read<'de, D: Deserializer<'de>>(&'static self, d: D) -> Result<f64, D::Error> {
        d.deserialize_any(NumberVisitor(self))
    }

    pub(super) fn whole<'de, D: Deserializer<'de>>(&'static self, d: D) -> Result<u64, D::Error> {
        // Exact: `read` admits only whole numbers within a range far below 2^53 here.
        self.read(d).map(|v| v as u64)
    }

    pub(super) fn duration<'de, D: Deserializer<'de>>(
        &'static self,
        d: D,
    ) -> Result<Duration, D::Error> {
        let seconds = self.read(d)?;
        Ok(Duration::from_secs_f64(seconds))
    }
}

struct NumberVisitor(&'static Limit);

/// A float the way YAML spells it, so that the error quotes what the user wrote.
fn yaml_float(v: f64) -> String {
    if v.is_nan() {
        ".nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        format!("{v:?}")
    }
}

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0.range())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_i128(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_i128(v.into())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<f64, E> {
        match i128::try_from(v) {
            Ok(v) => self.visit_i128(v),
            Err(_) => Err(self.0.refuse(v)),
        }
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<f64, E> {
        // Compared as integers: a huge one must not round into the range as a float.
        if v < self.0.min.ceil() as i128 || v > self.0.max.floor() as i128 {
            return Err(self.0.refuse(v));
        }
        Ok(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        let shown = yaml_float(v);
        if !self.0.fractional {
            // `3.0` and `1e2` are in range and whole, yet written as YAML floats: say why.
            let hint = if self.0.contains(v) && v.fract() == 0.0 {
                " (write it without a decimal point or exponent)"
            } else {
                ""
            };
            return Err(self.0.refuse(format_args!("{shown}{hint}")));
        }
        if self.0.contains(v) {
            // `-0.0` becomes 0.
            Ok(v + 0.0)
        } else {
            Err(self.0.refuse(shown))
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<f64, E> {
        Err(self.0.refuse(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        Err(self.0.refuse(format_args!("the text {v:?}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Err(self.0.refuse("nothing"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(self.0.refuse("a list"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(self.0.refuse("a map"))
    }
}
