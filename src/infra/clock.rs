//! The time as every record writes it (the deploy log, the lock, a freeze, a build's
//! `went-live` file).

use time::OffsetDateTime;
use time::macros::format_description;

/// RFC 3339 in UTC with a fixed number of digits, so that times sort as text.
pub(crate) fn utc_now_rfc3339() -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::now_utc()
        .format(format)
        .expect("a UTC time always formats")
}
