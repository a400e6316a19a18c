//! Mapping driver errors and stored values to [`StoreError`], in one place.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use verse_core::{Epoch, StoreError};

/// Maps a driver error: trouble reaching or keeping the server (I/O, a closed connection, a
/// server shutting down, too many connections, a serialization failure or deadlock that a retry
/// resolves) is [`StoreError::Unavailable`]; anything else the server refused (a missing or
/// changed table, a broken constraint, an undecodable value) means the store's data or schema is
/// not what this code wrote, and is [`StoreError::Corrupt`].
pub(crate) fn store_error(error: tokio_postgres::Error) -> StoreError {
    let Some(code) = error.code() else {
        // No SQLSTATE: I/O, connect, closed connection, timeout, protocol trouble, or a value
        // that did not convert. Only the last says the data is not what this code wrote.
        return if is_conversion_failure(&error) {
            StoreError::Corrupt(error.to_string())
        } else {
            StoreError::Unavailable(error.to_string())
        };
    };
    let class = &code.code()[..2];
    let retryable = matches!(class, "08" | "53" | "57" | "58")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE;
    let message = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), code.code()),
        None => error.to_string(),
    };
    if retryable { StoreError::Unavailable(message) } else { StoreError::Corrupt(message) }
}

/// Whether an error without SQLSTATE is a failed conversion of a value to or from SQL.
fn is_conversion_failure(error: &tokio_postgres::Error) -> bool {
    // tokio-postgres does not expose its error kinds; these are its words for the conversion
    // kinds (`FromSql`, `ToSql`, `Column`). Anything else without SQLSTATE is about reaching
    // the server, and retrying it is the safe reading.
    let text = error.to_string();
    ["error deserializing", "error serializing", "invalid column"]
        .iter()
        .any(|words| text.starts_with(words))
}

/// A `u64` for a `bigint` column; values above `i64::MAX` cannot be kept (a caller bug: epochs,
/// versions and clock readings stay far below).
pub(crate) fn to_bigint(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Corrupt(format!(
            "{what} {value} is above {}, the largest value the PostgreSQL store keeps",
            i64::MAX
        ))
    })
}

/// A stored `bigint` back as `u64`; a negative value means damaged data.
fn from_bigint(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("stored {what} {value} < 0")))
}

/// Reads column `index` of `row`; a type mismatch means the table is not the store's.
pub(crate) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

/// Reads a stored version from column `index`.
pub(crate) fn version_column(row: &Row, index: usize) -> Result<u64, StoreError> {
    from_bigint(column(row, index)?, "version")
}

/// Reads an epoch from the `generation, counter` columns of a fences row.
pub(crate) fn epoch_columns(row: &Row) -> Result<Epoch, StoreError> {
    let generation = from_bigint(column(row, 0)?, "fence generation")?;
    let counter = from_bigint(column(row, 1)?, "fence counter")?;
    Ok(Epoch::new(generation, counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigint_conversions_refuse_what_does_not_fit() {
        assert_eq!(to_bigint(5, "version"), Ok(5));
        assert_eq!(to_bigint(i64::MAX as u64, "version"), Ok(i64::MAX));
        assert!(matches!(to_bigint(u64::MAX, "version"), Err(StoreError::Corrupt(_))));
        assert_eq!(from_bigint(7, "version"), Ok(7));
        assert!(matches!(from_bigint(-1, "version"), Err(StoreError::Corrupt(_))));
    }
}
