//! How sqlx's errors become [`MetaError`]s with a kind, for every SQL backend: the database's
//! own codes (SQLite's and PostgreSQL's) say which failures a retry may cure.

use crate::MetaError;
use berth_oci::ErrorKind;

impl From<sqlx::Error> for MetaError {
    fn from(e: sqlx::Error) -> MetaError {
        MetaError::new(kind(&e), format!("database: {e}"))
    }
}

impl From<sqlx::migrate::MigrateError> for MetaError {
    fn from(e: sqlx::migrate::MigrateError) -> MetaError {
        MetaError::new(ErrorKind::Other, format!("migration: {e}"))
    }
}

fn kind(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::RowNotFound => ErrorKind::NotFound,
        sqlx::Error::Io(io) => ErrorKind::of_io(io),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            ErrorKind::Unavailable
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => ErrorKind::Corrupt,
        sqlx::Error::Database(db) => database_kind(db.code().as_deref(), db.kind()),
        _ => ErrorKind::Other,
    }
}

/// SQLite's primary result codes are the low byte of its extended ones; PostgreSQL's are
/// SQLSTATE classes.
fn database_kind(code: Option<&str>, kind: sqlx::error::ErrorKind) -> ErrorKind {
    if kind == sqlx::error::ErrorKind::UniqueViolation {
        return ErrorKind::AlreadyExists;
    }
    match code {
        // SQLITE_BUSY, SQLITE_LOCKED; serialization failure, deadlock.
        Some(c) if sqlite_primary(c).is_some_and(|p| p == 5 || p == 6) => ErrorKind::Conflict,
        Some("40001" | "40P01") => ErrorKind::Conflict,
        // SQLITE_CORRUPT, SQLITE_NOTADB.
        Some(c) if sqlite_primary(c).is_some_and(|p| p == 11 || p == 26) => ErrorKind::Corrupt,
        // SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN; PostgreSQL's connection, resource and
        // shutdown classes.
        Some(c) if sqlite_primary(c).is_some_and(|p| p == 13 || p == 10 || p == 14) => {
            ErrorKind::Unavailable
        }
        Some(c) if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Other,
    }
}

/// SQLite reports its extended result code as a decimal number.
fn sqlite_primary(code: &str) -> Option<u32> {
    code.parse::<u32>().ok().map(|c| c & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_codes_have_their_kinds() {
        use sqlx::error::ErrorKind as Db;
        assert_eq!(database_kind(Some("5"), Db::Other), ErrorKind::Conflict);
        assert_eq!(database_kind(Some("517"), Db::Other), ErrorKind::Conflict);
        assert_eq!(database_kind(Some("40001"), Db::Other), ErrorKind::Conflict);
        assert_eq!(database_kind(Some("11"), Db::Other), ErrorKind::Corrupt);
        assert_eq!(database_kind(Some("13"), Db::Other), ErrorKind::Unavailable);
        assert_eq!(
            database_kind(Some("08006"), Db::Other),
            ErrorKind::Unavailable
        );
        assert_eq!(
            database_kind(Some("2067"), Db::UniqueViolation),
            ErrorKind::AlreadyExists
        );
        assert_eq!(database_kind(Some("42P01"), Db::Other), ErrorKind::Other);
    }
}
