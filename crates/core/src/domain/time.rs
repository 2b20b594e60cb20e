//! Time as the wire shows it: ISO-8601 in UTC with milliseconds (`2023-11-14T22:13:20.123Z`). Stored times
//! are epoch milliseconds; the rules work in `DateTime<Utc>`. One formatter for both.

use chrono::{DateTime, SecondsFormat, Utc};

/// A time in the wire's ISO form.
pub fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Epoch milliseconds in the wire's ISO form.
pub fn iso_ms(ms: i64) -> String {
    iso(&DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// `serialize_with` helpers for the four shapes a time is kept in.
pub mod ser {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn iso<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::iso(t))
    }

    pub fn opt_iso<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::iso(t)),
            None => s.serialize_none(),
        }
    }

    pub fn ms<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::iso_ms(*ms))
    }

    pub fn opt_ms<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::iso_ms(*ms)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_in_utc() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso(&DateTime::from_timestamp_millis(1_700_000_000_123).unwrap()), "2023-11-14T22:13:20.123Z");
    }
}
