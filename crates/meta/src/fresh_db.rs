//! A new SQLite database file built by one call into SQLite: the schema, the record of the
//! migrations that sqlx's migrator keeps, and WAL mode, written with neither journal nor
//! syncs.
//!
//! Why not through sqlx: its connections run on a thread of their own and every statement is
//! a round trip to it. Building the schema through sqlx took 2.2 ms of a 6.7 ms start
//! (connecting, five trips per migration record, closing); SQLite alone does it in well
//! under 1 ms. The caller syncs the file and links it into place (`sqlite::create`), so
//! nothing here has to be durable, and the database is opened through sqlx afterwards.

use libsqlite3_sys as ffi;
use sqlx::migrate::{MigrationType, Migrator};
use std::ffi::{c_char, CStr, CString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The SQL that builds a new database with every migration of `migrator` applied and
/// recorded in `table`, as sqlx's migrator records them; `None` when a migration is of a
/// kind only the migrator runs (reversible, or not meant for a transaction).
pub(crate) fn script(migrator: &Migrator, table: &str) -> Option<String> {
    let plain =
        |m: &sqlx::migrate::Migration| m.migration_type == MigrationType::Simple && !m.no_tx;
    if !migrator.iter().all(plain) {
        return None;
    }
    // The table exactly as sqlx-sqlite's `ensure_migrations_table` makes it: later starts
    // read it through the migrator, which checks each recorded checksum.
    let mut s = format!(
        "PRAGMA journal_mode = OFF;\nPRAGMA synchronous = OFF;\nBEGIN;\n\
         CREATE TABLE IF NOT EXISTS {table} (\n    version BIGINT PRIMARY KEY,\n    \
         description TEXT NOT NULL,\n    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,\n    \
         success BOOLEAN NOT NULL,\n    checksum BLOB NOT NULL,\n    execution_time BIGINT NOT NULL\n);\n"
    );
    for m in migrator.iter() {
        // A migration's last line may be a comment: the newline ends it.
        s.push_str(m.sql.as_str());
        s.push('\n');
    }
    for m in migrator.iter() {
        let _ = write!(
            s,
            "INSERT INTO {table} (version, description, success, checksum, execution_time) \
             VALUES ({}, '{}', TRUE, X'",
            m.version,
            m.description.replace('\'', "''")
        );
        for b in m.checksum.iter() {
            let _ = write!(s, "{b:02x}");
        }
        s.push_str("', -1);\n");
    }
    // Recorded in the file's header, so that opening it later has nothing to change.
    s.push_str("COMMIT;\nPRAGMA journal_mode = WAL;\n");
    Some(s)
}

/// Creates the database file `path`, which must not exist, and runs `sql` on it.
pub(crate) fn build(path: &Path, sql: &str) -> Result<(), String> {
    // Made here, empty (SQLite takes an empty file for an empty database), so that a file
    // already there is refused rather than built upon.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let c_sql = CString::new(sql).map_err(|e| e.to_string())?;
    let mut db: *mut ffi::sqlite3 = std::ptr::null_mut();
    // SAFETY: both strings are NUL-terminated and outlive the call; `db` is written by SQLite.
    let rc = unsafe {
        ffi::sqlite3_open_v2(
            c_path.as_ptr(),
            &mut db,
            ffi::SQLITE_OPEN_READWRITE,
            std::ptr::null(),
        )
    };
    let result = if rc != ffi::SQLITE_OK {
        Err(format!("opening {}: {}", path.display(), message(db)))
    } else {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: `db` is an open connection; no callback is passed; `err` is set by SQLite to
        // a string it allocated (freed below) or left null.
        let rc =
            unsafe { ffi::sqlite3_exec(db, c_sql.as_ptr(), None, std::ptr::null_mut(), &mut err) };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else if err.is_null() {
            Err(message(db))
        } else {
            // SAFETY: a NUL-terminated string from SQLite, freed once, with its allocator.
            let m = unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned();
            unsafe { ffi::sqlite3_free(err.cast()) };
            Err(m)
        }
    };
    // SQLite hands back a connection even when opening fails, and it must be closed; closing
    // a null one does nothing. Nothing else holds statements on it, so it closes at once.
    // SAFETY: `db` is this function's own connection, not used after this.
    let rc = unsafe { ffi::sqlite3_close(db) };
    result?;
    if rc != ffi::SQLITE_OK {
        return Err(format!("closing {}: code {rc}", path.display()));
    }
    Ok(())
}

/// The English message of a connection's last error.
fn message(db: *mut ffi::sqlite3) -> String {
    if db.is_null() {
        return "out of memory".into();
    }
    // SAFETY: `db` is a connection handle from sqlite3_open_v2; the message it returns lives
    // until the next call on it, and is copied at once.
    unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    /// A migration's description with a quote in it stays one SQL string.
    #[test]
    fn quotes_in_descriptions_are_doubled() {
        use sqlx::SqlSafeStr;
        let m = sqlx::migrate::Migration::new(
            7,
            "it's new".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::AssertSqlSafe("CREATE TABLE t (a INT); -- done").into_sql_str(),
            false,
        );
        let migrator = sqlx::migrate::Migrator::with_migrations(vec![m]);
        let s = super::script(&migrator, "_sqlx_migrations").unwrap();
        assert!(s.contains("VALUES (7, 'it''s new', TRUE, X'"), "{s}");
        // The comment at the end of the migration does not swallow what follows it.
        assert!(s.contains("-- done\nINSERT INTO"), "{s}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        super::build(&path, &s).unwrap();
        // The file exists already: building over it is refused, not a merge.
        assert!(super::build(&path, &s).is_err());
    }
}
