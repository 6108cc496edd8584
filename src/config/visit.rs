//! Visitors that check a value of deploy.yml while serde reads it. A refusal raised inside a
//! visitor is placed by serde_yaml at the value itself (its line and column), not at the list
//! or map around it, which is why most checks of a single value live in one of these.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// A string value (`expecting` says what it should be) checked by the function inside the
/// visitor, so that serde_yaml locates a refusal at the value itself, not at the list or map
/// around it.
pub(super) struct Checked<T>(
    pub(super) &'static str,
    pub(super) fn(&str) -> Result<T, String>,
);

impl<T> Visitor<'_> for Checked<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.1)(text).map_err(E::custom)
    }
}

/// A list that must not be empty (the message says why), refused at the list itself.
pub(super) struct NonEmpty<T>(
    pub(super) &'static str,
    pub(super) std::marker::PhantomData<T>,
);

impl<'de, T: Deserialize<'de>> Visitor<'de> for NonEmpty<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        if items.is_empty() {
            return Err(de::Error::custom(self.0));
        }
        Ok(items)
    }
}
