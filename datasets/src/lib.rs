//! Maestro's lake and everything that fills it.
//!
//! Source files come in through [`ingest::ingest`]: each file is hashed (the same file twice
//! adds nothing), its format detected ([`readers::detect`]), and a reader in [`readers`] turns
//! it into rows of the tables declared once in [`schema`] plus rejections. [`lake::Lake`] writes
//! them as Hive-partitioned Parquet in one all-or-nothing [`lake::Txn`], with the ledgers of
//! [`ledger`] (`_ingested`, `_rejected`, `_runs`) in the same commit. [`generate`] writes
//! realistic history in the same real formats, with the hidden truth beside it.
//! [`audit_trail`] verifies the hash chain of the audit records and keeps signed daily digests.
//!
//! In: paths of source files. Out: Parquet under `<lake>/raw/<table>/date=YYYY-MM-DD/`.

pub mod audit_trail;
pub mod error;
#[macro_use]
pub mod schema;
pub mod generate;
pub mod ingest;
pub mod lake;
pub mod ledger;
pub mod readers;

pub use error::{Error, Result};
pub use lake::{Lake, WriteMode, WriteSummary};
