//! `larder export` / `larder import`: a whole installation as one portable
//! file, to move from the single-node SQLite default to PostgreSQL (or
//! back) keeping list ids, sequences, logs, snapshots, accounts, sessions,
//! memberships and links.
//!
//! The file is JSON Lines: a header `{"format":"larder-export","version":1,
//! ...}`, then per table a line `{"table":..,"columns":[..]}` followed by one
//! line per row, `{"row":[..]}`, values in column order: UUIDs and times as
//! strings (RFC 3339), integers as numbers, bytes as base64, JSON as its text.
//! Both schemas have the same tables and columns ([`TABLES`]), so a row
//! read from one database is written to the other as it is. Rows are
//! streamed: neither side holds more than one row in memory.

use std::io::{BufRead, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::StoreError;
use crate::database::{Database, Pools};

mod tables;

pub use tables::{Kind, TABLES, Table};

const FORMAT: &str = "larder-export";

/// The longest line an import reads: a list's state is at most 16 MiB,
/// which base64 and JSON make about 22 MiB.
const MAX_LINE_BYTES: u64 = 64 << 20;

/// `grocery_lists.compaction_lease_until` and `refresh_tokens.replaced_by`
/// in [`TABLES`].
const LEASE_COLUMN: usize = 12;
const SUCCESSOR_COLUMN: usize = 4;
const VERSION: u64 = 1;

/// What an export or import moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Rows per table, in [`TABLES`] order.
    pub rows: Vec<(&'static str, u64)>,
}

impl Moved {
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

fn select_sql(table: &Table) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        columns.join(", "),
        table.name,
        table.order
    )
}

fn insert_sql(table: &Table, postgres: bool) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let values: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| match (kind, postgres) {
            (Kind::Json, true) => format!("${}::jsonb", i + 1),
            _ => format!("${}", i + 1),
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.name,
        columns.join(", "),
        values.join(", ")
    )
}

fn broken(what: String) -> StoreError {
    StoreError::Open(what)
}

/// Reads column `i` of `row` as a portable JSON value.
macro_rules! read_value {
    ($row:expr, $i:expr, $kind:expr) => {{
        let row = $row;
        let i = $i;
        Ok::<Value, sqlx::Error>(match $kind {
            Kind::Uuid => json!(row.try_get::<Option<Uuid>, _>(i)?.map(|u| u.to_string())),
            Kind::Text => json!(row.try_get::<Option<String>, _>(i)?),
            Kind::Int => json!(row.try_get::<Option<i32>, _>(i)?),
            Kind::BigInt => json!(row.try_get::<Option<i64>, _>(i)?),
            Kind::Time => json!(
                row.try_get::<Option<DateTime<Utc>>, _>(i)?
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            ),
            Kind::Bytes => json!(
                row.try_get::<Option<Vec<u8>>, _>(i)?
                    .map(|b| BASE64.encode(b))
            ),
            // As its text: a JSON `null` stays apart from SQL NULL.
            Kind::Json => json!(row.try_get::<Option<Value>, _>(i)?.map(|v| v.to_string())),
        })
    }};
}

/// Writes every table of `db` to `out`.
pub async fn export(db: &Database, out: &mut impl Write) -> Result<Moved, StoreError> {
    let io = |e: std::io::Error| broken(format!("cannot write the export: {e}"));
    let header = json!({
        "format": FORMAT,
        "version": VERSION,
        "source": format!("{:?}", db.backend).to_lowercase(),
        "exported_at": Utc::now().to_rfc3339(),
    });
    writeln!(out, "{header}").map_err(io)?;
    // Every table is read in one read-only transaction, so the file is one
    // consistent state even if a server still writes (a compaction folding
    // a log between two tables would otherwise lose updates).
    let (mut pg_tx, mut sqlite_tx) = (None, None);
    match &db.pools {
        Pools::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
            pg_tx = Some(tx);
        }
        Pools::Sqlite(sqlite) => sqlite_tx = Some(sqlite.readers().begin().await?),
    }
    let mut moved = Moved::default();
    for table in TABLES {
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        writeln!(out, "{}", json!({"table": table.name, "columns": columns})).map_err(io)?;
        let sql = select_sql(table);
        let mut count = 0u64;
        match (&mut pg_tx, &mut sqlite_tx) {
            (Some(tx), _) => {
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut **tx);
                while let Some(row) = rows.try_next().await? {
                    let values = table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| read_value!(&row, i, *kind))
                        .collect::<Result<Vec<Value>, _>>()?;
                    writeln!(out, "{}", json!({ "row": values })).map_err(io)?;
                    count += 1;
                }
            }
            (_, Some(tx)) => {
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut **tx);
                while let Some(row) = rows.try_next().await? {
                    let values = table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| read_value!(&row, i, *kind))
                        .collect::<Result<Vec<Value>, _>>()?;
                    writeln!(out, "{}", json!({ "row": values })).map_err(io)?;
                    count += 1;
                }
            }
            _ => unreachable!("one transaction is open"),
        }
        moved.rows.push((table.name, count));
    }
    if let Some(tx) = pg_tx {
        tx.commit().await?;
    }
    if let Some(tx) = sqlite_tx {
        tx.commit().await?;
    }
    out.flush().map_err(io)?;
    Ok(moved)
}

/// The next line without its newline, `None` at the end; a line longer
/// than [`MAX_LINE_BYTES`] is refused before it is all read.
fn read_line(input: &mut impl BufRead, number: usize) -> Result<Option<Vec<u8>>, StoreError> {
    let mut line = Vec::new();
    std::io::Read::take(&mut *input, MAX_LINE_BYTES + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| broken(format!("cannot read the export: {e}")))?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() as u64 > MAX_LINE_BYTES {
        return Err(broken(format!(
            "line {number} is longer than {MAX_LINE_BYTES} bytes: not an export"
        )));
    }
    Ok(Some(line))
}

/// One value of the file, checked against its column's kind.
#[derive(Debug)]
enum Typed {
    Uuid(Option<Uuid>),
    Text(Option<String>),
    Int(Option<i32>),
    BigInt(Option<i64>),
    Time(Option<DateTime<Utc>>),
    Bytes(Option<Vec<u8>>),
    Json(Option<Value>),
}

fn typed(value: Value, kind: Kind) -> Result<Typed, String> {
    if value.is_null() {
        return Ok(match kind {
            Kind::Uuid => Typed::Uuid(None),
            Kind::Text => Typed::Text(None),
            Kind::Int => Typed::Int(None),
            Kind::BigInt => Typed::BigInt(None),
            Kind::Time => Typed::Time(None),
            Kind::Bytes => Typed::Bytes(None),
            Kind::Json => Typed::Json(None),
        });
    }
    let text = || {
        value
            .as_str()
            .ok_or_else(|| format!("expected a string, got {value}"))
    };
    Ok(match kind {
        Kind::Uuid => Typed::Uuid(Some(text()?.parse().map_err(|e| format!("bad UUID: {e}"))?)),
        Kind::Text => Typed::Text(Some(text()?.to_owned())),
        Kind::Int => Typed::Int(Some(
            value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| format!("expected a 32-bit integer, got {value}"))?,
        )),
        Kind::BigInt => Typed::BigInt(Some(
            value
                .as_i64()
                .ok_or_else(|| format!("expected an integer, got {value}"))?,
        )),
        Kind::Time => Typed::Time(Some(
            DateTime::parse_from_rfc3339(text()?)
                .map_err(|e| format!("bad time: {e}"))?
                .with_timezone(&Utc),
        )),
        Kind::Bytes => Typed::Bytes(Some(
            BASE64
                .decode(text()?)
                .map_err(|e| format!("bad base64: {e}"))?,
        )),
        Kind::Json => Typed::Json(Some(
            serde_json::from_str(text()?).map_err(|e| format!("bad JSON text: {e}"))?,
        )),
    })
}

macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Typed::Uuid(v) => query.bind(v),
                Typed::Text(v) => query.bind(v),
                Typed::Int(v) => query.bind(v),
                Typed::BigInt(v) => query.bind(v),
                Typed::Time(v) => query.bind(v),
                Typed::Bytes(v) => query.bind(v),
                Typed::Json(v) => query.bind(v),
            };
        }
        query
    }};
}

/// Loads an export into `db`, which must hold no accounts and no lists, in
/// one transaction: on any error nothing is written.
pub async fn import(db: &Database, mut input: impl BufRead) -> Result<Moved, StoreError> {
    let mut number = 0usize;
    let mut next = |what: &str| -> Result<Option<(usize, Value)>, StoreError> {
        number += 1;
        let Some(line) = read_line(&mut input, number)? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&line).map_err(|e| {
            broken(format!(
                "line {number}: not a line of an export ({what}): {e}"
            ))
        })?;
        Ok(Some((number, value)))
    };
    let header = next("the header")?.ok_or_else(|| broken("the export is empty".into()))?;
    if header.1["format"] != FORMAT || header.1["version"] != VERSION {
        return Err(broken(format!(
            "not a Larder export of version {VERSION}: {}",
            header.1
        )));
    }

    let mut pg_tx = None;
    let mut sqlite_tx = None;
    match &db.pools {
        Pools::Postgres(pool) => pg_tx = Some(pool.begin().await?),
        Pools::Sqlite(sqlite) => sqlite_tx = Some(sqlite.write().await?),
    }
    let (users, lists): (i64, i64) = {
        let sql = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM grocery_lists)";
        match (&mut pg_tx, &mut sqlite_tx) {
            (Some(tx), _) => sqlx::query_as(sql).fetch_one(&mut **tx).await?,
            (_, Some(tx)) => sqlx::query_as(sql).fetch_one(&mut **tx).await?,
            _ => unreachable!("one transaction is open"),
        }
    };
    if users > 0 || lists > 0 {
        return Err(broken(format!(
            "the target database is not empty ({users} accounts, {lists} lists): import into a new database"
        )));
    }

    let mut moved = Moved::default();
    let mut successors: Vec<(Uuid, Uuid)> = Vec::new();
    let mut table: Option<(&Table, String, u64)> = None;
    while let Some((n, line)) = next("a row")? {
        if let Some(name) = line.get("table").and_then(Value::as_str) {
            let Some(known) = TABLES.iter().find(|t| t.name == name) else {
                return Err(broken(format!("line {n}: unknown table {name:?}")));
            };
            let columns: Vec<&str> = known.columns.iter().map(|(c, _)| *c).collect();
            if line["columns"] != json!(columns) {
                return Err(broken(format!(
                    "line {n}: the columns of {name} differ from this version's: {}",
                    line["columns"]
                )));
            }
            if let Some((done, _, count)) = table.take() {
                moved.rows.push((done.name, count));
            }
            let sql = insert_sql(known, pg_tx.is_some());
            table = Some((known, sql, 0));
            continue;
        }
        let Some((current, sql, count)) = table.as_mut() else {
            return Err(broken(format!("line {n}: a row before any table")));
        };
        let Some(Value::Array(values)) = line.get("row").cloned() else {
            return Err(broken(format!("line {n}: expected {{\"row\": [...]}}")));
        };
        if values.len() != current.columns.len() {
            return Err(broken(format!(
                "line {n}: {} values for the {} columns of {}",
                values.len(),
                current.columns.len(),
                current.name
            )));
        }
        let mut values = values
            .into_iter()
            .zip(current.columns)
            .map(|(v, (column, kind))| {
                typed(v, *kind)
                    .map_err(|e| broken(format!("line {n}, {}.{column}: {e}", current.name)))
            })
            .collect::<Result<Vec<Typed>, _>>()?;
        match current.name {
            // Compaction leases do not move with the data.
            "grocery_lists" => values[LEASE_COLUMN] = Typed::Time(None),
            // The successor may come later in the file: linked at the end.
            "refresh_tokens" => {
                if let (Typed::Uuid(Some(id)), Typed::Uuid(Some(successor))) =
                    (&values[0], &values[SUCCESSOR_COLUMN])
                {
                    successors.push((*id, *successor));
                }
                values[SUCCESSOR_COLUMN] = Typed::Uuid(None);
            }
            _ => {}
        }
        let sql = sqlx::AssertSqlSafe(sql.clone());
        let written = match (&mut pg_tx, &mut sqlite_tx) {
            (Some(tx), _) => bind_all!(sqlx::query(sql), values)
                .execute(&mut **tx)
                .await
                .map(|_| ()),
            (_, Some(tx)) => bind_all!(sqlx::query(sql), values)
                .execute(&mut **tx)
                .await
                .map(|_| ()),
            _ => unreachable!("one transaction is open"),
        };
        written.map_err(|e| {
            broken(format!(
                "line {n}: cannot write a row of {}: {e}",
                current.name
            ))
        })?;
        *count += 1;
    }
    if let Some((done, _, count)) = table.take() {
        moved.rows.push((done.name, count));
    }
    // What the server relies on: a list's log never passes its head.
    let link = "UPDATE refresh_tokens SET replaced_by = $2 WHERE id = $1";
    let broken_heads = "SELECT count(*) FROM grocery_lists g WHERE g.head_seq < \
         COALESCE((SELECT max(u.seq) FROM doc_updates u WHERE u.list_id = g.id), 0)";
    let behind: i64 = match (pg_tx, sqlite_tx) {
        (Some(mut tx), _) => {
            for (id, successor) in &successors {
                sqlx::query(link)
                    .bind(id)
                    .bind(successor)
                    .execute(&mut *tx)
                    .await?;
            }
            let behind = sqlx::query_scalar(broken_heads).fetch_one(&mut *tx).await?;
            if behind == 0 {
                tx.commit().await?;
            }
            behind
        }
        (_, Some(mut tx)) => {
            for (id, successor) in &successors {
                sqlx::query(link)
                    .bind(id)
                    .bind(successor)
                    .execute(&mut *tx)
                    .await?;
            }
            let behind = sqlx::query_scalar(broken_heads).fetch_one(&mut *tx).await?;
            if behind == 0 {
                tx.commit().await?;
            }
            behind
        }
        _ => unreachable!("one transaction is open"),
    };
    if behind > 0 {
        return Err(broken(format!(
            "{behind} lists have updates past their head_seq: the file is damaged, nothing was imported"
        )));
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_import_rewrites_are_the_ones_named() {
        let table = |name: &str| TABLES.iter().find(|t| t.name == name).expect("table");
        assert_eq!(
            table("grocery_lists").columns[LEASE_COLUMN].0,
            "compaction_lease_until"
        );
        assert_eq!(
            table("refresh_tokens").columns[SUCCESSOR_COLUMN].0,
            "replaced_by"
        );
        assert_eq!(table("refresh_tokens").columns[0].0, "id");
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_before_it_is_read_whole() {
        let long = vec![b'x'; (MAX_LINE_BYTES + 10) as usize];
        let err = read_line(&mut long.as_slice(), 3).unwrap_err().to_string();
        assert!(err.contains("line 3 is longer"), "{err}");
        let mut two = b"{\"a\":1}\n{\"b\":2}".as_slice();
        assert_eq!(read_line(&mut two, 1).unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(read_line(&mut two, 2).unwrap().unwrap(), b"{\"b\":2}");
        assert!(read_line(&mut two, 3).unwrap().is_none());
    }
}
